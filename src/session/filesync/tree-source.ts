// What the FileSync sender walks: a directory tree from somewhere (a local
// directory, an uploaded tarball, files held in memory), described the way
// fsutil describes entries on the wire.

import type { ReadBufferPool } from "./file-reads.js";

/** One entry of a tree, as fsutil's Stat describes it. */
export interface TreeEntry {
  /** Relative, '/'-separated, no leading './' or '/'. */
  path: string;
  /** Go os.FileMode bits (see fsutil/file-mode.ts), not a unix st_mode. */
  mode: number;
  /** Bytes for regular files, target length for symlinks, 0 for directories. */
  size: number;
  /** Modification time, nanoseconds since the Unix epoch. */
  modTimeNs: bigint;
  /** Symlink target as stored (never resolved), or ''. */
  linkname: string;
  uid: number;
  gid: number;
  devmajor?: number;
  devminor?: number;
}

export interface TreeSource {
  /** For errors and logs, e.g. `directory /app` or `tar upload`. */
  readonly description: string;
  /** Entries directly inside `dir` ("" = root), sorted by UTF-8 byte order, never "." or "..". */
  list(dir: string): Promise<TreeEntry[]>;
  /** lstat-like lookup of one path ("" = the root), undefined if absent. */
  stat(path: string): Promise<TreeEntry | undefined>;
  /**
   * Content of a regular file, streamed (never the whole file in memory),
   * in chunks the caller may keep. `expectedSize` is the size the listing
   * gave, a hint that lets a small file be read in one go. With `pool`,
   * large chunks are read into its buffers, which the caller releases to it
   * once done with them.
   */
  open(path: string, expectedSize?: number, pool?: ReadBufferPool): Promise<AsyncIterable<Uint8Array>> | AsyncIterable<Uint8Array>;
  /** Releases what the source holds (temporary files). */
  close(): Promise<void>;
}

export { directorySource } from "./directory-source.js";
export { tarSource, type TarSourceOptions } from "./tar-source.js";
export { memorySource, type MemorySourceOptions } from "./memory-source.js";
