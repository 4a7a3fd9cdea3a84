import * as http2 from "node:http2";
import type { Duplex } from "node:stream";
import { gunzipSync } from "node:zlib";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { createLogger } from "../log.js";

const log = createLogger("session");

/** gRPC status codes the session answers with. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
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
  /** The daemon's messages, until it half-closes. One consumer. */
  messages(): AsyncIterable<Uint8Array>;
  /** Sends one message; resolves when it may be followed by another (backpressure). */
  send(message: Uint8Array): Promise<void>;
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
  stream.on("close", () => controller.abort(new Error(`${method}: call closed`)));
  stream.on("error", (err) => log(`${method}: ${err.message}`));
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });

  const finish = (code: number, message: string) => {
    if (stream.closed || stream.destroyed) return;
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

  const gzipped = metadata.get("grpc-encoding")?.[0] === "gzip";
  let consumed = false;
  const call: ServerCall = {
    method,
    metadata,
    signal: controller.signal,
    messages() {
      if (consumed) throw new Error(`${method}: messages() may be consumed once`);
      consumed = true;
      return readMessages(stream, gzipped);
    },
    send(message) {
      return writeMessage(stream, message);
    },
  };
  handler(call).then(
    () => {
      if (!consumed) stream.resume(); // the daemon's half of the call must end too
      finish(GrpcCode.OK, "");
    },
    (err: unknown) => {
      const status = err instanceof GrpcStatusError ? err : new GrpcStatusError(GrpcCode.UNKNOWN, err instanceof Error ? err.message : String(err));
      if (!controller.signal.aborted) log(`${method} failed: ${status.message}`);
      if (!consumed) stream.resume();
      finish(status.code, status.message);
    },
  );
}

/** Splits the request body into gRPC messages (5-byte prefix: flag, length). */
async function* readMessages(stream: http2.ServerHttp2Stream, gzipped: boolean): AsyncGenerator<Uint8Array> {
  // Chunks are kept apart until a whole message is there: joining each
  // 16 KiB frame onto the rest would copy a 3 MiB message hundreds of times.
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  let needed = 5; // bytes the next step waits for: a prefix, then a body
  let body: { length: number; compressed: boolean } | undefined;
  const take = (n: number): Buffer => {
    const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending.length = 0;
    if (all.length > n) pending.push(all.subarray(n));
    pendingBytes = all.length - n;
    return all.subarray(0, n);
  };
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    pending.push(chunk);
    pendingBytes += chunk.length;
    while (pendingBytes >= needed) {
      if (!body) {
        const prefix = take(5);
        body = { length: prefix.readUInt32BE(1), compressed: prefix[0] === 1 };
        needed = body.length;
        if (body.compressed && !gzipped) throw new GrpcStatusError(GrpcCode.INTERNAL, "compressed message without grpc-encoding");
        continue;
      }
      const message = take(body.length);
      const compressed = body.compressed;
      body = undefined;
      needed = 5;
      yield compressed ? gunzipSync(message) : message;
    }
  }
  // A reset (the daemon cancelled) also ends the iteration; it must not pass
  // for the end of the daemon's messages. Node records the reset code before
  // it ends the readable side.
  if (stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
    throw new GrpcStatusError(GrpcCode.CANCELLED, "the daemon cancelled the call");
  }
  if (pendingBytes > 0 || body) throw new GrpcStatusError(GrpcCode.INTERNAL, "truncated gRPC message");
}

function writeMessage(stream: http2.ServerHttp2Stream, message: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.destroyed || stream.closed) return reject(new Error("the call is closed"));
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(message.length, 1);
    stream.write(prefix);
    if (stream.write(message)) return resolve();
    const onDrain = () => {
      stream.off("close", onClose);
      resolve();
    };
    const onClose = () => {
      stream.off("drain", onDrain);
      reject(new Error("the call closed while sending"));
    };
    stream.once("drain", onDrain);
    stream.once("close", onClose);
  });
}
