// The build session travels inside `Control.Session`, a bidi call of
// BytesMessage whose bytes are the daemon's HTTP/2 connection to our session
// server. Every byte of an upload crosses it, so the call is framed here
// rather than by the generic client: a message is a 5-byte gRPC prefix and a
// protobuf header of a few bytes written in front of the session's own
// writes, never a copy of them.
import * as http2 from "node:http2";
import { Duplex } from "node:stream";
import { BuildKitNodeError } from "../errors.js";
import { Control } from "../gen/moby/buildkit/v1/control_pb.js";
import { FRAME_PREFIX_BYTES, GrpcFrameReader, writeFramePrefix } from "../session/grpc-frames.js";
import { ProtobufWireError, readFields, writeVarint } from "../session/protobuf-wire.js";

/** Starts a call and hands over its HTTP/2 stream (see Channel.openStream). */
export type OpenStream = (path: string, headers: http2.OutgoingHttpHeaders) => Promise<http2.ClientHttp2Stream>;

export interface SessionTunnel {
  /** The byte stream the session's HTTP/2 server runs on. */
  readonly connection: Duplex;
  /** Settles when the daemon ends the Session call (rejects on failure). */
  readonly closed: Promise<void>;
}

const SESSION_PATH = `/${Control.typeName}/${Control.method.session.name}`;
/** BuildKit's message limit; the daemon's side of the session never sends more per message. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** The session's bytes per message at most (well under the daemon's 16 MiB). */
const MAX_SEND_BYTES = 4 * 1024 * 1024;
/** Bytes the session may write while the call is still sending earlier ones. */
const WRITE_AHEAD_BYTES = 1024 * 1024;
/** BytesMessage.data: field 1, length-delimited. */
const DATA_TAG = 0x0a;

/**
 * Opens `Control.Session` and exposes it as a byte stream: each
 * BytesMessage is an arbitrary slice of the daemon's HTTP/2 connection, in
 * either direction. Ending the stream's writable side half-closes the call,
 * which is how a session is ended once the solve is done.
 */
export function openSessionTunnel(openStream: OpenStream, headers: Record<string, string | string[]>, signal: AbortSignal | undefined): SessionTunnel {
  const requestHeaders: http2.OutgoingHttpHeaders = { ...headers, "content-type": "application/grpc", te: "trailers" };
  const connection = new TunnelConnection(openStream(SESSION_PATH, requestHeaders), signal);
  connection.callEnded.catch(() => {}); // observed by the build; never an unhandled rejection
  return { connection, closed: connection.callEnded };
}

class TunnelConnection extends Duplex {
  /** Settles when the call ends: resolved when the daemon ended it OK. */
  readonly callEnded: Promise<void>;
  #settle!: { resolve: () => void; reject: (err: Error) => void };
  #stream: http2.ClientHttp2Stream | undefined;
  /** Writes made before the call was open, with their callbacks. */
  #early: Array<{ chunks: Buffer[]; callback: (err?: Error | null) => void }> = [];
  #endRequested = false;
  readonly #reader = new GrpcFrameReader(MAX_MESSAGE_BYTES);
  #status: { code: number; message: string } | undefined;

  constructor(stream: Promise<http2.ClientHttp2Stream>, signal: AbortSignal | undefined) {
    // The session writes its frames in batches; a batch should not have to wait a turn for 'drain'.
    super({ allowHalfOpen: true, writableHighWaterMark: WRITE_AHEAD_BYTES });
    this.callEnded = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    if (signal) {
      const onAbort = () => this.destroy(new BuildKitNodeError("CANCELED", "the session call was aborted", { cause: signal.reason }));
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      const forget = () => signal.removeEventListener("abort", onAbort);
      this.callEnded.then(forget, forget);
    }
    stream.then(
      (opened) => this.#attach(opened),
      (err: unknown) => this.destroy(err instanceof Error ? err : new Error(String(err))),
    );
  }

