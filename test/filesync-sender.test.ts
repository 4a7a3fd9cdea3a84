// The FileSync DiffCopy sender, driven over loopback HTTP/2 by a receiver
// written here that plays the daemon: it checks the STAT stream the way
// fsutil's receiver does (clean paths, parents first, UTF-8 order), asks for
// files while the listing is still arriving, and ends with the FIN exchange.
// The real daemon cannot be steered into these orderings and failures.
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { Readable } from "node:stream";
import * as tar from "tar-stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Packet_PacketType, PacketSchema, type Stat } from "../src/gen/fsutil/types/packet_pb.js";
import { FileSync } from "../src/gen/moby/filesync/v1/filesync_pb.js";
import { GoMode, isRegularGoMode } from "../src/session/fsutil/file-mode.js";
import { FILE_SYNC_DIFF_COPY, fileSyncAttachable } from "../src/session/filesync/file-sync.js";
import { directorySource, memorySource, tarSource, type TreeSource } from "../src/session/filesync/tree-source.js";
import { GrpcCode, type Handler } from "../src/session/grpc-server.js";
import { type DaemonSide, startDaemonSide } from "./support/daemon-side.js";

let tmp: string;
let daemon: DaemonSide | undefined;
const sources: TreeSource[] = [];
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "filesync-sender-"));
});
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
  for (const source of sources.splice(0)) await source.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Writes files (string content) and symlinks ({ symlink: target }); a key ending in "/" is an empty dir. */
async function writeTree(root: string, spec: Record<string, string | Buffer | { symlink: string } | { mode: number; content: string }>): Promise<string> {
  await fs.mkdir(root, { recursive: true });
  for (const [name, value] of Object.entries(spec)) {
    const file = path.join(root, name);
    await fs.mkdir(name.endsWith("/") ? file : path.dirname(file), { recursive: true });
    if (name.endsWith("/")) continue;
    if (typeof value === "object" && "symlink" in value) await fs.symlink(value.symlink, file);
    else if (typeof value === "object" && "mode" in value) {
      await fs.writeFile(file, value.content);
      await fs.chmod(file, value.mode);
    } else await fs.writeFile(file, value);
  }
  return root;
}

/** Serves `dirs`; `outcomes` records how each handler call ended. */
async function serve(dirs: Record<string, TreeSource>): Promise<{ daemon: DaemonSide; outcomes: Array<"ok" | Error> }> {
  sources.push(...Object.values(dirs));
  const outcomes: Array<"ok" | Error> = [];
  const routes = new Map<string, Handler>();
  for (const [method, handler] of fileSyncAttachable(new Map(Object.entries(dirs))).routes) {
    routes.set(method, async (call) => {
      try {
        await handler(call);
        outcomes.push("ok");
      } catch (err) {
        outcomes.push(err as Error);
        throw err;
      }
    });
  }
  daemon = await startDaemonSide(routes);
  return { daemon, outcomes };
}

type PacketInit = MessageInitShape<typeof PacketSchema>;
const encode = (packet: PacketInit) => toBinary(PacketSchema, create(PacketSchema, packet));
const utf8 = new TextEncoder();

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * What fsutil's receiver checks: clean relative paths, every parent sent
 * before (and still open on the walk), names in UTF-8 order per directory.
 */
class OrderValidator {
  private readonly stack: Array<{ dir: string; last?: string }> = [{ dir: "" }];

  check(stat: Stat): void {
    const p = stat.path;
    if (p === "" || p.startsWith("/") || p.endsWith("/") || p.split("/").some((c) => c === "" || c === "." || c === "..")) {
      throw new Error(`unclean path ${JSON.stringify(p)}`);
    }
    const slash = p.lastIndexOf("/");
    const dir = slash < 0 ? "" : p.slice(0, slash);
    const base = p.slice(slash + 1);
    while (this.stack.length > 0 && this.stack[this.stack.length - 1]!.dir !== dir) this.stack.pop();
    const top = this.stack[this.stack.length - 1];
    if (!top) throw new Error(`changes out of order: ${p} (parent not sent, or left already)`);
    if (top.last !== undefined && compareBytes(base, top.last) <= 0) throw new Error(`changes out of order: ${p} after ${top.last}`);
    top.last = base;
    if (stat.mode & GoMode.Dir) this.stack.push({ dir: p });
  }
}

