import type { Duplex } from "node:stream";
import { gunzip } from "node:zlib";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { createLogger } from "../log.js";
import { framePrefix, GrpcFrameReader } from "./grpc-frames.js";
import type { HeaderField } from "./http2/hpack.js";
import { Http2ServerConnection, type ServerStream, StreamResetError } from "./http2/server-connection.js";

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
   * settles when the call takes more (rejected if it closes first). `onSent`
   * is called once the segments are sent (or dropped): their buffers may
   * then be reused.
   */
  write(framed: Uint8Array[], onSent?: () => void): Promise<void> | undefined;
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
 * BuildKit daemon) is the HTTP/2 client. The HTTP/2 connection is never
 * closed from our side while it lives: the daemon cannot redial a session,
 * so a GOAWAY or an idle close would kill the build.
 */
export function serveGrpc(connection: Duplex, routes: Routes): { close(): void } {
  const server = new Http2ServerConnection(connection, {
    onStream(stream) {
      const path = stream.headers.find(([name]) => name === ":path")?.[1] ?? "";
      serveStream(stream, path, metadataOf(stream.headers), routes.get(path));
    },
    onError(err) {
      log(`session connection: ${err.message}`);
    },
  });
  return { close: () => server.close() };
}

/** Metadata from the request's header fields, repeated fields kept apart. */
function metadataOf(fields: readonly HeaderField[]): Map<string, string[]> {
  const metadata = new Map<string, string[]>();
  for (const [name, value] of fields) {
    if (name.startsWith(":")) continue;
    const key = name.toLowerCase();
    const list = metadata.get(key);
    if (list) list.push(value);
    else metadata.set(key, [value]);
  }
  return metadata;
}

function serveStream(stream: ServerStream, method: string, metadata: Map<string, string[]>, handler: Handler | undefined): void {
  const controller = new AbortController();
  let deadline: NodeJS.Timeout | undefined;
  const onClose = () => {
    clearTimeout(deadline);
    controller.abort(new Error(`${method}: call closed`));
  };
  if (stream.signal.aborted) onClose();
  else stream.signal.addEventListener("abort", onClose, { once: true });
  stream.respond([
    [":status", "200"],
    ["content-type", "application/grpc"],
  ]);

  let finished = false;
  const finish = (code: number, message: string) => {
    if (finished) return;
    finished = true;
    clearTimeout(deadline);
    // The daemon's half of the call must end too, read or not.
    stream.discardBody();
    const trailers: HeaderField[] = [["grpc-status", String(code)]];
    if (message) trailers.push(["grpc-message", encodeURIComponent(message)]);
    stream.end(trailers);
  };
  if (!handler) {
    log(`unimplemented: ${method}`);
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
      return stream.write([framePrefix(message.length), message]) ?? Promise.resolve();
    },
    write(framed, onSent) {
      return stream.write(framed, onSent);
    },
  };
  handler(call).then(
    () => finish(GrpcCode.OK, ""),
    (err: unknown) => {
      const status = err instanceof GrpcStatusError ? err : new GrpcStatusError(GrpcCode.UNKNOWN, err instanceof Error ? err.message : String(err));
      if (!controller.signal.aborted) log(`${method} failed: ${status.message}`);
      finish(status.code, status.message);
    },
  );
}

/** The request body's messages, those that a chunk of the stream completes together at a time. */
async function* readMessageBatches(stream: ServerStream, gzipped: boolean): AsyncGenerator<Uint8Array[]> {
  const reader = new GrpcFrameReader(MAX_RECEIVE_MESSAGE_BYTES);
  const body = stream.body[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<Buffer>;
    try {
      next = await body.next();
    } catch (err) {
      // A reset (the daemon cancelled) must not pass for the end of its messages.
      if (err instanceof StreamResetError) throw new GrpcStatusError(GrpcCode.CANCELLED, "the daemon cancelled the call");
      throw err;
    }
    if (next.done) break;
    const chunk = next.value;
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

const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const MS_PER_TIMEOUT_UNIT: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/**
 * gRPC's `grpc-timeout` (at most 8 digits and a unit: H, M, S, m, u, n) in
 * milliseconds, capped to what a timer takes; undefined when absent or malformed.
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  const match = value === undefined ? null : GRPC_TIMEOUT.exec(value);
  if (!match) {
    if (value !== undefined) log(`ignoring a malformed grpc-timeout: ${JSON.stringify(value)}`);
    return undefined;
  }
  return Math.min(Math.ceil(Number(match[1]) * MS_PER_TIMEOUT_UNIT[match[2]!]!), 2 ** 31 - 1);
}
