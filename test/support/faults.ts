// Helpers for the fault tests: hostile tarballs made cheaply, and a check
// that a test leaves no socket, timer or child behind.
import { gzipSync } from "node:zlib";
import { expect } from "vitest";

/** A ustar header block for a regular file of `size` bytes (the body is not included). */
export function tarHeader(name: string, size: number): Buffer {
  const block = Buffer.alloc(512);
  const octal = (value: number, width: number) => value.toString(8).padStart(width - 1, "0") + "\0";
  block.write(name, 0, 100, "utf8");
  block.write(octal(0o644, 8), 100, "latin1");
  block.write(octal(0, 8), 108, "latin1");
  block.write(octal(0, 8), 116, "latin1");
  block.write(octal(size, 12), 124, "latin1");
  block.write(octal(0, 12), 136, "latin1");
  block.write("        ", 148, "latin1"); // checksum field counts as spaces
  block.write("0", 156, "latin1");
  block.write("ustar\u000000", 257, "latin1");
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(octal(sum, 7) + " ", 148, "latin1");
  return block;
}

/** One small file as tar bytes: header, body, padding. */
export function tarFile(name: string, content: string): Buffer {
  const body = Buffer.from(content);
  return Buffer.concat([tarHeader(name, body.length), body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/**
 * A gzip bomb in the shape of a build context: a Dockerfile, then one file of
 * `expandedBytes` zeros, as concatenated gzip members (which gunzip reads as
 * one stream), so it costs a moment to make. Returned as chunks of a few MB.
 */
export function gzipBomb(dockerfile: string, expandedBytes: number): Buffer[] {
  const piece = 64 * 1024 * 1024;
  if (expandedBytes % piece !== 0) throw new Error("expandedBytes must be a multiple of 64 MiB");
  const zeros = gzipSync(Buffer.alloc(piece), { level: 9 });
  const chunks = [gzipSync(Buffer.concat([tarFile("Dockerfile", dockerfile), tarHeader("zeros", expandedBytes)]))];
  for (let i = 0; i < expandedBytes / piece; i++) chunks.push(zeros);
  chunks.push(gzipSync(Buffer.alloc(1024))); // the end-of-archive blocks
  return chunks;
}

/**
 * What keeps the event loop busy, minus what the test runner itself holds,
 * to compare before and after a test: sockets, servers, timers, children.
 */
export function activeResources(): string[] {
  return process
    .getActiveResourcesInfo()
    .filter((r) => r !== "TTYWrap" && r !== "Immediate")
    .sort();
}

/** Waits (a little, for closes in flight) until nothing more is active than `before`. */
export async function expectNoLeaks(before: string[], what: string): Promise<void> {
  const count = (list: string[]) => list.reduce<Record<string, number>>((acc, r) => ((acc[r] = (acc[r] ?? 0) + 1), acc), {});
  let extra: string[] = [];
  for (let i = 0; i < 50; i++) {
    const now = count(activeResources());
    const base = count(before);
    extra = Object.entries(now).flatMap(([r, n]) => (n > (base[r] ?? 0) ? [`${r}×${n - (base[r] ?? 0)}`] : []));
    if (extra.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  expect(extra, `left behind after ${what}`).toEqual([]);
}
