import { randomBytes } from "node:crypto";
import { type FileHandle, mkdir, open, rename, rm } from "node:fs/promises";
import * as path from "node:path";
import { finished } from "node:stream/promises";
import { BuildKitNodeError } from "../../errors.js";
import { BytesMessageSchema } from "../../gen/moby/filesync/v1/filesync_pb.js";
import { createLogger } from "../../log.js";
import { decodeMessages, type ServerCall } from "../grpc-server.js";
import { writeFully } from "../write-fully.js";

const log = createLogger("filesend");

/** Where archive chunks go: written one at a time, then committed or abandoned. */
interface ArchiveSink {
  write(chunk: Uint8Array): Promise<void>;
  /** All chunks are in: make the archive final. */
  commit(): Promise<void>;
  /** The transfer failed: release everything; never throws. */
  abort(reason: Error): Promise<void>;
}

/**
 * Receives one archive (tar, oci or docker exporter) the daemon streams as
 * BytesMessage chunks, without ever holding it in memory.
 *
 * - `dest` a path: parent directories are created; the bytes go to
 *   `<dest>.partial-<random>`, renamed to `dest` once the daemon has sent
 *   everything, and removed if the transfer fails or is cancelled.
 * - `dest` a writable stream: chunks are written with backpressure and the
 *   stream is ended on success. On failure or cancellation it is destroyed
 *   with the error (so a reader sees the archive is cut short).
 */
export async function receiveArchive(call: ServerCall, dest: string | NodeJS.WritableStream): Promise<{ bytes: number }> {
  const sink = typeof dest === "string" ? await fileSink(dest) : streamSink(dest, call.signal);
  let bytes = 0;
  // Not for-await: leaving that loop early (a failed write) would destroy
  // the HTTP/2 stream, and the daemon would see a reset instead of our error.
  const messages = decodeMessages(call, BytesMessageSchema);
  try {
    for (let next = await messages.next(); !next.done; next = await messages.next()) {
      const { data } = next.value;
      if (data.length === 0) continue;
      await sink.write(data);
      bytes += data.length;
    }
    // A cancel (reset) makes the messages throw rather than end, so the
    // archive is whole here.
    await sink.commit();
  } catch (err) {
    const error = call.signal.aborted ? cancelled() : asError(err);
    await sink.abort(error);
    throw error;
  }
  return { bytes };
}

function cancelled(): BuildKitNodeError {
  return new BuildKitNodeError("CANCELED", "the daemon cancelled the archive transfer");
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

async function fileSink(dest: string): Promise<ArchiveSink> {
  const target = path.resolve(dest);
  await mkdir(path.dirname(target), { recursive: true });
  const partial = `${target}.partial-${randomBytes(6).toString("hex")}`;
  const handle = await open(partial, "wx");
  let unclosed: FileHandle | undefined = handle;
  const close = async () => {
    const closing = unclosed;
    unclosed = undefined;
    await closing?.close();
  };
  return {
    write: (chunk) => writeFully(handle, chunk),
    async commit() {
      await close();
      await rename(partial, target);
    },
    async abort() {
      // The transfer's own error is what the caller sees; a failing cleanup
      // is logged rather than hiding it.
      await close().catch((err: unknown) => log(`closing ${partial}: ${asError(err).message}`));
      await rm(partial, { force: true }).catch((err: unknown) => log(`removing ${partial}: ${asError(err).message}`));
    },
  };
}

function streamSink(stream: NodeJS.WritableStream, signal: AbortSignal): ArchiveSink {
  // An error the stream emits between our writes is kept and raised at the
  // next write or at commit.
  let failure: Error | undefined;
  const onError = (err: Error) => {
    failure ??= err;
  };
  stream.on("error", onError);
  return {
    async write(chunk) {
      if (failure) throw failure;
      // A destroyed or ended stream would take the write without a word.
      if (isClosed(stream)) throw new Error("the output stream was closed before the archive was written");
      if (!stream.write(chunk)) await drained(stream, signal);
      if (failure) throw failure;
    },
    async commit() {
      if (failure) throw failure;
      stream.end();
      // `readable: false`: a Duplex (PassThrough) counts as done once its
      // writable side has finished, whether or not anyone reads it yet.
      await finished(stream, { readable: false, signal });
      stream.off("error", onError);
    },
    async abort(reason) {
      stream.off("error", onError);
      destroyWith(stream, reason);
    },
  };
}

/** Resolves on 'drain'; rejects if the stream errors or closes first, or the call is aborted. */
function drained(stream: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (err?: Error) => {
      stream.off("drain", onDrain);
      stream.off("error", onFailure);
      stream.off("close", onClose);
      signal.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onFailure = (err: Error) => settle(err);
    const onClose = () => settle(new Error("the output stream closed before the archive was written"));
    const onAbort = () => settle(cancelled());
    if (signal.aborted) return onAbort();
    stream.on("drain", onDrain);
    stream.on("error", onFailure);
    stream.on("close", onClose);
    signal.addEventListener("abort", onAbort);
  });
}

function isClosed(stream: NodeJS.WritableStream): boolean {
  const state = stream as { destroyed?: boolean; writableEnded?: boolean };
  return state.destroyed === true || state.writableEnded === true;
}

function destroyWith(stream: NodeJS.WritableStream, reason: Error): void {
  const destroy = (stream as { destroy?: (error?: Error) => void }).destroy;
  if (typeof destroy !== "function") return;
  // destroy(err) re-emits `reason` as an 'error' event. The caller gets the
  // same error from the transfer itself; this listener only keeps the echo
  // from crashing a process whose stream has no 'error' listener.
  stream.once("error", () => {});
  destroy.call(stream, reason);
}
