import { constants } from "node:fs";
import { type FileHandle, chmod, link, lstat, lutimes, mkdir, open, rm, symlink, unlink, utimes } from "node:fs/promises";
import * as path from "node:path";
import type { Stat } from "../../gen/fsutil/types/packet_pb.js";
import { createLogger } from "../../log.js";
import { GoMode, isRegularGoMode, unixModeFromGo } from "../fsutil/file-mode.js";
import { isCleanRelativePath, refusedEntry, WalkOrder } from "./entry-path.js";
import { writeFully } from "../write-fully.js";

const log = createLogger("filesend");

/** What `TreeWriter.add` did with an entry. */
export type EntryKind =
  /** A regular file, created empty: its content is to be requested. */
  | "file"
  | "directory"
  | "symlink"
  | "hardlink"
  /** A named pipe, device or other special file: not created. */
  | "skipped";

/** A regular file whose content is being written. */
export interface OpenFile {
  readonly stat: Stat;
  readonly handle: FileHandle;
}

/**
 * Writes the entries of an fsutil transfer into `root`, merging with what
 * is already there (buildctl's local exporter, mode=copy): an existing
 * directory is kept and written into; anything else at an entry's path —
 * including an existing directory where the entry is not one — is replaced.
 *
 * Safety: paths are checked by `WalkOrder` (clean, relative, inside a
 * directory this transfer created); files are created with O_EXCL and opened
 * with O_NOFOLLOW; symlink targets are stored as sent and never followed;
 * hard links may only point at regular files this transfer created.
 *
 * Not reproduced: ownership (the output belongs to the user receiving it, as
 * with buildctl, which maps uid/gid to its own), xattrs (Node has no API),
 * named pipes and devices (skipped; Node has no mkfifo/mknod).
 */
export class TreeWriter {
  private readonly order = new WalkOrder();
  /** Regular files created so far: the only valid hard-link targets. */
  private readonly regularFiles = new Set<string>();
  /** Set last: adding entries changes a directory's mtime, and a read-only mode would block them. */
  private readonly directories: { absolute: string; stat: Stat }[] = [];

  private constructor(private readonly root: string) {}

  /** Creates `dest` (and its parents) if needed. */
  static async create(dest: string): Promise<TreeWriter> {
    const root = path.resolve(dest);
    await mkdir(root, { recursive: true });
    return new TreeWriter(root);
  }

  /** Validates and creates one entry (a regular file is created empty). */
  async add(stat: Stat): Promise<EntryKind> {
    const mode = stat.mode >>> 0;
    const isDirectory = (mode & GoMode.Dir) !== 0;
    this.order.accept(stat.path, isDirectory);
    const absolute = this.absolute(stat.path);
    if (isDirectory) {
      await this.directory(absolute, stat);
      return "directory";
    }
    if (mode & GoMode.Symlink) {
      await removeExisting(absolute);
      await symlink(stat.linkname, absolute);
      const time = secondsFromNs(stat.modTime);
      await lutimes(absolute, time, time);
      return "symlink";
    }
    if (!isRegularGoMode(mode)) {
      log(`skipping special file ${stat.path} (mode 0x${mode.toString(16)})`);
      return "skipped";
    }
    if (stat.linkname !== "") {
      await this.hardLink(absolute, stat);
      return "hardlink";
    }
    await removeExisting(absolute);
    const handle = await open(absolute, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    await handle.close();
    this.regularFiles.add(stat.path);
    return "file";
  }

  /** Opens a file `add` created, to write its content. */
  async openFile(stat: Stat): Promise<OpenFile> {
    const handle = await open(this.absolute(stat.path), constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW);
    return { stat, handle };
  }

  /** Appends a chunk of content. */
  write(file: OpenFile, data: Uint8Array): Promise<void> {
    return writeFully(file.handle, data);
  }

  /** All content is written: sets mode and mtime, then closes (closes on failure too). */
  async completeFile(file: OpenFile): Promise<void> {
    try {
      await file.handle.chmod(permissions(file.stat));
      const time = secondsFromNs(file.stat.modTime);
      await file.handle.utimes(time, time);
    } finally {
      await file.handle.close();
    }
  }

  /** After the last file: sets directory modes and mtimes, deepest first. */
  async finish(): Promise<void> {
    for (let i = this.directories.length - 1; i >= 0; i--) {
      const { absolute, stat } = this.directories[i]!;
      await chmod(absolute, permissions(stat));
      const time = secondsFromNs(stat.modTime);
      await utimes(absolute, time, time);
    }
    this.directories.length = 0;
  }

  private async directory(absolute: string, stat: Stat): Promise<void> {
    const existing = await lstatOrUndefined(absolute);
    if (!existing?.isDirectory()) {
      if (existing) await unlink(absolute);
      // Owner-only until finish() applies the real mode.
      await mkdir(absolute, { mode: 0o700 });
    }
    this.directories.push({ absolute, stat });
  }

  private async hardLink(absolute: string, stat: Stat): Promise<void> {
    if (!isCleanRelativePath(stat.linkname) || !this.regularFiles.has(stat.linkname)) {
      throw refusedEntry(stat.path, `hard link to ${JSON.stringify(stat.linkname)}, which is not a file sent before it`);
    }
    await removeExisting(absolute);
    // Same inode as its target, whose own entry sets mode and mtime.
    await link(this.absolute(stat.linkname), absolute);
    this.regularFiles.add(stat.path);
  }

  private absolute(p: string): string {
    return path.join(this.root, ...p.split("/"));
  }
}

/** Go FileMode permission bits (with setuid, setgid, sticky) as a unix mode. */
function permissions(stat: Stat): number {
  return unixModeFromGo(stat.mode >>> 0) & 0o7777;
}

/**
 * fsutil's nanoseconds as the fractional seconds Node's utimes takes: split
 * before converting so the double keeps sub-microsecond precision.
 */
function secondsFromNs(ns: bigint): number {
  return Number(ns / 1_000_000_000n) + Number(ns % 1_000_000_000n) / 1e9;
}

async function lstatOrUndefined(absolute: string) {
  try {
    return await lstat(absolute);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Clears the way for a new non-directory entry; never follows a symlink. */
async function removeExisting(absolute: string): Promise<void> {
  const existing = await lstatOrUndefined(absolute);
  if (!existing) return;
  if (existing.isDirectory()) await rm(absolute, { recursive: true, force: true });
  else await unlink(absolute);
}
