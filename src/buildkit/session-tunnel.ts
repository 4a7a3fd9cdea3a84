import type { Client } from "@connectrpc/connect";
import { Duplex } from "node:stream";
import type { BytesMessage, Control } from "../gen/moby/buildkit/v1/control_pb.js";

export interface SessionTunnel {
  /** The byte stream the session's HTTP/2 server runs on. */
  readonly connection: Duplex;
  /** Settles when the daemon ends the Session call (rejects on failure). */
  readonly closed: Promise<void>;
}

/**
 * Bytes the session's HTTP/2 may write ahead of the call. Everything written
 * while one message is on its way goes out as the next message, so this is
 * also about the size of the tunnel's messages under load (BuildKit takes up
 * to 16 MiB).
 */
const OUTGOING_HIGH_WATER_MARK = 1024 * 1024;

/**
 * Opens `Control.Session` and exposes it as a byte stream: each
 * BytesMessage is an arbitrary slice of the daemon's HTTP/2 connection, in
 * either direction. Ending the stream's writable side half-closes the call,
 * which is how a session is ended once the solve is done.
 */
export function openSessionTunnel(
  control: Client<typeof Control>,
  headers: Record<string, string | string[]>,
  signal: AbortSignal,
): SessionTunnel {
  const connection = new TunnelConnection();
  const callHeaders = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) callHeaders.append(name, v);
  }
  const responses = control.session(connection.outgoing(), { headers: callHeaders, signal });
  const closed = connection.pumpIncoming(responses);
  closed.catch(() => {}); // observed by the build; never an unhandled rejection
  return { connection, closed };
}

/**
 * The session's side of the tunnel. Writes are gathered while the previous
 * message is being sent and leave as one message: HTTP/2 writes a frame in
 * pieces (and the session many small frames), and the call sends one
 * message at a time, so a message per write would cost a round of the call
 * per few KiB.
 */
class TunnelConnection extends Duplex {
  #queued: Buffer[] = [];
  #queuedBytes = 0;
  /** Write callbacks held back while the queue is over its mark. */
  #heldCallbacks: Array<() => void> = [];
  #ended = false;
  /** Wakes the outgoing iterator when something is queued or the side ends. */
  #wake: (() => void) | undefined;
  /** Wakes the incoming pump when the reader wants more. */
  #resume: (() => void) | undefined;

  constructor() {
    super({ allowHalfOpen: true, readableHighWaterMark: OUTGOING_HIGH_WATER_MARK });
  }

  /** What the call sends: all that was written since the last message, as one. */
  async *outgoing(): AsyncGenerator<{ data: Uint8Array }> {
    for (;;) {
      if (this.#queuedBytes === 0) {
        if (this.#ended || this.destroyed) return;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
        continue;
      }
      const data = this.#queued.length === 1 ? this.#queued[0]! : Buffer.concat(this.#queued, this.#queuedBytes);
      this.#queued = [];
      this.#queuedBytes = 0;
      for (const callback of this.#heldCallbacks.splice(0)) callback();
      yield { data };
    }
  }

  /** Pushes the daemon's messages to the readable side; settles when the call ends. */
  async pumpIncoming(responses: AsyncIterable<BytesMessage>): Promise<void> {
    try {
      for await (const message of responses) {
        if (!this.push(message.data) && !this.destroyed) await new Promise<void>((resolve) => (this.#resume = resolve));
      }
      this.push(null);
    } catch (err) {
      this.destroy(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  override _read(): void {
    const resume = this.#resume;
    this.#resume = undefined;
    resume?.();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#enqueue(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    for (let i = 0; i < chunks.length - 1; i++) this.#enqueue(chunks[i]!.chunk);
    this.#enqueue(chunks[chunks.length - 1]!.chunk, callback);
  }

  #enqueue(chunk: Buffer, callback?: () => void): void {
    this.#queued.push(chunk);
    this.#queuedBytes += chunk.length;
    if (callback) {
      if (this.#queuedBytes < OUTGOING_HIGH_WATER_MARK) callback();
      else this.#heldCallbacks.push(callback);
    }
    this.#wake?.();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#ended = true;
    this.#wake?.();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#ended = true;
    this.#queued = [];
    this.#queuedBytes = 0;
    this.#heldCallbacks = []; // never called: the writes are lost with the connection
    this.#wake?.();
    this.#resume?.();
    callback(err);
  }
}
