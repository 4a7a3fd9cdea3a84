import { Code, ConnectError } from "@connectrpc/connect";
import { AbortError, BuildKitNodeError, codeFromConnect, type ErrorCode, findCause, TransportError } from "../errors.js";
import type { ConnectionLoss } from "../transport/http2-connections.js";

/** What decides the error a failed daemon call becomes. */
export interface FailedCall {
  /** e.g. `ListWorkers on tcp://10.0.0.5:1234`. */
  what: string;
  address: string;
  /** The caller's signal: aborted means the caller gave up. */
  signal?: AbortSignal | undefined;
  /** When the call started (epoch ms). */
  since: number;
  /** The channel's last lost connection. */
  loss: ConnectionLoss | undefined;
}

/**
 * The one place a failed call gets its code, so that each code means one
 * thing whatever the timing:
 *
 * - the caller's signal aborted: AbortError (CANCELED), and only then;
 * - the connection failed (reset, closed, silent, not reachable): the
 *   TransportError saying so (UNAVAILABLE, TIMEOUT, TLS), never CANCELED;
 * - the daemon answered with a gRPC status: that status's code, with the
 *   daemon's message (a daemon that cancels a call on its own is UNAVAILABLE).
 */
export function callError(err: unknown, call: FailedCall): BuildKitNodeError {
  if (call.signal?.aborted) {
    if (err instanceof AbortError) return err;
    return new AbortError(`${call.what} was aborted`, { cause: call.signal.reason ?? err });
  }
  const transport = findCause(err, (e) => e instanceof TransportError);
  if (transport) return transport;
  if (err instanceof BuildKitNodeError) return err;
  if (!(err instanceof ConnectError)) return BuildKitNodeError.from(err, call.what);

  if (err.metadata.has("grpc-status")) {
    if (err.code === Code.Unavailable) return new TransportError("UNAVAILABLE", call.address, `${call.what}: ${err.rawMessage}`, { cause: err });
    if (err.code === Code.Canceled) {
      return new BuildKitNodeError("UNAVAILABLE", `${call.what}: the daemon canceled the call (${err.rawMessage})`, { cause: err });
    }
    const code = err.code === Code.Unknown ? (containerdCode(err.rawMessage) ?? "UNKNOWN") : codeFromConnect(err.code);
    return new BuildKitNodeError(code, `${call.what}: ${err.rawMessage}`, { cause: err });
  }
  // Failed on our side of the wire.
  if (err.code === Code.DeadlineExceeded) return new BuildKitNodeError("TIMEOUT", `${call.what}: ${err.rawMessage}`, { cause: err });
  if (err.code === Code.ResourceExhausted) return new BuildKitNodeError("RESOURCE_EXHAUSTED", `${call.what}: ${err.rawMessage}`, { cause: err });
  if (isConnectionFailure(err)) {
    // The connection's own record says why, when it broke during the call.
    if (call.loss && call.loss.at >= call.since) return call.loss.error;
    return new TransportError("UNAVAILABLE", call.address, `${call.what}: the connection to ${call.address} failed: ${err.rawMessage}`, { cause: err });
  }
  return new BuildKitNodeError(codeFromConnect(err.code), `${call.what}: ${err.rawMessage}`, { cause: err });
}

/**
 * BuildKit answers many refusals with gRPC's UNKNOWN but ends the message
 * with the text of containerd's error kind ("…: invalid argument"); those
 * texts are stable, so the kind is not lost.
 */
function containerdCode(message: string): ErrorCode | undefined {
  const kind = /: (invalid argument|not found|already exists|failed precondition|not implemented)$/.exec(message)?.[1];
  const codes: Record<string, ErrorCode> = {
    "invalid argument": "INVALID_ARGUMENT",
    "not found": "NOT_FOUND",
    "already exists": "ALREADY_EXISTS",
    "failed precondition": "FAILED_PRECONDITION",
    "not implemented": "UNIMPLEMENTED",
  };
  return kind === undefined ? undefined : codes[kind];
}

/**
 * Whether the daemon itself answered with a gRPC status (in trailers or a
 * trailers-only response), as opposed to a failure on our side of the wire.
 */
export function isDaemonAnswer(err: unknown): boolean {
  return err instanceof ConnectError && err.metadata.has("grpc-status");
}

/** What HTTP/2 and connect-es make of a broken stream or connection. */
function isConnectionFailure(err: ConnectError): boolean {
  return [Code.Canceled, Code.Aborted, Code.Unavailable, Code.Internal, Code.Unknown].includes(err.code);
}
