// A tarball (plain or gzip), typically a context a user uploaded. It is read
// once, without extracting anything: file contents are appended to one
// temporary spool file and indexed by offset, so memory stays small whatever
// the size, and files can be read again in any order (the daemon asks for
// `dockerfile`, then `context` twice).
//
// The tarball is untrusted, so any entry that could reach outside the root on
// the daemon's side is refused: absolute names, `..` components, entries
// under a symlink, symlinks with absolute targets or targets that climb above
// the root (following symlinks inside the tree), hard links to anything but
// an earlier regular file inside the tree. Device nodes are refused too: an
// upload has no business creating them on the daemon.
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import * as tar from "tar-stream";
import { BuildKitNodeError } from "../../errors.js";
import { writeFully } from "../write-fully.js";
import { closeSoon, openForReading, type ReadBufferPool, readChunks } from "./file-reads.js";
import { goModeFromUnix } from "../fsutil/file-mode.js";
import { EntryTree, type TreeNode, isDirectory, isSymlink } from "./entry-tree.js";
import type { TreeEntry, TreeSource } from "./tree-source.js";
import { rootedComponents } from "./tree-path.js";

/**
 * Ceilings for a tarball from an untrusted source. A tarball past one is
 * refused with RESOURCE_EXHAUSTED as soon as it crosses it, and its spool is
 * removed: a compression bomb costs a moment, not the disk.
 */
export interface TarLimits {
  /** The tarball's size once decompressed (headers included). Default 8 GiB. */
  maxBytes?: number;
  /**
   * Decompressed bytes per compressed byte read so far, checked once more
   * than 64 MiB have come out. Default 100 (source code compresses 3–10×;
   * a bomb of zeros, 1000×).
   */
  maxCompressionRatio?: number;
  /** Entries (files, directories, links). Default 1,000,000. */
  maxEntries?: number;
}

const DEFAULT_TAR_LIMITS: Required<TarLimits> = {
  maxBytes: 8 * 1024 ** 3,
  maxCompressionRatio: 100,
  maxEntries: 1_000_000,
};

/** Below this much output, any ratio is fine (small, very repetitive files are common). */
const RATIO_GRACE_BYTES = 64 * 1024 ** 2;

export interface TarSourceOptions extends TarLimits {
  /** Where the spool directory goes; default os.tmpdir(). */
  tmpDir?: string;
}

/** Where a regular file's bytes are in the spool file. */
interface SpoolExtent {
  offset: number;
  size: number;
}

/** Symlink hops followed when checking where a symlink leads. */
const MAX_SYMLINK_HOPS = 40;
/** Directories that no tar entry describes get this mode and mtime 0 (deterministic). */
const IMPLICIT_DIR_MTIME = 0n;

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFIFO = 0o010000;

/**
 * Reads `input` to the end and indexes it. Rejects with INVALID_ARGUMENT
 * naming the entry if the tarball is malformed, unsafe (see above) or empty,
 * with RESOURCE_EXHAUSTED past one of its limits. close() removes the spool.
 */
