// The `local` exporter's output: our fsutil receiver (receiveTree) against a
// daemon-side fsutil *sender* written here, over the real session server and
// a real filesystem. The real daemon cannot be made to send hostile paths or
// to hold back requests, hence this stand-in; end-to-end runs use BuildKit.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Packet_PacketType, PacketSchema, type Stat, StatSchema } from "../src/gen/fsutil/types/packet_pb.js";
import { GrpcCode, type ServerCall } from "../src/session/grpc-server.js";
import { MAX_OPEN_FILES, receiveTree } from "../src/session/filesend/diffcopy-receiver.js";
import { GoMode } from "../src/session/fsutil/file-mode.js";
import { type DaemonCall, type DaemonSide, startDaemonSide } from "./support/daemon-side.js";

const METHOD = "/moby.filesync.v1.FileSend/DiffCopy";
const CHUNK = 32 * 1024;

let daemon: DaemonSide | undefined;
let sandbox: string;
let dest: string;
/** The receiver's own outcome, as the session server saw it. */
let received: Promise<{ files: number; bytes: number }> | undefined;

beforeEach(async () => {
  sandbox = await fs.mkdtemp(path.join(os.tmpdir(), "filesend-tree-"));
  dest = path.join(sandbox, "out");
  daemon = await startDaemonSide(
    new Map([
      [
        METHOD,
        (call: ServerCall) => {
          received = receiveTree(call, dest);
          return received.then(() => undefined);
        },
      ],
    ]),
  );
});

afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
  received?.catch(() => {});
  received = undefined;
  // Read-only directories in the output would stop rm.
  await fs.chmod(sandbox, 0o700);
  for await (const entry of walk(sandbox)) if (entry.isDirectory) await fs.chmod(entry.path, 0o700);
  await fs.rm(sandbox, { recursive: true, force: true });
});

async function* walk(dir: string): AsyncGenerator<{ path: string; isDirectory: boolean }> {
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    yield { path: p, isDirectory: entry.isDirectory() };
    if (entry.isDirectory()) {
      await fs.chmod(p, 0o700);
      yield* walk(p);
    }
  }
}

interface Entry {
  path: string;
  mode: number;
  modTime?: bigint;
  linkname?: string;
  content?: Uint8Array;
}

interface SenderOptions {
  /** What the sender does on our FIN: answer FIN (what fsutil does) or cancel the call. */
  onFin?: "reply" | "cancel";
  /** Hold every request until the whole listing is out, then serve them slowly. */
  holdRequests?: boolean;
  /** Sent after the listing instead of waiting for requests. */
  errAfterListing?: string;
}

interface SenderOutcome {
  requested: number[];
  maxOutstanding: number;
  gotFin: boolean;
  errors: string[];
  status: { code: number; message: string };
}

function packet(fields: Parameters<typeof create<typeof PacketSchema>>[1]): Uint8Array {
  return toBinary(PacketSchema, create(PacketSchema, fields));
}

function statOf(entry: Entry): Stat {
  return create(StatSchema, {
    path: entry.path,
    mode: entry.mode >>> 0,
    modTime: entry.modTime ?? 0n,
    linkname: entry.linkname ?? "",
    size: BigInt(entry.content?.length ?? entry.linkname?.length ?? 0),
  });
}

/**
 * Plays fsutil's Send: STATs (IDs count every STAT), an empty STAT, DATA
 * for each REQ — chunks of up to 32 KiB, interleaved across files like
 * fsutil's four senders — and FIN in answer to FIN.
 */
