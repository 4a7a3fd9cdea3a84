import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Stable error codes. Callers branch on `err.code`, never on the message.
 */
export type ErrorCode =
  /** Bad input from the caller: a malformed address, a missing option. */
  | "INVALID_ARGUMENT"
  /** The daemon or API could not be reached, or the connection broke. */
  | "UNAVAILABLE"
  /** TLS failed: untrusted or mismatched certificate, or a plaintext peer. */
  | "TLS"
  /** A deadline passed (connect timeout, acquire timeout). */
  | "TIMEOUT"
  /** Aborted through an AbortSignal or canceled by the peer. */
  | "CANCELED"
  /** The daemon does not have this call (e.g. Info on BuildKit < v0.11). */
  | "UNIMPLEMENTED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "UNAUTHENTICATED"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  /** The build itself failed; see BuildError. */
  | "BUILD_FAILED"
  | "INTERNAL"
  | "UNKNOWN";

/**
 * The base class of every error this library throws. `cause` keeps the
 * underlying error. Messages never contain secrets, tokens or private keys.
 */
export class BuildKitNodeError extends Error {
  override name = "BuildKitNodeError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /**
   * Wraps any thrown value, keeping an existing BuildKitNodeError as it is
   * and translating the codes of a ConnectError (what a gRPC call raises).
   */
  static from(err: unknown, context?: string): BuildKitNodeError {
    if (err instanceof BuildKitNodeError) return err;
    if (err instanceof ConnectError) {
      const message = context ? `${context}: ${err.rawMessage}` : err.rawMessage;
      return new BuildKitNodeError(codeFromConnect(err.code), message, { cause: err });
    }
    const text = err instanceof Error ? err.message : String(err);
    return new BuildKitNodeError("UNKNOWN", context ? `${context}: ${text}` : text, { cause: err });
  }
}

/**
 * Failing to reach or to keep a connection to a daemon. `address` is the
 * address as the caller gave it.
 */
export class TransportError extends BuildKitNodeError {
  override name = "TransportError";
  readonly address: string;

  constructor(code: ErrorCode, address: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.address = address;
  }
}

const connectCodes: Record<Code, ErrorCode> = {
  [Code.Canceled]: "CANCELED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "TIMEOUT",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "CANCELED",
  [Code.OutOfRange]: "INVALID_ARGUMENT",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "INTERNAL",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

export function codeFromConnect(code: Code): ErrorCode {
  return connectCodes[code];
}

/** Where in the Dockerfile a build failed. */
export interface BuildErrorSource {
  /** The Dockerfile's name as the frontend read it, e.g. `Dockerfile` or `build.Dockerfile`. */
  file: string;
  /** The failing instruction's first line (1-based). */
  line: number;
  /** Its last line: an instruction continued with `\` spans several. */
  endLine: number;
  /** The text of those lines, when the Dockerfile's text is known. */
  text: string | undefined;
  /**
   * The picture buildx prints: `Dockerfile:3`, a rule, the lines around with
   * `>>>` on the failing ones, a rule. The error's message starts with it.
   * Undefined when the Dockerfile's text is not known.
   */
  excerpt: string | undefined;
}

/**
 * A build that ran and failed: a step exited non-zero, the Dockerfile did
 * not parse, an export was refused. `step` names the failing vertex (e.g.
 * `[2/3] RUN make`), `logTail` holds its last lines of output and `source`
 * the Dockerfile lines it came from. The message reads as buildx prints the
 * error: the Dockerfile excerpt, then the error, then the step's last lines.
 */
export class BuildError extends BuildKitNodeError {
  override name = "BuildError";
  /** The failing vertex, when the daemon reported one. */
  readonly step: { digest: string; name: string } | undefined;
  readonly logTail: string[];
  /** A RUN step's exit code. */
  readonly exitCode: number | undefined;
  /** The Dockerfile line the error points at (1-based), when known: `source.line`. */
  readonly line: number | undefined;
  /**
   * Where in the Dockerfile, as the daemon reported it (BuildKit v0.9 and
   * later). dockerd 20.10's BuildKit v0.8 reports only a parse error's line,
   * in its message; then the text comes from the client's own copy of the
   * Dockerfile, when it has one (not for a tarball context).
   */
  readonly source: BuildErrorSource | undefined;
  /** The daemon's own error text. */
  readonly daemonMessage: string;

  constructor(details: {
    message: string;
    daemonMessage: string;
    step?: { digest: string; name: string };
    logTail?: string[];
    exitCode?: number;
    source?: BuildErrorSource;
    cause?: unknown;
  }) {
    super("BUILD_FAILED", details.message, { cause: details.cause });
    this.step = details.step;
    this.logTail = details.logTail ?? [];
    this.exitCode = details.exitCode;
    this.line = details.source?.line;
    this.source = details.source;
    this.daemonMessage = details.daemonMessage;
  }
}

/**
 * The operation was aborted through its AbortSignal. `name` is
 * "AbortError", as with Node's own APIs; `cause` is the signal's reason.
 */
export class AbortError extends BuildKitNodeError {
  override name = "AbortError";

  constructor(message: string, options?: { cause?: unknown }) {
    super("CANCELED", message, options);
  }
}
