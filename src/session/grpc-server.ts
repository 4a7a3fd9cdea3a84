import * as http2 from "node:http2";
import type { Duplex } from "node:stream";
import { gunzip } from "node:zlib";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { createLogger } from "../log.js";
import { framePrefix, GrpcFrameReader } from "./grpc-frames.js";

const log = createLogger("session");

/** gRPC status codes the session answers with. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** Thrown by a handler to end its call with this status (and message). */
export class GrpcStatusError extends Error {
  override name = "GrpcStatusError";
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * One call the daemon makes to us. Messages are raw protobuf bytes; the
 * typed helpers below decode them.
 */
export interface ServerCall {
  /** e.g. `/moby.filesync.v1.FileSync/DiffCopy`. */
  readonly method: string;
  /**
   * Request metadata, lower-cased keys, each repeated header field kept as
   * its own value (Node joins them with ", " elsewhere; patterns may contain
   * ", ").
   */
  readonly metadata: ReadonlyMap<string, readonly string[]>;
  /** Aborted when the daemon cancels the call or the session ends. */
  readonly signal: AbortSignal;
  /** The daemon's messages, until it half-closes. One consumer (of this or messageBatches()). */
  messages(): AsyncIterable<Uint8Array>;
  /** The same messages, as many at a time as have arrived whole: one wait per batch, not per message. */
  messageBatches(): AsyncIterable<Uint8Array[]>;
  /** Sends one message; resolves when it may be followed by another (backpressure). */
  send(message: Uint8Array): Promise<void>;
  /**
   * Writes messages already framed (a MessageBatch's segments) in one write.
   * Returns undefined when more may be written at once, else a promise that
   * settles when the call takes more (rejected if it closes first).
   */
  write(framed: Uint8Array[]): Promise<void> | undefined;
}

/** Serves one call; resolving ends it with OK, throwing with the error's status. */
export type Handler = (call: ServerCall) => Promise<void>;

/** Methods by full path, as attachables provide them. */
export type Routes = ReadonlyMap<string, Handler>;

/** First value of a metadata key, if any. */
export function metadataValue(call: ServerCall, key: string): string | undefined {
  return call.metadata.get(key)?.[0];
}

/** A unary method: one request in, one response out. */
export function unary<I extends DescMessage, O extends DescMessage>(
  input: I,
  output: O,
  fn: (request: MessageShape<I>, call: ServerCall) => Promise<MessageShape<O>>,
): Handler {
  return async (call) => {
    let request: MessageShape<I> | undefined;
    for await (const bytes of call.messages()) request ??= fromBinary(input, bytes);
    if (!request) throw new GrpcStatusError(GrpcCode.INVALID_ARGUMENT, `${call.method}: no request message`);
    await call.send(toBinary(output, await fn(request, call)));
  };
}

/** Decodes a call's messages as `schema`. */
export async function* decodeMessages<S extends DescMessage>(call: ServerCall, schema: S): AsyncGenerator<MessageShape<S>> {
  for await (const bytes of call.messages()) yield fromBinary(schema, bytes);
}

/** Encodes and sends one message as `schema`. */
export function sendMessage<S extends DescMessage>(call: ServerCall, schema: S, message: MessageShape<S>): Promise<void> {
  return call.send(toBinary(schema, message));
}

/**
 * The largest message the session takes, as gRPC servers limit it (BuildKit
 * sends at most 16 MiB either way); a longer one ends the call with
 * RESOURCE_EXHAUSTED before any of it is buffered.
 */
export const MAX_RECEIVE_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * Serves gRPC over `connection`, a byte stream on which the peer (the
 * BuildKit daemon) is the HTTP/2 client. The HTTP/2 session is never closed
 * from our side while the connection lives: the daemon cannot redial a
 * session, so a GOAWAY or an idle close would kill the build.
 */
export function serveGrpc(connection: Duplex, routes: Routes): { session: http2.ServerHttp2Session; close(): void } {
  const session = http2.performServerHandshake(connection, {
    // The daemon's FileSend chunks reach 3 MiB; allow headroom.
    maxSessionMemory: 64,
    settings: { initialWindowSize: 4 * 1024 * 1024 },
  });
  session.on("error", (err) => log(`session connection: ${err.message}`));
  session.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
    const path = String(headers[":path"] ?? "");
    serveStream(stream, path, metadataOf(rawHeaders), routes.get(path));
  });
  return {
    session,
    close() {
      if (!session.destroyed) session.destroy();
    },
  };
}

/** Rebuilds metadata from the raw header list, keeping repeated fields apart. */
function metadataOf(rawHeaders: string[]): Map<string, string[]> {
  const metadata = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const key = rawHeaders[i]!.toLowerCase();
    if (key.startsWith(":")) continue;
    const list = metadata.get(key);
    if (list) list.push(rawHeaders[i + 1]!);
    else metadata.set(key, [rawHeaders[i + 1]!]);
  }
  return metadata;
}

