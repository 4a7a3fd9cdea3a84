// Reading files for the sender with as few thread-pool round trips as the
// work allows. Each fs call is one hop to libuv's thread pool and back, and
// per small file those hops are most of the cost: a file whose size the
// listing gave is read with one read into a buffer of that size (plus one
// byte, to see it did not grow), so open, read and close are all it takes.
// Callbacks rather than fs/promises: no FileHandle or stream per file.
import * as fs from "node:fs";

/** The largest piece read at once (and held per file in flight). */
export const READ_CHUNK = 1024 * 1024;

export function openForReading(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    // O_NOFOLLOW: a file swapped for a symlink since the listing is not followed.
    fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW, (err, fd) => (err ? reject(err) : resolve(fd)));
  });
}

function read(fd: number, buffer: Buffer, position: number | null): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buffer, 0, buffer.length, position, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
  });
}

/** Closes without waiting; a failed close of a file only read from loses nothing. */
export function closeSoon(fd: number): void {
  fs.close(fd, () => {});
}

export interface ReadRange {
  /** Where to start, or null for the descriptor's current position. */
  position: number | null;
  /** The size the listing gave: reading stops there unless the file turns out longer. */
  expectedSize: number;
  /** Stop after this many bytes (a range inside a larger file); default: at end of file. */
  limit?: number;
}

/**
 * The bytes of `fd` in chunks of at most READ_CHUNK, each in a buffer of its
 * own that the caller may keep. A file that is `expectedSize` long takes
 * ceil(size / READ_CHUNK) reads, with no extra read to find its end.
 */
export async function* readChunks(fd: number, range: ReadRange): AsyncGenerator<Buffer> {
  let position = range.position;
  const limit = range.limit ?? Number.POSITIVE_INFINITY;
  let total = 0;
  while (total < limit) {
    // One byte past the expected end tells a file that grew from one that did not.
    const wanted = Math.min(READ_CHUNK, limit - total, Math.max(range.expectedSize - total + 1, 1));
    const buffer = Buffer.allocUnsafe(wanted);
    const n = await read(fd, buffer, position);
    if (n === 0) return;
    total += n;
    if (position !== null) position += n;
    yield n === wanted ? buffer : buffer.subarray(0, n);
    // A short read that ends where the listing said the file ends is its end.
    if (n < wanted && total === range.expectedSize) return;
  }
}