async function playSender(call: DaemonCall, entries: Entry[], options: SenderOptions = {}): Promise<SenderOutcome> {
  const outcome: SenderOutcome = { requested: [], maxOutstanding: 0, gotFin: false, errors: [], status: { code: -1, message: "" } };
  const active: { id: number; content: Uint8Array; offset: number }[] = [];
  const held: number[] = [];
  let listed = false;
  let pumping = false;

  const serve = (id: number) => {
    const content = entries[id]?.content;
    if (!content) throw new Error(`REQ for ${id}, which is not a file`);
    active.push({ id, content, offset: 0 });
    if (!pumping) {
      pumping = true;
      setTimeout(pump, options.holdRequests ? 5 : 0);
    }
  };
  // One chunk per active file per turn, so files interleave on the wire.
  const pump = () => {
    for (const file of active.splice(0, 4)) {
      const chunk = file.content.subarray(file.offset, file.offset + CHUNK);
      if (chunk.length > 0) {
        call.send(packet({ type: Packet_PacketType.PACKET_DATA, id: file.id, data: chunk }));
        file.offset += chunk.length;
        active.push(file);
      } else {
        call.send(packet({ type: Packet_PacketType.PACKET_DATA, id: file.id }));
        outstanding--;
      }
    }
    if (active.length > 0) setTimeout(pump, options.holdRequests ? 5 : 0);
    else pumping = false;
  };
  let outstanding = 0;

  const reader = (async () => {
    for await (const bytes of call.messages) {
      const p = fromBinary(PacketSchema, bytes);
      if (p.type === Packet_PacketType.PACKET_REQ) {
        outcome.requested.push(p.id);
        outstanding++;
        outcome.maxOutstanding = Math.max(outcome.maxOutstanding, outstanding);
        if (options.holdRequests && !listed) held.push(p.id);
        else serve(p.id);
      } else if (p.type === Packet_PacketType.PACKET_FIN) {
        outcome.gotFin = true;
        if (options.onFin === "cancel") call.cancel();
        else {
          call.send(packet({ type: Packet_PacketType.PACKET_FIN }));
          call.end();
        }
      } else if (p.type === Packet_PacketType.PACKET_ERR) {
        outcome.errors.push(new TextDecoder().decode(p.data));
      }
    }
  })();

  for (const entry of entries) {
    call.send(packet({ type: Packet_PacketType.PACKET_STAT, stat: statOf(entry) }));
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (options.errAfterListing) {
    call.send(packet({ type: Packet_PacketType.PACKET_ERR, data: new TextEncoder().encode(options.errAfterListing) }));
    call.end();
  } else {
    // The end of the listing: a STAT without a stat field (zero bytes).
    call.send(packet({ type: Packet_PacketType.PACKET_STAT }));
  }
  listed = true;
  if (options.holdRequests) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    for (const id of held.splice(0)) serve(id);
  }

  try {
    await reader;
  } catch {
    // A cancelled call ends the reader; the status says how it went.
  }
  outcome.status = await call.status.catch(() => ({ code: GrpcCode.CANCELLED, message: "cancelled" }));
  return outcome;
}

const dirMode = (perm: number) => GoMode.Dir | perm;
const symlinkMode = GoMode.Symlink | 0o777;
const T0 = 1_600_000_000_123_456_789n;
const mtime = (i: number) => T0 + BigInt(i) * 1_000_000_007n;

async function expectMtime(p: string, expected: bigint) {
  const st = await fs.lstat(p, { bigint: true });
  // utimes takes a double of seconds: sub-microsecond digits may move.
  expect(Number(st.mtimeNs - expected)).toBeGreaterThan(-2000);
  expect(Number(st.mtimeNs - expected)).toBeLessThan(2000);
}

