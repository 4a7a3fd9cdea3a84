import { ConnectError } from "@connectrpc/connect";
import { AbortError, BuildKitNodeError, codeFromConnect, type ErrorCode } from "../errors.js";

/**
 * A Depot API call failed. `code` comes from the Connect code
 * (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, UNAVAILABLE, …), `method`
 * names the RPC (e.g. `CreateBuild`) and `cause` is the ConnectError. The
 * message never contains a token.
 */
export class DepotError extends BuildKitNodeError {
  override name = "DepotError";
  readonly method: string;

  constructor(method: string, code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.method = method;
  }
}

/**
 * What a failed call becomes: an AbortError when the caller's signal ended
 * it, else a DepotError naming the method. `secrets` (the tokens the call
 * knew) are masked should the server echo one back.
 */
export function depotCallError(method: string, err: unknown, secrets: readonly string[], signal?: AbortSignal): BuildKitNodeError {
  if (signal?.aborted) return new AbortError(`Depot ${method} was aborted`, { cause: signal.reason });
  if (err instanceof DepotError || err instanceof AbortError) return err;
  if (err instanceof ConnectError) {
    const code = codeFromConnect(err.code);
    return new DepotError(method, code, `Depot ${method} failed (${code.toLowerCase()}): ${redact(err.rawMessage, secrets)}`, { cause: err });
  }
  const text = err instanceof Error ? err.message : String(err);
  return new DepotError(method, "UNKNOWN", `Depot ${method} failed: ${redact(text, secrets)}`, { cause: err });
}

/** Replaces every occurrence of each secret with `***`. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret) out = out.split(secret).join("***");
  return out;
}