export async function tarSource(input: Readable, options: TarSourceOptions = {}): Promise<TreeSource> {
  const limits = { ...DEFAULT_TAR_LIMITS, ...definedOnly(options) };
  const spoolDir = await fs.mkdtemp(path.join(options.tmpDir ?? os.tmpdir(), "buildkit-node-tar-"));
  const spoolPath = path.join(spoolDir, "contents");
  try {
    const tree = await indexTar(input, spoolPath, limits);
    checkSymlinks(tree);
    return spooledSource(tree, spoolPath, spoolDir);
  } catch (err) {
    // Refused midway: stop the upload rather than leave it paused forever.
    input.destroy();
    await fs.rm(spoolDir, { recursive: true, force: true });
    if (err instanceof BuildKitNodeError) throw err;
    throw new BuildKitNodeError("INVALID_ARGUMENT", `tar upload: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

function spooledSource(tree: EntryTree<SpoolExtent>, spoolPath: string, spoolDir: string): TreeSource {
  // One descriptor for every read: each file is then a read (or a few) at its offset.
  let spool: Promise<number> | undefined;
  async function* readExtent(extent: SpoolExtent, pool: ReadBufferPool | undefined): AsyncGenerator<Uint8Array> {
    if (extent.size === 0) return;
    spool ??= openForReading(spoolPath);
    yield* readChunks(await spool, { position: extent.offset, expectedSize: extent.size, limit: extent.size, pool });
  }
  return {
    description: "tar upload",
    async list(dir: string): Promise<TreeEntry[]> {
      return tree.list(dir);
    },
    async stat(p: string): Promise<TreeEntry | undefined> {
      return tree.get(p)?.entry;
    },
    open(p: string, _expectedSize?: number, pool?: ReadBufferPool): AsyncIterable<Uint8Array> {
      const extent = tree.get(p)?.content;
      if (!extent) throw new BuildKitNodeError("NOT_FOUND", `tar upload: no file ${p}`);
      return readExtent(extent, pool);
    },
    async close(): Promise<void> {
      // A spool that could not be opened (removed under us) has no descriptor; its directory still goes.
      const fd = await spool?.catch(() => undefined);
      if (fd !== undefined) closeSoon(fd);
      await fs.rm(spoolDir, { recursive: true, force: true });
    },
  };
}

/** One pass over the tarball: builds the tree, appends file bodies to the spool. */
async function indexTar(input: Readable, spoolPath: string, limits: Required<TarLimits>): Promise<EntryTree<SpoolExtent>> {
  const tree = new EntryTree<SpoolExtent>(IMPLICIT_DIR_MTIME);
  const spool = await fs.open(spoolPath, "w");
  try {
    const extract = tar.extract();
    const bytes = await gunzippedIfNeeded(input);
    if (bytes.empty) throw new BuildKitNodeError("INVALID_ARGUMENT", "tar upload: the tarball is empty (0 bytes)");
    // zlib inflates on its thread pool, never on the event loop.
    const guard = expansionGuard(limits, bytes.gzipped ? bytes.compressedBytes : undefined);
    const feeding = bytes.gzipped ? pipeline(bytes.stream, createGunzip(), guard, extract) : pipeline(bytes.stream, guard, extract);
    // If feeding fails (a limit, bad gzip), the extract stream is destroyed
    // and the loop below throws; the feeding error is the one that says why.
    let feedError: unknown;
    feeding.catch((err: unknown) => (feedError = err));
    try {
      return await readEntries(extract, tree, spool, limits, () => feeding);
    } catch (err) {
      await feeding.catch(() => {});
      throw feedError instanceof BuildKitNodeError ? feedError : err;
    }
  } finally {
    await spool.close();
  }
}

async function readEntries(
  extract: tar.Extract,
  tree: EntryTree<SpoolExtent>,
  spool: fs.FileHandle,
  limits: Required<TarLimits>,
  fed: () => Promise<void>,
): Promise<EntryTree<SpoolExtent>> {
  let spooled = 0;
  let entries = 0;
  for await (const item of extract) {
    const header = item.header;
    const what = `tar entry ${JSON.stringify(header.name)}`;
    if (++entries > limits.maxEntries) {
      throw new BuildKitNodeError("RESOURCE_EXHAUSTED", `tar upload: more than ${limits.maxEntries} entries (tarLimits.maxEntries)`);
    }
    const components = rootedComponents(header.name, what);
    const base = headerEntry(header, what);
    switch (header.type) {
      case "file":
      case "contiguous-file": {
        const extent = { offset: spooled, size: 0 };
        for await (const chunk of item as AsyncIterable<Buffer>) {
          await writeFully(spool, chunk); // the spool is only appended to
          spooled += chunk.length;
        }
        extent.size = spooled - extent.offset;
        tree.put(components, { ...base, mode: goModeFromUnix(S_IFREG | permissions(header, 0o644)), size: extent.size }, extent, what);
        break;
      }
      case "directory":
        item.resume();
        tree.put(components, { ...base, mode: goModeFromUnix(S_IFDIR | permissions(header, 0o755)) }, undefined, what);
        break;
      case "symlink": {
        item.resume();
        const target = header.linkname ?? "";
        if (target === "") throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: symlink without a target`);
        if (target.startsWith("/")) {
          throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: symlink to the absolute path ${JSON.stringify(target)} is not allowed`);
        }
        const entry = { ...base, mode: goModeFromUnix(S_IFLNK | 0o777), size: Buffer.byteLength(target), linkname: target };
        tree.put(components, entry, undefined, what);
        break;
      }
      case "link": {
        item.resume();
        // A hard link: the same content as an earlier regular file, sent as a plain file.
        const targetName = header.linkname ?? "";
        const target = tree.find(rootedComponents(targetName, `${what} (hard link target)`));
        if (!target?.content || isDirectory(target.entry) || isSymlink(target.entry)) {
          throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: hard link to ${JSON.stringify(targetName)}, which is not an earlier regular file of the tarball`);
        }
        const { path: _targetPath, ...targetEntry } = target.entry;
        tree.put(components, targetEntry, target.content, what);
        break;
      }
      case "fifo":
        item.resume();
        tree.put(components, { ...base, mode: goModeFromUnix(S_IFIFO | permissions(header, 0o644)) }, undefined, what);
        break;
      case "character-device":
      case "block-device":
        throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: device nodes are not allowed in a context upload`);
      default:
        throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: unsupported entry type ${String(header.type)}`);
    }
  }
  await fed();
  if (entries === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", "tar upload: the tarball holds no entries");
  return tree;
}