interface Received {
  stats: Stat[];
  files: Map<string, Buffer>;
  status: { code: number; message: string };
  /** Byte length of the end-of-listing message (must be 0). */
  endOfListingLength?: number;
  /** Order in which things arrived: "stat:<path>", "end", "data:<path>" (first chunk), "fin", "err:<text>". */
  timeline: string[];
  errFromSender?: string;
}

interface ReceiveOptions {
  metadata?: Record<string, string | string[]>;
  /** Ask for each file as soon as its STAT arrives (default), or only after the listing ends. */
  eager?: boolean;
  /** Which files to ask for; default all regular files. */
  want?: (stat: Stat) => boolean;
  /** Extra packets to send once the listing ended, instead of the normal REQ/FIN flow. */
  afterListing?: (send: (p: PacketInit) => void, ids: Map<string, number>) => "continue" | "stop";
}

async function receive(dirName: string, options: ReceiveOptions = {}): Promise<Received> {
  const call = daemon!.call(FILE_SYNC_DIFF_COPY, { "dir-name": dirName, ...options.metadata });
  const send = (p: PacketInit) => call.send(encode(p));
  const validator = new OrderValidator();
  const stats: Stat[] = [];
  const ids = new Map<string, number>();
  const pathOf = new Map<number, string>();
  const chunks = new Map<number, Buffer[]>();
  const files = new Map<string, Buffer>();
  const outstanding = new Set<number>();
  const later: number[] = [];
  const timeline: string[] = [];
  const result: Partial<Received> = {};
  let listingDone = false;
  let finSent = false;

  const request = (id: number) => {
    outstanding.add(id);
    chunks.set(id, []);
    send({ type: Packet_PacketType.PACKET_REQ, id });
  };
  const maybeFinish = () => {
    if (listingDone && outstanding.size === 0 && !finSent) {
      finSent = true;
      send({ type: Packet_PacketType.PACKET_FIN });
    }
  };

  for await (const bytes of call.messages) {
    const packet = fromBinary(PacketSchema, bytes);
    switch (packet.type) {
      case Packet_PacketType.PACKET_STAT: {
        if (!packet.stat) {
          result.endOfListingLength = bytes.length;
          timeline.push("end");
          listingDone = true;
          if (options.afterListing && options.afterListing(send, ids) === "stop") break;
          for (const id of later) request(id);
          maybeFinish();
          break;
        }
        validator.check(packet.stat);
        const id = stats.length;
        stats.push(packet.stat);
        ids.set(packet.stat.path, id);
        pathOf.set(id, packet.stat.path);
        timeline.push(`stat:${packet.stat.path}`);
        if (isRegularGoMode(packet.stat.mode) && (options.want?.(packet.stat) ?? true)) {
          if (options.eager ?? true) request(id);
          else later.push(id);
        }
        break;
      }
      case Packet_PacketType.PACKET_DATA: {
        const list = chunks.get(packet.id);
        if (!list || !outstanding.has(packet.id)) {
          // REQs sent by afterListing are not tracked.
          if (options.afterListing) break;
          throw new Error(`DATA for id ${packet.id} not requested`);
        }
        expect(packet.data.length).toBeLessThanOrEqual(32 * 1024);
        if (list.length === 0) timeline.push(`data:${pathOf.get(packet.id)}`);
        if (packet.data.length > 0) list.push(Buffer.from(packet.data));
        else {
          outstanding.delete(packet.id);
          files.set(pathOf.get(packet.id)!, Buffer.concat(list));
          maybeFinish();
        }
        break;
      }
      case Packet_PacketType.PACKET_FIN:
        timeline.push("fin");
        call.end();
        break;
      case Packet_PacketType.PACKET_ERR:
        result.errFromSender = Buffer.from(packet.data).toString();
        timeline.push(`err:${result.errFromSender}`);
        break;
      default:
        throw new Error(`unexpected packet type ${packet.type}`);
    }
  }
  return { stats, files, status: await call.status, timeline, ...result } as Received;
}

const pathsOf = (received: Received) => received.stats.map((s) => s.path);

