import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import type { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";

/**
 * Streams `source` into `dest`: into a Writable as it comes, or to a file
 * path through a sibling `.partial-…` file renamed into place once whole, so
 * that a failed or aborted write leaves nothing half-written behind.
 */
export async function streamToOutput(source: Readable, dest: string | Writable, signal?: AbortSignal): Promise<void> {
  const abortable = signal ? { signal } : {};
  if (typeof dest !== "string") return pipeline(source, dest, abortable);
  await mkdir(dirname(dest), { recursive: true });
  const partial = `${dest}.partial-${process.pid}-${Date.now()}`;
  try {
    await pipeline(source, createWriteStream(partial), abortable);
    await rename(partial, dest);
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
}
