// gRPC's message framing on an HTTP/2 stream: each message is a 1-byte
// compressed flag, a 4-byte big-endian length, then the message.
import { ChunkQueue } from "./chunk-queue.js";

/** Bytes of a message's prefix. */
export const FRAME_PREFIX_BYTES = 5;

/** A message as framed on the wire. */
export interface FramedMessage {
  bytes: Buffer;
  compressed: boolean;
}

/** A length prefix above the reader's limit, met before anything of that message is buffered. */
class MessageTooLargeError extends Error {
  override name = "MessageTooLargeError";
  constructor(
    readonly length: number,
    readonly limit: number,
  ) {
    super(`received message larger than max (${length} vs. ${limit})`);
  }
}

/**
 * Cuts a stream's chunks into messages. Chunks are kept apart until a whole
 * message is there (joining each 16 KiB frame onto the rest would copy a
 * 3 MiB message hundreds of times), and a message inside one chunk is a view
 * of it, not a copy.
 */
export class GrpcFrameReader {
  readonly #queue = new ChunkQueue();
  /** The body being waited for, once its prefix is read. */
  #body: { length: number; compressed: boolean } | undefined;
  /**
   * A prefix over the limit, once met: the stream cannot go on (nothing after
   * it can be framed), but the messages before it were whole.
   */
  failure: MessageTooLargeError | undefined;

  constructor(private readonly maxMessageBytes: number) {}

  /** Whether bytes of an unfinished message are held (a stream ending now is truncated). */
  get partial(): boolean {
    return this.#queue.length > 0 || this.#body !== undefined;
  }

  /** The messages `chunk` completes, in order; none once `failure` is set. */
  push(chunk: Buffer): FramedMessage[] {
    const messages: FramedMessage[] = [];
    if (this.failure) return messages;
    const queue = this.#queue;
    queue.push(chunk);
    for (;;) {
      if (!this.#body) {
        if (queue.length < FRAME_PREFIX_BYTES) break;
        const prefix = queue.take(FRAME_PREFIX_BYTES);
        const length = prefix.readUInt32BE(1);
        if (length > this.maxMessageBytes) {
          this.failure = new MessageTooLargeError(length, this.maxMessageBytes);
          queue.clear();
          break;
        }
        this.#body = { length, compressed: prefix[0] === 1 };
      }
      if (queue.length < this.#body.length) break;
      messages.push({ bytes: queue.take(this.#body.length), compressed: this.#body.compressed });
      this.#body = undefined;
    }
    return messages;
  }
}

/** Writes the prefix of an uncompressed message of `length` bytes at `offset`; returns the offset after it. */
export function writeFramePrefix(target: Buffer, offset: number, length: number): number {
  target[offset] = 0; // not compressed
  target.writeUInt32BE(length, offset + 1);
  return offset + FRAME_PREFIX_BYTES;
}

/** The prefix of an uncompressed message of `length` bytes. */
export function framePrefix(length: number): Buffer {
  const prefix = Buffer.allocUnsafe(FRAME_PREFIX_BYTES);
  writeFramePrefix(prefix, 0, length);
  return prefix;
}