describe("FileSync DiffCopy sender", () => {
  it("registers exactly the path the daemon calls", () => {
    expect(FILE_SYNC_DIFF_COPY).toBe("/moby.filesync.v1.FileSync/DiffCopy");
    expect(`/${FileSync.typeName}/${FileSync.method.diffCopy.name}`).toBe(FILE_SYNC_DIFF_COPY);
    expect([...fileSyncAttachable(new Map()).routes.keys()]).toEqual([FILE_SYNC_DIFF_COPY]);
  });

  it("sends a directory in fsutil order with Go modes and the contents the daemon asks for", async () => {
    const big = Buffer.alloc(200 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) % 256;
    const root = await writeTree(path.join(tmp, "ctx"), {
      "a b.txt": "spaces",
      "ünï.txt": "non-ascii",
      "😀.txt": "astral",
      "ｚ.txt": "fullwidth",
      "exec.sh": { mode: 0o755, content: "#!/bin/sh\n" },
      "link-in": { symlink: "a b.txt" },
      "link-out": { symlink: "../../../etc/passwd" },
      "empty/": "",
      "nested/deeper/file.txt": "deep",
      "nested/big.bin": big,
      "nested-x": "sorts after nested/ only per directory",
      zero: "",
    });
    const { outcomes } = await serve({ context: await directorySource(root) });
    const received = await receive("context");

    expect(received.status).toEqual({ code: GrpcCode.OK, message: "" });
    expect(outcomes).toEqual(["ok"]);
    expect(received.endOfListingLength).toBe(0);
    expect(received.timeline.at(-1)).toBe("fin");
    expect(pathsOf(received)).toEqual([
      "a b.txt",
      "empty",
      "exec.sh",
      "link-in",
      "link-out",
      "nested",
      "nested/big.bin",
      "nested/deeper",
      "nested/deeper/file.txt",
      "nested-x",
      "zero",
      "ünï.txt",
      "ｚ.txt",
      "😀.txt",
    ]);
    const stat = (p: string) => received.stats.find((s) => s.path === p)!;
    expect(stat("exec.sh").mode).toBe(0o755);
    expect(stat("empty").mode).toBe((GoMode.Dir | 0o755) >>> 0);
    expect(stat("link-out")).toMatchObject({ mode: (GoMode.Symlink | 0o777) >>> 0, linkname: "../../../etc/passwd" });
    expect(stat("nested/big.bin").size).toBe(BigInt(big.length));
    const lstat = await fs.lstat(path.join(root, "😀.txt"), { bigint: true });
    expect(stat("😀.txt").modTime).toBe(lstat.mtimeNs);
    for (const s of received.stats) expect([s.uid, s.gid]).toEqual([0, 0]);

    expect([...received.files.keys()].sort()).toEqual(
      ["a b.txt", "exec.sh", "nested/big.bin", "nested/deeper/file.txt", "nested-x", "zero", "ünï.txt", "ｚ.txt", "😀.txt"].sort(),
    );
    expect(received.files.get("nested/big.bin")!.equals(big)).toBe(true);
    expect(received.files.get("😀.txt")!.toString()).toBe("astral");
    expect(received.files.get("zero")!.length).toBe(0);
  });

  it("serves REQs while the listing is still going out", async () => {
    // list("later") only returns once the daemon's REQ for "first" is being
    // served: a sender that waited for the end of its walk would deadlock.
    const inner = memorySource({ first: "1", "later/x": "2", "later/y": "3" });
    let served!: () => void;
    const firstServed = new Promise<void>((resolve) => (served = resolve));
    const gated: TreeSource = {
      description: "gated",
      list: async (dir) => {
        if (dir === "later") await firstServed;
        return inner.list(dir);
      },
      stat: (p) => inner.stat(p),
      open: async (p) => {
        if (p === "first") served();
        return inner.open(p);
      },
      close: () => inner.close(),
    };
    await serve({ context: gated });
    const received = await receive("context");
    expect(received.status.code).toBe(GrpcCode.OK);
    expect(received.timeline.indexOf("data:first")).toBeLessThan(received.timeline.indexOf("stat:later/x"));
    expect(received.timeline.indexOf("data:first")).toBeLessThan(received.timeline.indexOf("end"));
    expect(Object.fromEntries([...received.files].map(([k, v]) => [k, v.toString()]))).toEqual({ first: "1", "later/x": "2", "later/y": "3" });
  });

  it("sends large files byte for byte while it reuses its read buffers, several files at once", async () => {
    // More 1 MiB reads than the sender has buffers, for three large files and
    // many small ones in flight together: a buffer reused before its bytes
    // were sent would show here as a wrong file.
    const spec: Record<string, Buffer> = {};
    for (const [name, size] of [["big-1", 9 * 1024 * 1024 + 17], ["big-2", 6 * 1024 * 1024], ["mid", 300_000]] as const) {
      spec[name] = randomBytes(size);
    }
    for (let i = 0; i < 200; i++) spec[`small/${String(i).padStart(3, "0")}`] = Buffer.alloc(1000 + i, i);
    const root = await writeTree(path.join(tmp, "large"), spec);
    await serve({ context: await directorySource(root) });
    const received = await receive("context");
    expect(received.status.code).toBe(GrpcCode.OK);
    const wrong = Object.entries(spec).filter(([name, content]) => !received.files.get(name)?.equals(content));
    expect(wrong.map(([name]) => name)).toEqual([]);
  });

  it("answers REQs that come after the listing, in any order", async () => {
    const root = await writeTree(path.join(tmp, "ctx"), { a: "A", "b/c": "C", d: "D" });
    await serve({ context: await directorySource(root) });
    const received = await receive("context", { eager: false, want: (s) => s.path !== "a" });
    expect(received.status.code).toBe(GrpcCode.OK);
    expect(pathsOf(received)).toEqual(["a", "b", "b/c", "d"]);
    expect(Object.fromEntries([...received.files].map(([k, v]) => [k, v.toString()]))).toEqual({ "b/c": "C", d: "D" });
  });

  it("applies exclude patterns with ** and ! exceptions, sending excluded parents lazily", async () => {
    const root = await writeTree(path.join(tmp, "ctx"), {
      Dockerfile: "FROM busybox",
      ".dockerignore": "…",
      "node_modules/a/index.js": "x",
      "node_modules/keep/k.js": "k",
      "node_modules/keep/k.js.map": "map",
      "src/a.ts": "a",
      "src/b.log": "log",
      "src/deep/c.log": "log",
      "build/out/keep.txt": "kept",
      "build/out/other.txt": "dropped",
      "build/tmp/": "",
      "docs/readme.md": "r",
    });
    await serve({ context: await directorySource(root) });
    const received = await receive("context", {
      metadata: {
        "exclude-patterns": ["node_modules", "!node_modules/keep", "**/*.log", "**/*.map", "build", "!build/**/keep.txt", "docs/"],
      },
    });
    expect(received.status.code).toBe(GrpcCode.OK);
    expect(pathsOf(received)).toEqual([
      ".dockerignore",
      "Dockerfile",
      "build", // lazily, before its first kept child
      "build/out",
      "build/out/keep.txt",
      "node_modules",
      "node_modules/keep",
      "node_modules/keep/k.js",
      "src",
      "src/a.ts",
      "src/deep", // not excluded itself, though nothing inside is sent
    ]);
    expect(received.files.get("build/out/keep.txt")!.toString()).toBe("kept");
  });

  it("applies include patterns", async () => {
    const root = await writeTree(path.join(tmp, "ctx"), {
      "README.md": "r",
      "src/a.ts": "a",
      "src/b.js": "b",
      "src/sub/c.ts": "c",
      "lib/d.ts": "d",
      "assets/img/logo.png": "png",
    });
    await serve({ context: await directorySource(root) });
    const received = await receive("context", { metadata: { "include-patterns": ["src/*.ts", "README.md", "assets"] } });
    expect(received.status.code).toBe(GrpcCode.OK);
    expect(pathsOf(received)).toEqual(["README.md", "assets", "assets/img", "assets/img/logo.png", "src", "src/a.ts"]);
  });

  it("resolves followpaths through symlinks and sends only those", async () => {
    const root = await writeTree(path.join(tmp, "ctx"), {
      Dockerfile: { symlink: "docker/Dockerfile.real" },
      "docker/Dockerfile.real": "FROM busybox\n",
      "docker/other": "not sent",
      "dir-link": { symlink: "/real-dir" }, // absolute: taken from the root
      "real-dir/Dockerfile.dockerignore": "ignored\n",
      "real-dir/more": "not sent",
      "escape-link": { symlink: "../../../outside" },
      src: "not sent",
    });
    await serve({ dockerfile: await directorySource(root) });
    const received = await receive("dockerfile", {
      metadata: { followpaths: ["Dockerfile", "dir-link/Dockerfile.dockerignore", "escape-link/x", "missing"] },
    });
    expect(received.status.code).toBe(GrpcCode.OK);
    expect(pathsOf(received)).toEqual([
      "Dockerfile",
      "dir-link",
      "docker",
      "docker/Dockerfile.real",
      "escape-link",
      "real-dir",
      "real-dir/Dockerfile.dockerignore",
    ]);
    expect(received.files.get("docker/Dockerfile.real")!.toString()).toBe("FROM busybox\n");
  });

  it("decodes -encoded metadata and keeps values containing ', ' whole", async () => {
    const root = await writeTree(path.join(tmp, "ctx"), {
      "ünïcode.txt": "u",
      "a b.txt": "ab",
      "x, y.txt": "xy",
      "kept.txt": "k",
    });
    await serve({ context: await directorySource(root) });
    const encoded = await receive("context", {
      metadata: { "exclude-patterns": ["%C3%BCn%C3%AF*", "a+b.txt"], "exclude-patterns-encoded": "1" },
    });
    expect(pathsOf(encoded)).toEqual(["kept.txt", "x, y.txt"]);
    const raw = await receive("context", { metadata: { "exclude-patterns": ["x, y.txt", "kept.txt"] } });
    expect(pathsOf(raw)).toEqual(["a b.txt", "ünïcode.txt"]);
  });

  it("sends tar uploads and in-memory files the same way", async () => {
    const pack = tar.pack();
    pack.entry({ name: "./app/main.js", mode: 0o644, mtime: new Date(1_000) }, "console.log(1)");
    pack.entry({ name: "./Dockerfile", mode: 0o644, mtime: new Date(2_000) }, "FROM busybox");
    pack.finalize();
    await serve({
      context: await tarSource(Readable.from(pack as AsyncIterable<Buffer>), { tmpDir: tmp }),
      dockerfile: memorySource({ Dockerfile: "FROM busybox\n", "Dockerfile.dockerignore": "" }),
    });
    const fromTar = await receive("context");
    expect(pathsOf(fromTar)).toEqual(["Dockerfile", "app", "app/main.js"]);
    expect(fromTar.stats[1]).toMatchObject({ mode: (GoMode.Dir | 0o755) >>> 0, modTime: 0n });
    expect(fromTar.stats[2]!.modTime).toBe(1_000_000_000n);
    expect(fromTar.files.get("app/main.js")!.toString()).toBe("console.log(1)");
    // The frontend asks for the same local again: the spool is read again.
    expect((await receive("context")).files.get("Dockerfile")!.toString()).toBe("FROM busybox");

    const fromMemory = await receive("dockerfile", { metadata: { followpaths: ["Dockerfile", "Dockerfile.dockerignore", "dockerfile"] } });
    expect(pathsOf(fromMemory)).toEqual(["Dockerfile", "Dockerfile.dockerignore"]);
    expect(fromMemory.stats[0]).toMatchObject({ mode: 0o644, size: 13n });
    // An in-memory file's time follows its content (see memorySource).
    expect(fromMemory.stats[0]!.modTime).toBe((await memorySource({ Dockerfile: "FROM busybox\n" }).stat("Dockerfile"))!.modTimeNs);
  });

  it("answers an unknown dir-name NOT_FOUND", async () => {
    await serve({ context: memorySource({ a: "a" }) });
    const call = daemon!.call(FILE_SYNC_DIFF_COPY, { "dir-name": "secret-dir" });
    call.end();
    expect(await call.status).toEqual({ code: GrpcCode.NOT_FOUND, message: 'no access allowed to dir "secret-dir"' });
  });

  it("answers a malformed pattern INVALID_ARGUMENT", async () => {
    await serve({ context: memorySource({ a: "a" }) });
    const received = await receive("context", { metadata: { "exclude-patterns": ["[oops"] } });
    expect(received.status.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(received.status.message).toContain("[oops");
  });

  it.each([
    ["an unknown id", () => 999],
    ["a directory's id", (ids: Map<string, number>) => ids.get("dir")!],
    ["a symlink's id", (ids: Map<string, number>) => ids.get("link")!],
  ])("fails on a REQ for %s, telling the daemon with ERR", async (_what, badId) => {
    // A tar, for a symlink entry.
    const pack = tar.pack();
    pack.entry({ name: "dir/f" }, "f");
    pack.entry({ name: "link", type: "symlink", linkname: "dir/f" });
    pack.finalize();
    const { outcomes } = await serve({ context: await tarSource(Readable.from(pack as AsyncIterable<Buffer>), { tmpDir: tmp }) });
    let id = -1;
    const received = await receive("context", {
      eager: false,
      afterListing: (send, ids) => {
        id = badId(ids);
        send({ type: Packet_PacketType.PACKET_REQ, id });
        return "stop";
      },
    });
    expect(received.status.code).not.toBe(GrpcCode.OK);
    expect(received.status.message).toBe(`invalid file id ${id}`);
    expect(received.errFromSender).toBe(`invalid file id ${id}`);
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]).toBeInstanceOf(Error);
  });

  it("fails on a second REQ for the same file", async () => {
    const { outcomes } = await serve({ context: memorySource({ f: "f" }) });
    const received = await receive("context", {
      eager: false,
      afterListing: (send, ids) => {
        send({ type: Packet_PacketType.PACKET_REQ, id: ids.get("f")! });
        send({ type: Packet_PacketType.PACKET_REQ, id: ids.get("f")! });
        return "stop";
      },
    });
    expect(received.status.message).toBe("invalid file id 0");
    expect(outcomes[0]).toBeInstanceOf(Error);
  });

  it("fails when the daemon sends ERR, without answering it with ERR", async () => {
    const { outcomes } = await serve({ context: memorySource({ f: "f" }) });
    const received = await receive("context", {
      eager: false,
      afterListing: (send) => {
        send({ type: Packet_PacketType.PACKET_ERR, data: utf8.encode("disk full") });
        return "stop";
      },
    });
    expect(received.status).toEqual({ code: GrpcCode.UNKNOWN, message: "error from receiver: disk full" });
    expect(received.errFromSender).toBeUndefined();
    expect((outcomes[0] as Error).message).toBe("error from receiver: disk full");
  });

  it("fails when the daemon closes its side without FIN", async () => {
    const { outcomes } = await serve({ context: memorySource({ f: "f" }) });
    const call = daemon!.call(FILE_SYNC_DIFF_COPY, { "dir-name": "context" });
    call.end();
    for await (const _ of call.messages) {
      // drain the listing
    }
    expect((await call.status).message).toContain("before FIN");
    expect(outcomes[0]).toBeInstanceOf(Error);
  });

  it("stops reading and ends the handler when the daemon cancels mid-file", async () => {
    let chunksRead = 0;
    let finished = false;
    const endless: TreeSource = {
      description: "endless",
      list: async (dir) => (dir === "" ? [{ path: "big", mode: 0o644, size: 1 << 30, modTimeNs: 0n, linkname: "", uid: 0, gid: 0 }] : []),
      stat: async () => undefined,
      open: () =>
        (async function* () {
          try {
            for (;;) {
              chunksRead++;
              yield new Uint8Array(32 * 1024);
            }
          } finally {
            finished = true;
          }
        })(),
      close: async () => {},
    };
    const { outcomes } = await serve({ context: endless });
    const call = daemon!.call(FILE_SYNC_DIFF_COPY, { "dir-name": "context" });
    let dataPackets = 0;
    for await (const bytes of call.messages) {
      const packet = fromBinary(PacketSchema, bytes);
      if (packet.type === Packet_PacketType.PACKET_STAT && !packet.stat) call.send(encode({ type: Packet_PacketType.PACKET_REQ, id: 0 }));
      if (packet.type === Packet_PacketType.PACKET_DATA && ++dataPackets === 10) {
        call.cancel();
        break;
      }
    }
    await expect.poll(() => outcomes.length, { timeout: 5_000 }).toBe(1);
    expect(outcomes[0]).toBeInstanceOf(Error);
    await expect.poll(() => finished, { timeout: 5_000 }).toBe(true);
    const readAtEnd = chunksRead;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(chunksRead).toBe(readAtEnd);
  });
});