/**
 * Passes the decompressed tarball on, refusing it (RESOURCE_EXHAUSTED) once
 * it is larger than `maxBytes` or, when it is compressed, once it has grown
 * more than `maxCompressionRatio` times the compressed bytes read so far.
 */
function expansionGuard(limits: Required<TarLimits>, compressedBytes: (() => number) | undefined): Transform {
  let expanded = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      expanded += chunk.length;
      if (expanded > limits.maxBytes) {
        return callback(new BuildKitNodeError("RESOURCE_EXHAUSTED", `tar upload: larger than ${formatBytes(limits.maxBytes)} once decompressed (tarLimits.maxBytes)`));
      }
      const compressed = compressedBytes?.();
      if (compressed !== undefined && expanded > RATIO_GRACE_BYTES && expanded > compressed * limits.maxCompressionRatio) {
        return callback(
          new BuildKitNodeError(
            "RESOURCE_EXHAUSTED",
            `tar upload: ${formatBytes(compressed)} of gzip expanded to more than ${formatBytes(expanded)}, over ${limits.maxCompressionRatio}× (tarLimits.maxCompressionRatio); a compression bomb?`,
          ),
        );
      }
      callback(null, chunk);
    },
  });
}

function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${+(n / 1024 ** 3).toFixed(1)} GiB`;
  if (n >= 1024 ** 2) return `${+(n / 1024 ** 2).toFixed(1)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

function definedOnly(limits: TarLimits): TarLimits {
  const out: TarLimits = {};
  if (limits.maxBytes !== undefined) out.maxBytes = limits.maxBytes;
  if (limits.maxCompressionRatio !== undefined) out.maxCompressionRatio = limits.maxCompressionRatio;
  if (limits.maxEntries !== undefined) out.maxEntries = limits.maxEntries;
  return out;
}

/** The metadata every entry kind shares; uid/gid are 0 as for local directories. */
function headerEntry(header: tar.Header, what: string): Omit<TreeEntry, "path" | "mode"> {
  return { size: 0, modTimeNs: modTimeNs(header, what), linkname: "", uid: 0, gid: 0 };
}

function permissions(header: tar.Header, fallback: number): number {
  return header.mode === undefined ? fallback : header.mode & 0o7777;
}

/** The pax `mtime` record keeps sub-second precision; the ustar field has seconds. */
function modTimeNs(header: tar.Header, what: string): bigint {
  const pax = (header as { pax?: Record<string, string> | null }).pax;
  const record = pax?.mtime;
  if (record !== undefined) {
    const match = /^(-?)(\d+)(?:\.(\d{1,9})\d*)?$/.exec(record);
    if (!match) throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: bad pax mtime ${JSON.stringify(record)}`);
    const ns = BigInt(match[2]!) * 1_000_000_000n + BigInt((match[3] ?? "").padEnd(9, "0"));
    return match[1] === "-" ? -ns : ns;
  }
  const ms = header.mtime?.getTime() ?? 0;
  return Number.isFinite(ms) ? BigInt(Math.trunc(ms)) * 1_000_000n : 0n;
}

/**
 * Peeks at the first two bytes: 1f 8b means gzip. `compressedBytes` counts
 * what has been read of the input so far.
 */
async function gunzippedIfNeeded(input: Readable): Promise<{ stream: Readable; gzipped: boolean; empty: boolean; compressedBytes: () => number }> {
  const iterator = (input as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let headLength = 0;
  let done = false;
  while (headLength < 2) {
    const next = await iterator.next();
    if (next.done) {
      done = true;
      break;
    }
    const chunk = typeof next.value === "string" ? Buffer.from(next.value) : next.value;
    head.push(chunk);
    headLength += chunk.length;
  }
  const first = Buffer.concat(head);
  const gzipped = first.length >= 2 && first[0] === 0x1f && first[1] === 0x8b;
  let read = first.length;
  async function* rest(): AsyncGenerator<Buffer> {
    if (first.length > 0) yield first;
    if (done) return;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      const chunk = typeof next.value === "string" ? Buffer.from(next.value) : next.value;
      read += chunk.length;
      yield chunk;
    }
  }
  return { stream: Readable.from(rest(), { objectMode: false }), gzipped, empty: first.length === 0, compressedBytes: () => read };
}

/**
 * Every symlink must lead somewhere inside the root, resolving its target
 * from the link's directory and following symlinks met on the way (a link
 * to `.` would otherwise let `link/..` climb out). Dangling targets are fine.
 */
function checkSymlinks(tree: EntryTree<SpoolExtent>): void {
  for (const node of tree.nodes()) {
    if (!isSymlink(node.entry)) continue;
    const dir = node.entry.path.split("/").slice(0, -1);
    if (!resolvesInside(tree, dir, node.entry.linkname, 0)) {
      throw new BuildKitNodeError(
        "INVALID_ARGUMENT",
        `tar entry ${JSON.stringify(node.entry.path)}: symlink to ${JSON.stringify(node.entry.linkname)} leads outside the root`,
      );
    }
  }
}

/** Whether `target`, taken from directory `from` (components), stays inside the tree. */
function resolvesInside(tree: EntryTree<SpoolExtent>, from: string[], target: string, hops: number): boolean {
  if (target.startsWith("/")) return false;
  if (hops > MAX_SYMLINK_HOPS) return true; // a loop: it never resolves, so it cannot leave
  const at = [...from];
  const parts = target.split("/").filter((p) => p !== "" && p !== ".");
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === "..") {
      if (at.length === 0) return false;
      at.pop();
      continue;
    }
    at.push(part);
    const node: TreeNode<SpoolExtent> | undefined = tree.find(at);
    if (node && isSymlink(node.entry)) {
      // Continue from wherever that link leads, with the rest of our path.
      const rest = parts.slice(i + 1).join("/");
      const next = rest === "" ? node.entry.linkname : `${node.entry.linkname}/${rest}`;
      return resolvesInside(tree, at.slice(0, -1), next, hops + 1);
    }
    if (!node) {
      // Dangling from here on: what is left is taken lexically.
      return lexicallyInside(at, parts.slice(i + 1));
    }
  }
  return true;
}

function lexicallyInside(at: string[], rest: string[]): boolean {
  let depth = at.length;
  for (const part of rest) {
    depth += part === ".." ? -1 : 1;
    if (depth < 0) return false;
  }
  return true;
}