  #attach(stream: http2.ClientHttp2Stream): void {
    if (this.destroyed) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    this.#stream = stream;
    stream.on("response", (headers) => {
      const status = headers[":status"];
      if (status !== 200) return this.destroy(new Error(`the session call was answered with HTTP ${status}`));
      // A trailers-only answer: the call failed before it started.
      if (headers["grpc-status"] !== undefined) this.#status = grpcStatusOf(headers);
    });
    stream.on("trailers", (trailers) => (this.#status = grpcStatusOf(trailers)));
    stream.on("data", (chunk: Buffer) => this.#receive(chunk));
    stream.on("end", () => {
      const status = this.#status;
      if (status && status.code !== 0) return this.destroy(new Error(`the session call ended: ${status.message || `gRPC status ${status.code}`}`));
      if (this.#reader.partial) return this.destroy(new Error("the session call ended inside a message"));
      this.push(null);
      this.#settle.resolve();
    });
    stream.on("error", (err) => this.destroy(err));
    stream.on("close", () => {
      if (!this.readableEnded) this.destroy(new Error(`the session call closed (HTTP/2 code ${stream.rstCode ?? "none"})`));
    });
    for (const { chunks, callback } of this.#early.splice(0)) this.#send(chunks, callback);
    if (this.#endRequested) stream.end();
  }

  /** The daemon's bytes, unwrapped from their BytesMessages. */
  #receive(chunk: Buffer): void {
    const framed = this.#reader.push(chunk);
    if (this.#reader.failure) return void this.destroy(this.#reader.failure);
    for (const { bytes, compressed } of framed) {
      if (compressed) return void this.destroy(new Error("the daemon sent a compressed session message unasked"));
      const data = bytesMessageData(bytes);
      if (data === undefined) return void this.destroy(new Error("the daemon sent a malformed session message"));
      if (data.length > 0 && !this.push(data)) this.#stream?.pause();
    }
  }

  override _read(): void {
    this.#stream?.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#send([chunk], callback);
  }

  /** HTTP/2 writes a frame in pieces; a batch of them is one message. */
  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    this.#send(
      chunks.map((c) => c.chunk),
      callback,
    );
  }

  /**
   * `chunks` as BytesMessages (one, unless they exceed a message's limit),
   * written without copying them. The callback waits until the call has sent
   * them (HTTP/2 holds the chunks until then): the session's writer may then
   * reuse its buffers, and what it writes meanwhile, up to the writable side's
   * high-water mark, goes out as the next message.
   */
  #send(chunks: Buffer[], callback: (err?: Error | null) => void): void {
    const stream = this.#stream;
    if (!stream) {
      this.#early.push({ chunks, callback });
      return;
    }
    if (stream.destroyed || stream.closed) return callback(new Error("the session call closed while sending"));
    const pieces = framed(chunks);
    if (pieces.length === 0) return callback(); // only empty chunks: nothing to send, and no write to wait for
    stream.cork();
    pieces.forEach((piece, i) => (i === pieces.length - 1 ? stream.write(piece, (err) => callback(err ?? null)) : stream.write(piece)));
    stream.uncork();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#endRequested = true;
    this.#stream?.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const stream = this.#stream;
    if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
    for (const { callback: early } of this.#early.splice(0)) early(err ?? new Error("the session ended"));
    if (err) this.#settle.reject(err);
    else this.#settle.resolve();
    callback(err);
  }
}

/**
 * `chunks` as messages of at most MAX_SEND_BYTES each: every message's
 * header, then its chunks (cut where a message is full), in order.
 */
function framed(chunks: Buffer[]): Buffer[] {
  const pieces: Buffer[] = [];
  /** Where the header of the message being filled goes, once its size is known. */
  let headerAt = -1;
  let size = 0;
  for (let chunk of chunks) {
    while (chunk.length > 0) {
      if (headerAt < 0) headerAt = pieces.push(EMPTY) - 1;
      const room = MAX_SEND_BYTES - size;
      const piece = chunk.length <= room ? chunk : chunk.subarray(0, room);
      pieces.push(piece);
      size += piece.length;
      chunk = piece === chunk ? EMPTY : chunk.subarray(room);
      if (size === MAX_SEND_BYTES) {
        pieces[headerAt] = messageHeader(size);
        headerAt = -1;
        size = 0;
      }
    }
  }
  if (headerAt >= 0) pieces[headerAt] = messageHeader(size);
  return pieces;
}

/** The gRPC prefix and the protobuf bytes before BytesMessage.data's `length` bytes. */
function messageHeader(length: number): Buffer {
  const header = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + 1 + 5);
  header[FRAME_PREFIX_BYTES] = DATA_TAG;
  const end = writeVarint(header, FRAME_PREFIX_BYTES + 1, length);
  writeFramePrefix(header, 0, end - FRAME_PREFIX_BYTES + length);
  return header.subarray(0, end);
}

/** BytesMessage.data of a message, or undefined if it is not one. */
function bytesMessageData(message: Buffer): Buffer | undefined {
  let data: Buffer = EMPTY;
  try {
    readFields(message, ignoreVarint, (fieldNumber, bytes) => {
      if (fieldNumber === 1) data = bytes as Buffer; // a view of `message`: a Buffer too
    });
  } catch (err) {
    if (err instanceof ProtobufWireError) return undefined;
    throw err;
  }
  return data;
}

const EMPTY = Buffer.alloc(0);
const ignoreVarint = () => {};

function grpcStatusOf(headers: http2.IncomingHttpHeaders): { code: number; message: string } {
  const raw = headers["grpc-message"];
  let message = typeof raw === "string" ? raw : "";
  try {
    message = decodeURIComponent(message);
  } catch {
    // not percent-encoded after all: keep it as it came
  }
  return { code: Number(headers["grpc-status"] ?? 2), message };
}
