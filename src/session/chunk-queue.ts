// Bytes that arrive in chunks and leave in pieces of a size the reader
// decides (frames, messages): a piece inside one chunk is a view of it, and
// one that spans chunks is the only thing copied.

const EMPTY = Buffer.alloc(0);

export class ChunkQueue {
  #chunks: Buffer[] = [];
  #head = 0;
  #length = 0;

  /** Bytes queued. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The first `n` bytes, left queued. */
  peek(n: number): Buffer {
    const first = this.#chunks[this.#head];
    if (first && first.length >= n) return first.subarray(0, n);
    return this.#gather(n, false);
  }

  /** Removes and returns the first `n` bytes (at most `length`). */
  take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.#chunks[this.#head]!;
    if (first.length > n) {
      this.#chunks[this.#head] = first.subarray(n);
      this.#length -= n;
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.#shift();
      this.#length -= n;
      return first;
    }
    return this.#gather(n, true);
  }

  /** Drops everything queued. */
  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#length = 0;
  }

  #gather(n: number, consume: boolean): Buffer {
    const parts: Buffer[] = [];
    let got = 0;
    let index = this.#head;
    while (got < n && index < this.#chunks.length) {
      const chunk = this.#chunks[index]!;
      const wanted = n - got;
      if (chunk.length <= wanted) {
        parts.push(chunk);
        got += chunk.length;
        index++;
      } else {
        parts.push(chunk.subarray(0, wanted));
        got += wanted;
        if (consume) this.#chunks[index] = chunk.subarray(wanted);
      }
    }
    if (consume) {
      this.#length -= got;
      this.#head = index;
      this.#compact();
    }
    return Buffer.concat(parts, got);
  }

  #shift(): void {
    this.#head++;
    this.#compact();
  }

  /** Drops consumed slots now and then rather than shifting the array on every chunk. */
  #compact(): void {
    if (this.#head > 64 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}
