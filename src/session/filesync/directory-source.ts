// A local directory, read the way fsutil reads one: lstat only (symlinks are
// reported with their raw target and never followed, so nothing outside the
// root is read), Go file modes, uid/gid reset to 0 as the Go client does
// (they go into the daemon's content checksum, so cache keys then match).
import { type BigIntStats } from "node:fs";
import * as fsCallbacks from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { BuildKitNodeError } from "../../errors.js";
import { errnoCode } from "../errno-code.js";
import { goModeFromUnix, GoMode } from "../fsutil/file-mode.js";
import { closeSoon, openForReading, type ReadBufferPool, readChunks } from "./file-reads.js";
import type { TreeEntry, TreeSource } from "./tree-source.js";
import { assertTreePath, joinPath, sortByUtf8 } from "./tree-path.js";

/**
 * lstat calls in flight while listing one directory: the thread pool runs
 * four at a time, the rest wait there rather than behind a round trip.
 */
const LSTAT_CONCURRENCY = 64;

/**
 * The directory at `root` (a symlink as the root itself is resolved, as Go's
 * fsutil does). Rejects with INVALID_ARGUMENT if it is missing or not a
 * directory.
 *
 * Sockets are left out. Hard links are sent as separate regular files
 * (fsutil would send later links as links to the first; the content is the
 * same, this is simply simpler).
 */
export async function directorySource(root: string): Promise<TreeSource> {
  const absolute = path.resolve(root);
  let real: string;
  try {
    real = await fs.realpath(absolute);
  } catch (err) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `directory ${absolute} does not exist or cannot be read: ${errorText(err)}`, { cause: err });
  }
  const rootStat = await fs.stat(real);
  if (!rootStat.isDirectory()) throw new BuildKitNodeError("INVALID_ARGUMENT", `${absolute} is not a directory`);

  const description = `directory ${absolute}`;
  const hostPath = (relative: string) => {
    assertTreePath(relative);
    return relative === "" ? real : path.join(real, relative);
  };

  return {
    description,

    async list(dir: string): Promise<TreeEntry[]> {
      let dirPath: string;
      let names: string[];
      try {
        dirPath = hostPath(dir);
        names = await fs.readdir(dirPath);
      } catch (err) {
        // Gone since it was listed: skip it, as fsutil does.
        if (isErrno(err, "ENOENT", "ENOTDIR")) return [];
        throw accessError(err, `list ${dir || "."}`);
      }
      const sorted = sortByUtf8(names, (name) => name);
      // A name read from the directory is one clean component: only `dir` needed checking.
      const entries = await mapLimited(sorted, LSTAT_CONCURRENCY, (name) => statEntry(joinPath(dir, name), path.join(dirPath, name)));
      return entries.filter((entry): entry is TreeEntry => entry !== undefined);
    },

    async stat(relative: string): Promise<TreeEntry | undefined> {
      return statEntry(relative, hostPath(relative));
    },

    /** Opens at once (a file that cannot be opened rejects here, not while it is read); read it to the end or stop early to close it. */
    async open(relative: string, expectedSize = 0, pool?: ReadBufferPool): Promise<AsyncIterable<Uint8Array>> {
      const fd = await openForReading(hostPath(relative));
      return readThenClose(fd, expectedSize, pool);
    },

    async close(): Promise<void> {},
  };

  /** A failed listing or lstat: PERMISSION_DENIED when access was refused, else UNKNOWN. */
  function accessError(err: unknown, action: string): BuildKitNodeError {
    const code = isErrno(err, "EACCES", "EPERM") ? "PERMISSION_DENIED" : "UNKNOWN";
    return new BuildKitNodeError(code, `${description}: cannot ${action}: ${errorText(err)}`, { cause: err });
  }

  /** The entry at `relative` (`file` on the host), or undefined if it is absent or a socket. */
  async function statEntry(relative: string, file: string): Promise<TreeEntry | undefined> {
    let stats: BigIntStats;
    try {
      stats = await lstat(file);
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR")) return undefined;
      // EACCES here: a directory we may list but not search, whose entries cannot be read.
      throw accessError(err, `stat ${relative}`);
    }
    if (stats.isSocket()) return undefined;
    const mode = goModeFromUnix(Number(stats.mode));
    const entry: TreeEntry = {
      path: relative,
      mode,
      size: stats.isDirectory() ? 0 : Number(stats.size),
      modTimeNs: stats.mtimeNs,
      linkname: stats.isSymbolicLink() ? await fs.readlink(file) : "",
      uid: 0,
      gid: 0,
    };
    if (mode & GoMode.Device) {
      // fsutil's encoding of Linux device numbers.
      const rdev = stats.rdev;
      entry.devmajor = Number((rdev >> 8n) & 0xfffn);
      entry.devminor = Number((rdev & 0xffn) | ((rdev >> 12n) & 0xfff00n));
    }
    return entry;
  }
}

async function* readThenClose(fd: number, expectedSize: number, pool: ReadBufferPool | undefined): AsyncGenerator<Uint8Array> {
  try {
    yield* readChunks(fd, { position: null, expectedSize, pool });
  } finally {
    closeSoon(fd);
  }
}

/** lstat with nanosecond times (fsutil sends them), through a callback: no promise machinery per entry. */
function lstat(file: string): Promise<BigIntStats> {
  return new Promise((resolve, reject) => fsCallbacks.lstat(file, { bigint: true }, (err, stats) => (err ? reject(err) : resolve(stats))));
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  const code = errnoCode(err);
  return code !== undefined && codes.includes(code);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps with at most `limit` calls in flight, keeping the order of `items`. */
async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
