// gRPC messages laid out for one write. A sender that produces many small
// messages (fsutil STATs, small files' DATA) writes their protobuf bodies
// straight into shared chunks, each after its 5-byte gRPC prefix, instead of
// encoding each into its own buffer and writing it on its own; payloads that
// are large already (a file's content) are referenced, not copied.
import { FRAME_PREFIX_BYTES, writeFramePrefix } from "./grpc-frames.js";
import { writeVarint } from "./protobuf-wire.js";

/** Size of the chunks small messages are written into. */
const CHUNK_SIZE = 64 * 1024;
/** Payloads at least this long go out as their own segment instead of being copied. */
const ATTACH_THRESHOLD = 8 * 1024;

export class MessageBatch {
  #chunk: Buffer = Buffer.allocUnsafe(CHUNK_SIZE);
  /** Start of the bytes of #chunk not yet handed out as a segment. */
  #start = 0;
  #pos = 0;
  /** Bytes of the message being written that are still expected. */
  #remaining = 0;
  #segments: Uint8Array[] = [];
  #byteLength = 0;
  #messages = 0;

  /** Bytes in the batch (prefixes included). */
  get byteLength(): number {
    return this.#byteLength + (this.#pos - this.#start);
  }

  /** Messages in the batch. */
  get messages(): number {
    return this.#messages;
  }

  /**
   * Starts a message whose body is `length` bytes. The body is then written
   * with the methods below, exactly `length` bytes in all; the bytes written
   * other than by attach() are at most `length` minus what is attached.
   */
  begin(length: number, inlineLength: number = length): void {
    if (this.#remaining !== 0) throw new Error(`MessageBatch: the previous message lacks ${this.#remaining} bytes`);
    this.#ensure(FRAME_PREFIX_BYTES + inlineLength);
    this.#pos = writeFramePrefix(this.#chunk, this.#pos, length);
    this.#remaining = length;
    this.#messages++;
  }

  /** A protobuf varint of a non-negative number below 2^53. */
  varint(value: number): void {
    const start = this.#pos;
    this.#pos = writeVarint(this.#chunk, start, value);
    this.#remaining -= this.#pos - start;
  }

  /** A protobuf varint of a 64-bit two's complement value given as its halves (unsigned 32-bit each). */
  varint64(low: number, high: number): void {
    if (high === 0) return this.varint(low);
    const chunk = this.#chunk;
    let pos = this.#pos;
    const start = pos;
    // The low 28 bits, then 7 bits that straddle the halves, then the high bits.
    for (let i = 0; i < 4; i++) {
      chunk[pos++] = (low & 0x7f) | 0x80;
      low >>>= 7;
    }
    let byte = (low & 0x0f) | ((high & 0x07) << 4);
    high >>>= 3;
    while (high !== 0) {
      chunk[pos++] = byte | 0x80;
      byte = high & 0x7f;
      high >>>= 7;
    }
    chunk[pos++] = byte;
    this.#pos = pos;
    this.#remaining -= pos - start;
  }

  /** Bytes copied into the batch. */
  bytes(value: Uint8Array): void {
    this.#chunk.set(value, this.#pos);
    this.#pos += value.byteLength;
    this.#remaining -= value.byteLength;
  }

  /** A string as UTF-8; `byteLength` is Buffer.byteLength(value). */
  utf8(value: string, byteLength: number): void {
    this.#chunk.write(value, this.#pos, byteLength, "utf8");
    this.#pos += byteLength;
    this.#remaining -= byteLength;
  }

  /**
   * The rest of the message: copied when small, else referenced (the caller
   * must not change it until the batch is written).
   */
  tail(value: Uint8Array): void {
    if (value.byteLength !== this.#remaining) throw new Error(`MessageBatch: tail of ${value.byteLength} bytes where ${this.#remaining} remain`);
    if (value.byteLength < ATTACH_THRESHOLD && this.#pos + value.byteLength <= this.#chunk.length) return this.bytes(value);
    this.#cut();
    this.#segments.push(value);
    this.#byteLength += value.byteLength;
    this.#remaining = 0;
  }

  /**
   * Hands out what was written, in order, and empties the batch. The
   * segments are views of the batch's chunks (never written to again) and
   * the attached payloads.
   */
  take(): Uint8Array[] {
    if (this.#remaining !== 0) throw new Error(`MessageBatch: the last message lacks ${this.#remaining} bytes`);
    this.#cut();
    const segments = this.#segments;
    this.#segments = [];
    this.#byteLength = 0;
    this.#messages = 0;
    return segments;
  }

  /** Closes the current segment of the chunk (what follows goes after it). */
  #cut(): void {
    if (this.#pos === this.#start) return;
    this.#segments.push(this.#chunk.subarray(this.#start, this.#pos));
    this.#byteLength += this.#pos - this.#start;
    this.#start = this.#pos;
  }

  /** Room for `n` contiguous bytes; a new chunk when the current one is full. */
  #ensure(n: number): void {
    if (this.#pos + n <= this.#chunk.length) return;
    this.#cut();
    this.#chunk = Buffer.allocUnsafe(Math.max(CHUNK_SIZE, n));
    this.#start = 0;
    this.#pos = 0;
  }
}
