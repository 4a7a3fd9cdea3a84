import { setTimeout as delay } from "node:timers/promises";
import { AbortError } from "../errors.js";
import { createLogger } from "../log.js";
import { RegistryError } from "./errors.js";

const log = createLogger("registry");

/**
 * Whether pushing again may succeed: a 5xx, the registry out of reach or
 * silent, or a digest it computed differently (concurrent pushes of one blob
 * into one repository can make distribution answer DIGEST_INVALID or
 * BLOB_UPLOAD_INVALID).
 */
export function isRetryablePushFailure(err: unknown): boolean {
  if (!(err instanceof RegistryError)) return false;
  if (err.status !== undefined && err.status >= 500) return true;
  if (err.code === "UNAVAILABLE" || err.code === "TIMEOUT") return true;
  return err.registryCode === "DIGEST_INVALID" || err.registryCode === "BLOB_UPLOAD_INVALID" || err.registryCode === "BLOB_UPLOAD_UNKNOWN";
}

/**
 * Runs `step`, and again up to `retries` times after a short growing pause
 * (100 ms, 200 ms, …), while its failure is one a registry may not repeat.
 */
export async function withRetries<T>(retries: number, what: string, step: (attempt: number) => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await step(attempt);
    } catch (err) {
      if (attempt >= retries || !isRetryablePushFailure(err) || signal?.aborted) throw err;
      log(`${what}: trying again after ${(err as Error).message}`);
      await delay(100 * 2 ** attempt, undefined, signal ? { signal } : {}).catch(() => {
        throw new AbortError(`${what} was aborted`, { cause: signal?.reason });
      });
    }
  }
}
