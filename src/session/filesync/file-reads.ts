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

/** Reads at least this large go into pooled buffers when a pool is given. */
const POOLED_READ_MIN = 64 * 1024;

/**
 * READ_CHUNK buffers for one transfer's large reads, each reused once what
 * was read into it has been sent: a 1 GiB file then costs a few megabytes,
 * not a gigabyte of buffers left for the garbage collector. A reader waits
 * for a free buffer when all are out (which also bounds the bytes in flight).
 */
export class ReadBufferPool {
  readonly #free: Buffer[] = [];
  readonly #owned = new WeakMap<ArrayBufferLike, Buffer>();
  readonly #waiters: Array<{ resolve: (buffer: Buffer) => void; reject: (err: unknown) => void }> = [];
  #count = 0;

  constructor(
    private readonly max: number,
    private readonly signal: AbortSignal,
  ) {
    signal.addEventListener("abort", () => {
      for (const waiter of this.#waiters.splice(0)) waiter.reject(signal.reason);
    }, { once: true });
  }

  acquire(): Promise<Buffer> {
    if (this.signal.aborted) return Promise.reject(this.signal.reason);
    const free = this.#free.pop();
    if (free) return Promise.resolve(free);
    if (this.#count < this.max) {
      this.#count++;
      const buffer = Buffer.allocUnsafeSlow(READ_CHUNK);
      this.#owned.set(buffer.buffer, buffer);
      return Promise.resolve(buffer);
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Takes back the buffer `chunk` was read into; chunks from elsewhere are ignored. */
  release(chunk: Uint8Array): void {
    const buffer = this.#owned.get(chunk.buffer);
    if (!buffer) return;
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(buffer);
    else this.#free.push(buffer);
  }
}

export interface ReadRange {
  /** Where to start, or null for the descriptor's current position. */
  position: number | null;
  /** The size the listing gave: reading stops there unless the file turns out longer. */
  expectedSize: number;
  /** Stop after this many bytes (a range inside a larger file); default: at end of file. */
  limit?: number;
  /** Where large reads go (the consumer then releases each chunk to it); else fresh buffers. */
  pool?: ReadBufferPool | undefined;
}

/**
 * The bytes of `fd` in chunks of at most READ_CHUNK, each in a buffer of its
 * own that the caller may keep (or, with a pool, must release to it). A file
 * that is `expectedSize` long takes ceil(size / READ_CHUNK) reads, with no
 * extra read to find its end.
 */
export async function* readChunks(fd: number, range: ReadRange): AsyncGenerator<Buffer> {
  let position = range.position;
  const limit = range.limit ?? Number.POSITIVE_INFINITY;
  let total = 0;
  while (total < limit) {
    // One byte past the expected end tells a file that grew from one that did not.
    const wanted = Math.min(READ_CHUNK, limit - total, Math.max(range.expectedSize - total + 1, 1));
    const pooled = range.pool && wanted >= POOLED_READ_MIN ? await range.pool.acquire() : undefined;
    const buffer = pooled ? pooled.subarray(0, wanted) : Buffer.allocUnsafe(wanted);
    let n: number;
    try {
      n = await read(fd, buffer, position);
    } catch (err) {
      if (pooled) range.pool!.release(pooled);
      throw err;
    }
    if (n === 0) {
      if (pooled) range.pool!.release(pooled);
      return;
    }
    total += n;
    if (position !== null) position += n;
    yield n === wanted ? buffer : buffer.subarray(0, n);
    // A short read that ends where the listing said the file ends is its end.
    if (n < wanted && total === range.expectedSize) return;
  }
}