function serveStream(stream: http2.ServerHttp2Stream, method: string, metadata: Map<string, string[]>, handler: Handler | undefined): void {
  const controller = new AbortController();
  let deadline: NodeJS.Timeout | undefined;
  stream.on("close", () => {
    clearTimeout(deadline);
    controller.abort(new Error(`${method}: call closed`));
  });
  stream.on("error", (err) => log(`${method}: ${err.message}`));
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });

  let finished = false;
  const finish = (code: number, message: string) => {
    if (finished || stream.closed || stream.destroyed) return;
    finished = true;
    clearTimeout(deadline);
    stream.once("wantTrailers", () => {
      const trailers: http2.OutgoingHttpHeaders = { "grpc-status": String(code) };
      if (message) trailers["grpc-message"] = encodeURIComponent(message);
      stream.sendTrailers(trailers);
    });
    stream.end();
  };
  if (!handler) {
    log(`unimplemented: ${method}`);
    stream.resume();
    return finish(GrpcCode.UNIMPLEMENTED, `unknown method ${method}`);
  }

  const timeoutMs = parseGrpcTimeout(metadata.get("grpc-timeout")?.[0]);
  if (timeoutMs !== undefined) {
    // The daemon's deadline: the handler is told to stop, the call ends as gRPC servers end it.
    deadline = setTimeout(() => {
      const status = new GrpcStatusError(GrpcCode.DEADLINE_EXCEEDED, `${method}: deadline exceeded`);
      finish(status.code, status.message);
      controller.abort(status);
    }, timeoutMs);
    deadline.unref();
  }

  const gzipped = metadata.get("grpc-encoding")?.[0] === "gzip";
  const writer = new FramedWriter(stream);
  let consumed = false;
  const batches = () => {
    if (consumed) throw new Error(`${method}: the messages may be consumed once`);
    consumed = true;
    return readMessageBatches(stream, gzipped);
  };
  const call: ServerCall = {
    method,
    metadata,
    signal: controller.signal,
    async *messages() {
      for await (const batch of batches()) yield* batch;
    },
    messageBatches: batches,
    send(message) {
      return writer.write([framePrefix(message.length), message]) ?? Promise.resolve();
    },
    write(framed) {
      return writer.write(framed);
    },
  };
  handler(call).then(
    () => {
      stream.resume(); // the daemon's half of the call must end too, read or not
      finish(GrpcCode.OK, "");
    },
    (err: unknown) => {
      const status = err instanceof GrpcStatusError ? err : new GrpcStatusError(GrpcCode.UNKNOWN, err instanceof Error ? err.message : String(err));
      if (!controller.signal.aborted) log(`${method} failed: ${status.message}`);
      stream.resume();
      finish(status.code, status.message);
    },
  );
}

/** The request body's messages, those that a chunk of the stream completes together at a time. */
async function* readMessageBatches(stream: http2.ServerHttp2Stream, gzipped: boolean): AsyncGenerator<Uint8Array[]> {
  const reader = new GrpcFrameReader(MAX_RECEIVE_MESSAGE_BYTES);
  // A consumer that stops early (a handler done at FIN) must not reset the call under its trailers.
  for await (const chunk of stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    const framed = reader.push(chunk);
    if (framed.some((m) => m.compressed)) {
      if (!gzipped) throw new GrpcStatusError(GrpcCode.INTERNAL, "compressed message without grpc-encoding");
      // Decompressed on the thread pool, bounded like a message on the wire.
      for (const m of framed) yield [m.compressed ? await gunzipBounded(m.bytes) : m.bytes];
    } else if (framed.length > 0) {
      yield framed.map((m) => m.bytes);
    }
    if (reader.failure) throw new GrpcStatusError(GrpcCode.RESOURCE_EXHAUSTED, reader.failure.message);
  }
  // A reset (the daemon cancelled) also ends the iteration; it must not pass
  // for the end of the daemon's messages. Node records the reset code before
  // it ends the readable side.
  if (stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
    throw new GrpcStatusError(GrpcCode.CANCELLED, "the daemon cancelled the call");
  }
  if (reader.partial) throw new GrpcStatusError(GrpcCode.INTERNAL, "truncated gRPC message");
}

function gunzipBounded(message: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    gunzip(message, { maxOutputLength: MAX_RECEIVE_MESSAGE_BYTES }, (err, inflated) => {
      if (!err) return resolve(inflated);
      if (err instanceof RangeError || (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
        return reject(new GrpcStatusError(GrpcCode.RESOURCE_EXHAUSTED, `received message larger than max (more than ${MAX_RECEIVE_MESSAGE_BYTES} decompressed)`));
      }
      reject(new GrpcStatusError(GrpcCode.INTERNAL, `cannot decompress a message: ${err.message}`));
    });
  });
}

/**
 * gRPC's `grpc-timeout` (at most 8 digits and a unit: H, M, S, m, u, n) in
 * milliseconds, capped to what a timer takes; undefined when absent or malformed.
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  const match = value === undefined ? null : /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!match) {
    if (value !== undefined) log(`ignoring a malformed grpc-timeout: ${JSON.stringify(value)}`);
    return undefined;
  }
  const perUnit: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
  return Math.min(Math.ceil(Number(match[1]) * perUnit[match[2]!]!), 2 ** 31 - 1);
}

/** Writes framed messages to one call, each batch in one go; one wait for 'drain' shared by every writer. */
class FramedWriter {
  #drained: Promise<void> | undefined;

  constructor(private readonly stream: http2.ServerHttp2Stream) {}

  /** Undefined when the call takes more at once; else a promise that settles on 'drain' (or rejects on close). */
  write(framed: Uint8Array[]): Promise<void> | undefined {
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return Promise.reject(new Error("the call is closed"));
    let ok = true;
    if (framed.length === 1) ok = stream.write(framed[0]);
    else {
      stream.cork();
      for (const segment of framed) ok = stream.write(segment);
      stream.uncork();
    }
    if (ok) return undefined;
    this.#drained ??= new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        stream.off("close", onClose);
        this.#drained = undefined;
        resolve();
      };
      const onClose = () => {
        stream.off("drain", onDrain);
        this.#drained = undefined;
        reject(new Error("the call closed while sending"));
      };
      stream.once("drain", onDrain);
      stream.once("close", onClose);
    });
    return this.#drained;
  }
}
