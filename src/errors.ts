import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Stable error codes. Callers branch on `err.code`, never on the message.
 */
export type ErrorCode =
  /** Bad input from the caller: a malformed address, a missing option. */
  | "INVALID_ARGUMENT"
  /** The daemon, API or registry could not be reached, or the connection broke or went silent. */
  | "UNAVAILABLE"
  /** TLS failed: untrusted or mismatched certificate, or a plaintext peer. */
  | "TLS"
  /** A deadline passed (connect timeout, acquire timeout). */
  | "TIMEOUT"
  /** Aborted by the caller: its AbortSignal, or `close()` on the client. Never a peer's doing. */
  | "CANCELED"
  /** The daemon does not have this call (e.g. Info on BuildKit < v0.11). */
  | "UNIMPLEMENTED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  /** Credentials missing or refused (a registry, the Depot API). */
  | "UNAUTHENTICATED"
  | "FAILED_PRECONDITION"
  /** Input over a limit: a message larger than gRPC takes, a tar context past its ceilings. */
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
    return new BuildKitNodeError(codeFromErrno(err), context ? `${context}: ${text}` : text, { cause: err });
  }
}

/** A Node.js system error's code (ENOENT, EACCES, …) as ours; UNKNOWN for anything else. */
function codeFromErrno(err: unknown): ErrorCode {
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case "ENOENT":
      return "NOT_FOUND";
    case "EACCES":
    case "EPERM":
      return "PERMISSION_DENIED";
    case "ENOSPC":
    case "EMFILE":
    case "ENFILE":
      return "RESOURCE_EXHAUSTED";
    case "ECONNREFUSED":
    case "ECONNRESET":
    case "EPIPE":
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "UNAVAILABLE";
    default:
      return "UNKNOWN";
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

/** The first error of `err`'s cause chain (`err` itself first, 8 deep at most) that `test` accepts. */
export function findCause<T extends Error>(err: unknown, test: (e: Error) => e is T): T | undefined;
export function findCause(err: unknown, test: (e: Error) => boolean): Error | undefined;
export function findCause(err: unknown, test: (e: Error) => boolean): Error | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (test(e)) return e;
  }
  return undefined;
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
  // What connect-node makes of a reset connection; a server's own ABORTED
  // (a conflict) is worth a retry too. CANCELED is kept for the caller's abort.
  [Code.Aborted]: "UNAVAILABLE",
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
 *
 * `code` says why: BUILD_FAILED for the build itself (a step, the
 * Dockerfile); UNAUTHENTICATED or PERMISSION_DENIED when a registry refused
 * the daemon's pull or push; UNAVAILABLE when it could not reach a registry.
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
    /** Default BUILD_FAILED. */
    code?: ErrorCode;
    step?: { digest: string; name: string };
    logTail?: string[];
    exitCode?: number;
    source?: BuildErrorSource;
    cause?: unknown;
  }) {
    super(details.code ?? "BUILD_FAILED", details.message, { cause: details.cause });
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
