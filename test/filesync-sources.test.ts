// The three TreeSources on real files and real tarballs in temp dirs.
import { createHash } from "node:crypto";
import { once } from "node:events";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { createGzip, gzipSync } from "node:zlib";
import * as tar from "tar-stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BuildKitNodeError } from "../src/errors.js";
import { GoMode } from "../src/session/fsutil/file-mode.js";
import {
  directorySource,
  memorySource,
  tarSource,
  type TreeEntry,
  type TreeSource,
} from "../src/session/filesync/tree-source.js";
import { READ_CHUNK } from "../src/session/filesync/file-reads.js";

let tmp: string;
const opened: TreeSource[] = [];
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "filesync-sources-"));
});
afterEach(async () => {
  for (const source of opened.splice(0)) await source.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

function keep<T extends TreeSource>(source: T): T {
  opened.push(source);
  return source;
}

async function read(source: TreeSource, p: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await source.open(p)) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

async function rejection(promise: Promise<unknown>): Promise<BuildKitNodeError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(BuildKitNodeError);
    return err as BuildKitNodeError;
  }
  throw new Error("expected a rejection");
}

const names = (entries: TreeEntry[]) => entries.map((e) => e.path);
const perm = (entry: TreeEntry | undefined) => (entry?.mode ?? 0) & 0o7777;
const isDir = (entry: TreeEntry | undefined) => ((entry?.mode ?? 0) & GoMode.Dir) !== 0;
const isLink = (entry: TreeEntry | undefined) => ((entry?.mode ?? 0) & GoMode.Symlink) !== 0;

