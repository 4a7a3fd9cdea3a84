import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as wait } from "node:timers/promises";
import { createLogger } from "../log.js";

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
  const connectError = err instanceof ConnectError ? err : err instanceof Error && err.cause instanceof ConnectError ? err.cause : undefined;
  if (!connectError) return false;
  if (transientCodes.has(connectError.code)) return true;
  return connectError.code === Code.Internal && hasNetworkCause(connectError);
}

function hasNetworkCause(err: Error): boolean {
  for (let e: unknown = err.cause, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && networkErrorCodes.has(code)) return true;
  }
  return false;
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

export interface RetryOptions {
  /** Tries at most this many times in all. */
  maxAttempts: number;
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
      if (!isTransient(err) || options.signal?.aborted || retry + 1 >= options.maxAttempts) throw err;
      const delay = backoffMs(retry);
      if (options.deadline !== undefined && Date.now() + delay >= options.deadline) throw err;
      // The code only: a server's message might echo what it was sent.
      log(`${method} failed (${err instanceof ConnectError ? Code[err.code] : "error"}); retry ${retry + 1} in ${delay} ms`);
      await sleep(delay, options.signal);
    }
  }
}

