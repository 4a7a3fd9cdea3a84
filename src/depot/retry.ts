import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as wait } from "node:timers/promises";
import { findCause } from "../errors.js";
import { createLogger } from "../log.js";
import { wasNeverSent } from "../transport/http2-connections.js";

const log = createLogger("depot");

export const RETRY_BASE_MS = 200;
export const RETRY_MAX_MS = 5_000;

/**
 * Codes worth another try: the API or a proxy in front of it is briefly away
 * (`unavailable`, which is also what 502/503/504 and a refused connection
 * become), overloaded (`resource_exhausted`, i.e. 429), too slow this time
 * (`deadline_exceeded`), or the connection was reset (`aborted`, what
 * connect-node makes of ECONNRESET).
 *
 * `internal` is not retried when the server said it: a server invariant
 * broke and the same request will likely break it again, and CreateBuild is
 * not idempotent (a half-committed build would be doubled). connect-node also
 * reports network failures it has no code for (EPIPE, EHOSTUNREACH, a GOAWAY)
 * as `internal`; those carry the Node.js error as a cause and are retried.
 * Never retried: `unauthenticated`, `permission_denied`, `not_found`,
 * `invalid_argument` and every other code — another try cannot fix them.
 */
const transientCodes = new Set<Code>([Code.Unavailable, Code.ResourceExhausted, Code.DeadlineExceeded, Code.Aborted]);

const networkErrorCodes = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/** Whether a failed call (a ConnectError, or an error caused by one) may succeed if tried again. */
export function isTransient(err: unknown): boolean {
  const connectError = connectErrorOf(err);
  if (!connectError) return false;
  if (transientCodes.has(connectError.code)) return true;
  return connectError.code === Code.Internal && hasCauseCode(connectError.cause, networkErrorCodes);
}

/** The ConnectError a failed call threw: `err` itself, or its direct cause. */
function connectErrorOf(err: unknown): ConnectError | undefined {
  return err instanceof ConnectError ? err : err instanceof Error && err.cause instanceof ConnectError ? err.cause : undefined;
}

/** Whether `first` or a cause below it (8 deep at most) carries one of these Node.js error codes. */
function hasCauseCode(first: unknown, codes: ReadonlySet<string>): boolean {
  return findCause(first, (e) => {
    const code = (e as NodeJS.ErrnoException).code;
    return typeof code === "string" && codes.has(code);
  }) !== undefined;
}

/**
 * The wait before retry number `retry` (0-based): 200 ms doubling up to 5 s,
 * with "equal jitter" (a random point in the upper half), so that many
 * clients failing together do not come back together.
 */
export function backoffMs(retry: number, random: () => number = Math.random): number {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** retry);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Waits `ms`; rejects with the signal's reason when it aborts. Leaves no timer behind either way. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await wait(ms, undefined, signal ? { signal } : {});
  } catch (err) {
    throw signal?.aborted ? signal.reason : err;
  }
}

/** Errno codes that mean the connection was never made: no request can have left. */
const notConnectedCodes = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);

/**
 * Whether a call that is not idempotent may be tried again: only when its
 * request cannot have reached the server (the connection could not be
 * made), or the server said it refused it. A timeout, a reset or a lost
 * connection after sending might have left the server with a half-done
 * effect (a second build registered), so those are not retried.
 */
export function isSafeToResend(err: unknown): boolean {
  if (!isTransient(err)) return false;
  if (wasNeverSent(err) || hasCauseCode(err, notConnectedCodes)) return true;
  return refusedByServer(err);
}

/**
 * The server (or a proxy before it) answered that it did not take the call:
 * `unavailable` (a 503, no backend) or `resource_exhausted` (rate limited).
 * Not a failure on our side of the wire (those carry a Node.js cause), and
 * not a gateway's 502/504, which may come after the backend got the request.
 */
function refusedByServer(err: unknown): boolean {
  const connectError = connectErrorOf(err);
  if (!connectError || connectError.cause !== undefined) return false;
  if (/^HTTP 50[24]\b/.test(connectError.rawMessage)) return false;
  return connectError.code === Code.Unavailable || connectError.code === Code.ResourceExhausted;
}

export interface RetryOptions {
  /** Tries at most this many times in all. */
  maxAttempts: number;
  /**
   * Whether the call may run twice with the same effect (reads, reports).
   * Default true. A call that is not (CreateBuild) is retried only when its
   * request cannot have reached the server (see `isSafeToResend`).
   */
  idempotent?: boolean;
  /** Gives up (with the last error) rather than wait past this time (epoch ms). */
  deadline?: number;
  signal?: AbortSignal | undefined;
}

/**
 * Calls `attempt` until it succeeds, fails with a non-transient error, or
 * the attempts, the deadline or the signal run out; rethrows the last error
 * as it is (the caller turns it into a DepotError).
 */
export async function withRetry<T>(method: string, attempt: () => Promise<T>, options: RetryOptions): Promise<T> {
  for (let retry = 0; ; retry++) {
    try {
      return await attempt();
    } catch (err) {
      const retryable = options.idempotent === false ? isSafeToResend(err) : isTransient(err);
      if (!retryable || options.signal?.aborted || retry + 1 >= options.maxAttempts) throw err;
      const delay = backoffMs(retry);
      if (options.deadline !== undefined && Date.now() + delay >= options.deadline) throw err;
      // The code only: a server's message might echo what it was sent.
      log(`${method} failed (${err instanceof ConnectError ? Code[err.code] : "error"}); retry ${retry + 1} in ${delay} ms`);
      await sleep(delay, options.signal);
    }
  }
}