describe("receiveTree (local exporter output)", () => {
  it("writes directories, files, modes, mtimes, symlinks and hard links", async () => {
    const big = randomBytes(200 * 1024 + 123);
    const entries: Entry[] = [
      { path: "bin", mode: dirMode(0o755), modTime: mtime(0) },
      { path: "bin/run.sh", mode: 0o755, modTime: mtime(1), content: Buffer.from("#!/bin/sh\necho hi\n") },
      { path: "data", mode: dirMode(0o750), modTime: mtime(2) },
      { path: "data/big.bin", mode: 0o644, modTime: mtime(3), content: big },
      { path: "data/empty", mode: 0o640, modTime: mtime(4), content: new Uint8Array(0) },
      { path: "data/nested", mode: dirMode(0o755), modTime: mtime(5) },
      { path: "data/nested/deep", mode: dirMode(0o700), modTime: mtime(6) },
      { path: "data/nested/deep/leaf.txt", mode: 0o600, modTime: mtime(7), content: Buffer.from("leaf") },
      { path: "data/résumé final.txt", mode: 0o644, modTime: mtime(8), content: Buffer.from("ünïcödé ✓") },
      { path: "fifo", mode: GoMode.NamedPipe | 0o644, modTime: mtime(9) },
      { path: "hard.txt", mode: 0o600, modTime: mtime(7), linkname: "data/nested/deep/leaf.txt" },
      { path: "link", mode: symlinkMode, modTime: mtime(11), linkname: "data/big.bin" },
      { path: "ro", mode: dirMode(0o555), modTime: mtime(12) },
      { path: "ro/file", mode: 0o444, modTime: mtime(13), content: Buffer.from("read only") },
      { path: "zz-abs-link", mode: symlinkMode, modTime: mtime(14), linkname: "/etc/passwd" },
    ];
    const outcome = await playSender(daemon!.call(METHOD), entries);

    expect(outcome.status).toEqual({ code: GrpcCode.OK, message: "" });
    expect(outcome.gotFin).toBe(true);
    expect(outcome.errors).toEqual([]);
    // Every regular file without a linkname is requested, by its STAT index.
    expect([...outcome.requested].sort((a, b) => a - b)).toEqual([1, 3, 4, 7, 8, 13]);
    expect(await received).toEqual({ files: 7, bytes: big.length + 18 + 4 + Buffer.byteLength("ünïcödé ✓") + 9 });

    for (const [i, entry] of entries.entries()) {
      const p = path.join(dest, entry.path);
      if (entry.mode & GoMode.NamedPipe) {
        await expect(fs.lstat(p)).rejects.toThrow(/ENOENT/);
        continue;
      }
      const st = await fs.lstat(p);
      if (entry.mode & GoMode.Symlink) {
        expect(st.isSymbolicLink(), entry.path).toBe(true);
        expect(await fs.readlink(p)).toBe(entry.linkname);
      } else if (entry.mode & GoMode.Dir) {
        expect(st.isDirectory(), entry.path).toBe(true);
        expect(st.mode & 0o7777, entry.path).toBe(entry.mode & 0o777);
      } else {
        expect(st.isFile(), entry.path).toBe(true);
        expect(st.mode & 0o7777, entry.path).toBe(entry.mode & 0o777);
        const source = entry.linkname ? entries.find((e) => e.path === entry.linkname)! : entry;
        expect(Buffer.compare(await fs.readFile(p), Buffer.from(source.content!)), entry.path).toBe(0);
      }
      await expectMtime(p, entries[i]!.modTime!);
    }
    const leaf = await fs.stat(path.join(dest, "data/nested/deep/leaf.txt"));
    const hard = await fs.stat(path.join(dest, "hard.txt"));
    expect(hard.ino).toBe(leaf.ino);
    expect(hard.nlink).toBe(2);
  });

  it("receives an empty output and merges into an existing directory without following its symlinks", async () => {
    const outside = path.join(sandbox, "outside");
    await fs.mkdir(outside);
    await fs.mkdir(dest);
    await fs.writeFile(path.join(dest, "keep.txt"), "kept");
    await fs.symlink(outside, path.join(dest, "data"));
    await fs.writeFile(path.join(dest, "was-a-file"), "old");
    await fs.mkdir(path.join(dest, "was-a-dir/inner"), { recursive: true });

    const outcome = await playSender(daemon!.call(METHOD), [
      { path: "data", mode: dirMode(0o755), modTime: mtime(0) },
      { path: "data/new.txt", mode: 0o644, modTime: mtime(1), content: Buffer.from("new") },
      { path: "was-a-dir", mode: 0o644, modTime: mtime(2), content: Buffer.from("now a file") },
      { path: "was-a-file", mode: dirMode(0o755), modTime: mtime(3) },
    ]);
    expect(outcome.status.code).toBe(GrpcCode.OK);
    expect(await fs.readFile(path.join(dest, "keep.txt"), "utf8")).toBe("kept");
    expect((await fs.lstat(path.join(dest, "data"))).isDirectory()).toBe(true);
    expect(await fs.readFile(path.join(dest, "data/new.txt"), "utf8")).toBe("new");
    expect(await fs.readdir(outside)).toEqual([]);
    expect(await fs.readFile(path.join(dest, "was-a-dir"), "utf8")).toBe("now a file");
    expect((await fs.lstat(path.join(dest, "was-a-file"))).isDirectory()).toBe(true);

    const empty = await playSender(daemon!.call(METHOD), []);
    expect(empty.status.code).toBe(GrpcCode.OK);
    expect(empty.gotFin).toBe(true);
    expect(await received).toEqual({ files: 0, bytes: 0 });
  });

  it(`keeps at most ${MAX_OPEN_FILES} requests outstanding and sends the rest as files complete`, async () => {
    const entries: Entry[] = [{ path: "many", mode: dirMode(0o755) }];
    for (let i = 0; i < 60; i++) {
      entries.push({ path: `many/f${String(i).padStart(3, "0")}`, mode: 0o644, content: randomBytes(40 * 1024 + i) });
    }
    const outcome = await playSender(daemon!.call(METHOD), entries, { holdRequests: true });
    expect(outcome.status.code).toBe(GrpcCode.OK);
    expect(outcome.maxOutstanding).toBe(MAX_OPEN_FILES);
    expect(outcome.requested).toHaveLength(60);
    for (const entry of entries.slice(1)) {
      expect(Buffer.compare(await fs.readFile(path.join(dest, entry.path)), Buffer.from(entry.content!))).toBe(0);
    }
  });

  it("counts a cancelled call after our FIN as success", async () => {
    const outcome = await playSender(daemon!.call(METHOD), [{ path: "a.txt", mode: 0o644, content: Buffer.from("a") }], { onFin: "cancel" });
    expect(outcome.gotFin).toBe(true);
    expect(await received).toEqual({ files: 1, bytes: 1 });
    expect(await fs.readFile(path.join(dest, "a.txt"), "utf8")).toBe("a");
  });

  it("leaves the destination as it was when the transfer fails midway (staged beside it, then removed)", async () => {
    await fs.mkdir(dest);
    await fs.writeFile(path.join(dest, "keep.txt"), "kept");
    await fs.writeFile(path.join(dest, "app.bin"), "the previous build");
    const outcome = await playSender(
      daemon!.call(METHOD),
      [
        { path: "app.bin", mode: 0o644, content: randomBytes(300 * 1024) },
        { path: "new.txt", mode: 0o644, content: Buffer.from("new") },
      ],
      { errAfterListing: "the daemon gave up" },
    );
    expect(outcome.status.code).not.toBe(GrpcCode.OK);
    await expect(received).rejects.toThrow("error from sender: the daemon gave up");
    expect((await fs.readdir(dest)).sort()).toEqual(["app.bin", "keep.txt"]);
    expect(await fs.readFile(path.join(dest, "app.bin"), "utf8")).toBe("the previous build");
    expect(await fs.readdir(sandbox)).toEqual(["out"]); // no staging directory left
  });

  it("fails with the sender's message on an ERR packet", async () => {
    const outcome = await playSender(daemon!.call(METHOD), [{ path: "d", mode: dirMode(0o755) }], { errAfterListing: "disk on fire" });
    expect(outcome.status.code).not.toBe(GrpcCode.OK);
    expect(outcome.status.message).toContain("error from sender: disk on fire");
    await expect(received).rejects.toThrow("error from sender: disk on fire");
  });

  describe("refuses a hostile sender and writes nothing outside the destination", () => {
    const cases: [string, (outside: string) => Entry[]][] = [
      ["a parent-relative path", () => [{ path: "../escape", mode: 0o644, content: Buffer.from("x") }]],
      ["a path that climbs out", () => [{ path: "a", mode: dirMode(0o755) }, { path: "a/../../escape", mode: 0o644, content: Buffer.from("x") }]],
      ["an absolute path", (outside) => [{ path: path.join(outside, "escape"), mode: 0o644, content: Buffer.from("x") }]],
      ["an unclean path", () => [{ path: "./escape", mode: 0o644, content: Buffer.from("x") }]],
      [
        "a file under a symlink it sent",
        (outside) => [
          { path: "evil", mode: symlinkMode, linkname: outside },
          { path: "evil/pwned", mode: 0o644, content: Buffer.from("x") },
        ],
      ],
      [
        "a directory under a symlink it sent",
        (outside) => [
          { path: "evil", mode: symlinkMode, linkname: outside },
          { path: "evil/sub", mode: dirMode(0o755) },
        ],
      ],
      [
        "the same path twice (directory, then symlink over it)",
        (outside) => [
          { path: "d", mode: dirMode(0o755) },
          { path: "d", mode: symlinkMode, linkname: outside },
          { path: "d/pwned", mode: 0o644, content: Buffer.from("x") },
        ],
      ],
      ["a hard link to a path outside", () => [{ path: "hl", mode: 0o644, linkname: "../outside/secret" }]],
      [
        "a hard link through a symlink",
        () => [
          { path: "evil", mode: symlinkMode, linkname: "../outside" },
          { path: "hl", mode: 0o644, linkname: "evil/secret" },
        ],
      ],
    ];
    it.each(cases)("%s", async (_name, entriesFor) => {
      const outside = path.join(sandbox, "outside");
      await fs.mkdir(outside);
      await fs.writeFile(path.join(outside, "secret"), "secret");
      const outcome = await playSender(daemon!.call(METHOD), entriesFor(outside));

      expect(outcome.status.code).toBe(GrpcCode.INVALID_ARGUMENT);
      expect(outcome.status.message).toMatch(/^refusing output entry/);
      expect(outcome.errors[0]).toBe(outcome.status.message);
      await expect(received).rejects.toThrow(/refusing output entry/);
      expect(await fs.readdir(outside)).toEqual(["secret"]);
      expect((await fs.stat(path.join(outside, "secret"))).nlink).toBe(1);
      // Nothing half-written: the destination was never created, and no staging directory is left.
      expect((await fs.readdir(sandbox)).sort()).toEqual(["outside"]);
    });
  });
});