describe("directorySource", () => {
  async function makeTree(root: string): Promise<void> {
    await fs.mkdir(path.join(root, "nested/deeper"), { recursive: true });
    await fs.mkdir(path.join(root, "empty"));
    await fs.writeFile(path.join(root, "a b.txt"), "spaces");
    await fs.writeFile(path.join(root, "ünï.txt"), "non-ascii");
    await fs.writeFile(path.join(root, "😀.txt"), "astral");
    await fs.writeFile(path.join(root, "ｚ.txt"), "fullwidth z");
    await fs.writeFile(path.join(root, "exec.sh"), "#!/bin/sh\n");
    await fs.chmod(path.join(root, "exec.sh"), 0o755);
    await fs.writeFile(path.join(root, "nested/deeper/file.txt"), "deep");
    await fs.symlink("a b.txt", path.join(root, "link-in"));
    await fs.symlink("../../outside/secret", path.join(root, "link-out"));
  }

  it("lists entries in UTF-8 byte order with Go modes, raw symlinks, uid/gid 0", async () => {
    const root = path.join(tmp, "ctx");
    await fs.mkdir(root);
    await makeTree(root);
    const source = keep(await directorySource(root));

    const top = await source.list("");
    const expected = ["a b.txt", "empty", "exec.sh", "link-in", "link-out", "nested", "ünï.txt", "ｚ.txt", "😀.txt"];
    expect(names(top)).toEqual(expected);
    // UTF-16 order would put the astral 😀 (D83D…) before ｚ (FF5A); UTF-8 bytes do not.
    expect(["ｚ.txt", "😀.txt"].sort()).toEqual(["😀.txt", "ｚ.txt"]);

    const byName = new Map(top.map((e) => [e.path, e]));
    expect(perm(byName.get("exec.sh"))).toBe(0o755);
    expect(byName.get("exec.sh")!.mode & GoMode.Dir).toBe(0);
    expect(isDir(byName.get("empty"))).toBe(true);
    expect(byName.get("empty")!.size).toBe(0);
    expect(byName.get("link-in")).toMatchObject({ linkname: "a b.txt", size: "a b.txt".length });
    expect(isLink(byName.get("link-out"))).toBe(true);
    expect(byName.get("link-out")!.linkname).toBe("../../outside/secret");
    for (const entry of top) expect([entry.uid, entry.gid]).toEqual([0, 0]);

    const lstat = await fs.lstat(path.join(root, "😀.txt"), { bigint: true });
    expect(byName.get("😀.txt")).toMatchObject({ modTimeNs: lstat.mtimeNs, size: 6, linkname: "" });

    expect(names(await source.list("nested"))).toEqual(["nested/deeper"]);
    expect(names(await source.list("nested/deeper"))).toEqual(["nested/deeper/file.txt"]);
    expect(await source.list("empty")).toEqual([]);
    expect((await read(source, "nested/deeper/file.txt")).toString()).toBe("deep");
    expect((await read(source, "😀.txt")).toString()).toBe("astral");
  });

  it("looks up single paths without following symlinks", async () => {
    const root = path.join(tmp, "ctx");
    await fs.mkdir(root);
    await makeTree(root);
    const source = keep(await directorySource(root));
    expect(isLink(await source.stat("link-out"))).toBe(true);
    expect(await source.stat("missing")).toBeUndefined();
    expect(await source.stat("a b.txt/below")).toBeUndefined();
    expect((await source.stat("nested/deeper"))?.path).toBe("nested/deeper");
    await expect(async () => source.stat("../etc")).rejects.toThrow(/clean relative path/);
  });

  it("leaves sockets out", async () => {
    const root = path.join(tmp, "ctx");
    await fs.mkdir(root);
    await fs.writeFile(path.join(root, "file"), "x");
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(root, "sock"), resolve));
    try {
      const source = keep(await directorySource(root));
      expect(names(await source.list(""))).toEqual(["file"]);
      expect(await source.stat("sock")).toBeUndefined();
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("resolves a root that is a symlink", async () => {
    await fs.mkdir(path.join(tmp, "real"));
    await fs.writeFile(path.join(tmp, "real/f"), "x");
    await fs.symlink("real", path.join(tmp, "alias"));
    const source = keep(await directorySource(path.join(tmp, "alias")));
    expect(names(await source.list(""))).toEqual(["f"]);
  });

  it("refuses a missing root or a file, naming the path", async () => {
    const missing = path.join(tmp, "nope");
    const err = await rejection(directorySource(missing));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain(missing);

    const file = path.join(tmp, "file");
    await fs.writeFile(file, "x");
    const err2 = await rejection(directorySource(file));
    expect(err2.code).toBe("INVALID_ARGUMENT");
    expect(err2.message).toContain(file);
  });
});

type TarItem = { header: Partial<tar.Header> & { name: string }; body?: string | Buffer };

async function tarBytes(items: TarItem[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
  })();
  for (const item of items) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      if (item.body === undefined) pack.entry(item.header, done);
      else pack.entry(item.header, item.body, done);
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

describe("tarSource", () => {
  const mtime = new Date("2024-05-01T12:00:00Z");
  const longName = `long/${"n".repeat(150)}/file.txt`;
  const items: TarItem[] = [
    { header: { name: "./", type: "directory", mode: 0o755, mtime } },
    { header: { name: "./Dockerfile", mode: 0o644, mtime }, body: "FROM scratch\n" },
    { header: { name: "./src/", type: "directory", mode: 0o700, mtime } },
    { header: { name: "./src/a.ts", mode: 0o644, mtime }, body: "export {};\n" },
    { header: { name: "deep/x/y.txt", mode: 0o600, mtime }, body: "implicit parents" },
    { header: { name: "run.sh", mode: 0o755, mtime }, body: "#!/bin/sh\n" },
    { header: { name: "empty", mode: 0o644, mtime }, body: "" },
    { header: { name: "link", type: "symlink", linkname: "src/a.ts", mtime } },
    { header: { name: "hard", type: "link", linkname: "./src/a.ts", mtime } },
    { header: { name: longName, mode: 0o644, mtime }, body: "pax path" },
    { header: { name: "Dockerfile", mode: 0o644, mtime }, body: "FROM busybox\n" }, // replaces the first
  ];

  async function checkTree(source: TreeSource): Promise<void> {
    const top = await source.list("");
    expect(names(top)).toEqual(["Dockerfile", "deep", "empty", "hard", "link", "long", "run.sh", "src"]);
    const byName = new Map(top.map((e) => [e.path, e]));
    expect(byName.get("Dockerfile")).toMatchObject({ size: 13, modTimeNs: BigInt(mtime.getTime()) * 1_000_000n, uid: 0, gid: 0 });
    expect((await read(source, "Dockerfile")).toString()).toBe("FROM busybox\n");
    expect(perm(byName.get("run.sh"))).toBe(0o755);
    expect(isDir(byName.get("src"))).toBe(true);
    expect(perm(byName.get("src"))).toBe(0o700);
    // Implicit parents: 0755 directories with mtime 0.
    expect(byName.get("deep")).toMatchObject({ mode: (GoMode.Dir | 0o755) >>> 0, modTimeNs: 0n, size: 0 });
    expect(await source.stat("deep/x")).toMatchObject({ path: "deep/x", mode: (GoMode.Dir | 0o755) >>> 0 });
    expect(perm(await source.stat("deep/x/y.txt"))).toBe(0o600);
    expect(byName.get("link")).toMatchObject({ linkname: "src/a.ts", size: 8 });
    expect(isLink(byName.get("link"))).toBe(true);
    // A hard link is a regular file with the target's content.
    expect(byName.get("hard")).toMatchObject({ linkname: "", size: 11 });
    expect((await read(source, "hard")).toString()).toBe("export {};\n");
    expect((await read(source, "empty")).length).toBe(0);
    expect((await read(source, longName)).toString()).toBe("pax path");
    expect(names(await source.list(`long/${"n".repeat(150)}`))).toEqual([longName]);
    // Any order, several times.
    expect((await read(source, "src/a.ts")).toString()).toBe("export {};\n");
    expect((await read(source, "Dockerfile")).toString()).toBe("FROM busybox\n");
  }

  it("indexes a plain tarball", async () => {
    const source = keep(await tarSource(Readable.from([await tarBytes(items)]), { tmpDir: tmp }));
    expect(source.description).toBe("tar upload");
    await checkTree(source);
  });

  it("indexes a gzipped tarball, fed in small chunks", async () => {
    const gz = gzipSync(await tarBytes(items));
    const pieces = Array.from({ length: Math.ceil(gz.length / 7) }, (_, i) => gz.subarray(i * 7, i * 7 + 7));
    const source = keep(await tarSource(Readable.from(pieces), { tmpDir: tmp }));
    await checkTree(source);
  });

  it("streams a 20 MiB file through the spool and reads it back twice", async () => {
    const size = 20 * 1024 * 1024;
    const pack = tar.pack();
    const written = createHash("sha256");
    const producing = (async () => {
      let finished!: () => void;
      const entryDone = new Promise<void>((resolve) => (finished = resolve));
      const sink = pack.entry({ name: "big.bin", size, mode: 0o644 }, () => finished());
      const block = Buffer.alloc(64 * 1024);
      for (let offset = 0, n = 0; offset < size; offset += block.length, n++) {
        block.fill(n % 251);
        block.writeUInt32BE(n, 0);
        written.update(block);
        if (!sink.write(Buffer.from(block))) await once(sink as unknown as NodeJS.EventEmitter, "drain");
      }
      sink.end(undefined); // streamx types want an argument
      await entryDone;
      pack.finalize();
    })();
    const gzipped = Readable.from(pack as AsyncIterable<Buffer>).pipe(createGzip());
    const source = keep(await tarSource(gzipped, { tmpDir: tmp }));
    await producing;
    const digest = written.digest("hex");
    expect((await source.stat("big.bin"))?.size).toBe(size);
    for (let round = 0; round < 2; round++) {
      const hash = createHash("sha256");
      let largest = 0;
      for await (const chunk of await source.open("big.bin")) {
        hash.update(chunk);
        largest = Math.max(largest, chunk.byteLength);
      }
      expect(hash.digest("hex")).toBe(digest);
      expect(largest).toBeLessThanOrEqual(READ_CHUNK); // read in bounded pieces, never whole
    }
  });

  it("removes its spool on close", async () => {
    const source = await tarSource(Readable.from([await tarBytes(items)]), { tmpDir: tmp });
    expect(await fs.readdir(tmp)).toHaveLength(1);
    await source.close();
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it("removes its spool directory on close even when the spool could not be read", async () => {
    const source = await tarSource(Readable.from([await tarBytes(items)]), { tmpDir: tmp });
    const [spoolDir] = await fs.readdir(tmp);
    await fs.rm(path.join(tmp, spoolDir!, "contents")); // a temp cleaner got there first
    await expect(read(source, "Dockerfile")).rejects.toMatchObject({ code: "ENOENT" });
    await source.close();
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  const escapes: Array<[string, TarItem[], string]> = [
    ["a parent-dir name", [{ header: { name: "../x" }, body: "x" }], "../x"],
    ["an absolute name", [{ header: { name: "/etc/passwd" }, body: "x" }], "/etc/passwd"],
    ["a name that climbs out", [{ header: { name: "a/../../x" }, body: "x" }], "a/../../x"],
    ["a symlink that climbs out", [{ header: { name: "a", type: "symlink", linkname: "../../etc" } }], "a"],
    ["a nested symlink that climbs out", [{ header: { name: "d/l", type: "symlink", linkname: "../../etc" } }], "d/l"],
    ["an absolute symlink", [{ header: { name: "abs", type: "symlink", linkname: "/abs" } }], "abs"],
    [
      "a symlink through a link to .",
      [
        { header: { name: "d", type: "symlink", linkname: "." } },
        { header: { name: "e", type: "symlink", linkname: "d/../etc" } },
      ],
      "e",
    ],
    ["a hard link outside", [{ header: { name: "h", type: "link", linkname: "../x" } }], "h"],
    ["a hard link to an unknown entry", [{ header: { name: "h", type: "link", linkname: "nope" } }], "h"],
    [
      "an entry under a symlink",
      [
        { header: { name: "sub/", type: "directory" } },
        { header: { name: "l", type: "symlink", linkname: "sub" } },
        { header: { name: "l/x" }, body: "x" },
      ],
      "l/x",
    ],
    ["a device node", [{ header: { name: "null", type: "character-device", devmajor: 1, devminor: 3 } }], "null"],
  ];
  it.each(escapes)("refuses %s, naming the entry, and leaves no spool", async (_what, bad, entryName) => {
    const err = await rejection(tarSource(Readable.from([await tarBytes(bad)]), { tmpDir: tmp }));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain(JSON.stringify(entryName));
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it("releases the caller's stream when it refuses the tarball midway", async () => {
    const input = new PassThrough();
    input.write(await tarBytes([{ header: { name: "../x" }, body: "x" }]));
    // Never ended: the upload is still "in progress".
    const err = await rejection(tarSource(input, { tmpDir: tmp }));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(input.destroyed).toBe(true);
  });

  it("accepts symlinks that stay inside", async () => {
    const source = keep(
      await tarSource(
        Readable.from([
          await tarBytes([
            { header: { name: "a/b", type: "symlink", linkname: "../c" } },
            { header: { name: "a/dangling", type: "symlink", linkname: "x/y/../../z" } },
            { header: { name: "loop1", type: "symlink", linkname: "loop2" } },
            { header: { name: "loop2", type: "symlink", linkname: "loop1" } },
          ]),
        ]),
        { tmpDir: tmp },
      ),
    );
    expect(names(await source.list("a"))).toEqual(["a/b", "a/dangling"]);
  });

  it("refuses garbage and enforces maxBytes", async () => {
    const garbage = await rejection(tarSource(Readable.from([Buffer.alloc(1024, 7)]), { tmpDir: tmp }));
    expect(garbage.code).toBe("INVALID_ARGUMENT");
    const tooBig = await rejection(
      tarSource(Readable.from([await tarBytes([{ header: { name: "f" }, body: Buffer.alloc(5000) }])]), { tmpDir: tmp, maxBytes: 4096 }),
    );
    expect(tooBig.code).toBe("RESOURCE_EXHAUSTED");
    expect(await fs.readdir(tmp)).toEqual([]);
  });
});

describe("memorySource", () => {
  it("holds files with implicit 0755 parents and a stable mtime", async () => {
    const source = memorySource({ Dockerfile: "FROM busybox\n", "src/app/main.js": Buffer.from("main"), "./src/x.txt": "" });
    expect(names(await source.list(""))).toEqual(["Dockerfile", "src"]);
    expect(names(await source.list("src"))).toEqual(["src/app", "src/x.txt"]);
    const file = await source.stat("Dockerfile");
    expect(file).toMatchObject({ path: "Dockerfile", mode: 0o644, size: 13, linkname: "", uid: 0, gid: 0 });
    // A file's time follows its content: stable for the same bytes, different for others of the same size.
    expect((await memorySource({ Dockerfile: "FROM busybox\n" }).stat("Dockerfile"))?.modTimeNs).toBe(file?.modTimeNs);
    expect((await memorySource({ Dockerfile: "FROM busyb0x\n" }).stat("Dockerfile"))?.modTimeNs).not.toBe(file?.modTimeNs);
    expect(await source.stat("src/app")).toMatchObject({ mode: (GoMode.Dir | 0o755) >>> 0, modTimeNs: 0n });
    expect((await read(source, "src/app/main.js")).toString()).toBe("main");
    expect((await read(source, "src/x.txt")).length).toBe(0);
    expect(await source.stat("nope")).toBeUndefined();

    const dated = memorySource({ f: "x" }, { modTimeNs: 1_700_000_000_123_456_789n });
    expect((await dated.stat("f"))?.modTimeNs).toBe(1_700_000_000_123_456_789n);
  });

  it("streams big content in chunks", async () => {
    const source = memorySource({ big: Buffer.alloc(100_000, 1) });
    const sizes: number[] = [];
    for await (const chunk of await source.open("big")) sizes.push(chunk.byteLength);
    expect(sizes).toEqual([32768, 32768, 32768, 1696]);
  });

  it.each([
    [{ "../x": "x" }],
    [{ "/abs": "x" }],
    [{ "": "x" }],
    [{ ".": "x" }],
    [{ "a/../b": "x" }],
    [{ a: "x", "a/b": "y" }],
    [{ "a/b": "y", a: "x" }],
    [{ "a/b": "y", "./a//b": "x" }],
  ])("refuses %j", (files) => {
    let caught: unknown;
    try {
      memorySource(files);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(BuildKitNodeError);
    expect((caught as BuildKitNodeError).code).toBe("INVALID_ARGUMENT");
  });
});
