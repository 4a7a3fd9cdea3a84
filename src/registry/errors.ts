import { BuildKitNodeError, type ErrorCode } from "../errors.js";

/**
 * A registry refused or failed a request. `code` says what kind of failure
 * (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, UNAVAILABLE, TIMEOUT, …);
 * `status` is the HTTP status when the registry answered, `registryCode` the
 * first error code of its body (`MANIFEST_UNKNOWN`, `DIGEST_INVALID`, …).
 * Never carries credentials or tokens.
 */
export class RegistryError extends BuildKitNodeError {
  override name = "RegistryError";
  /** The registry host, e.g. `ghcr.io`. */
  readonly host: string;
  readonly status: number | undefined;
  readonly registryCode: string | undefined;

  constructor(code: ErrorCode, message: string, details: { host: string; status?: number; registryCode?: string; cause?: unknown }) {
    super(code, message, details.cause !== undefined ? { cause: details.cause } : {});
    this.host = details.host;
    this.status = details.status;
    this.registryCode = details.registryCode;
  }
}

/**
 * The code an HTTP status means: 401 UNAUTHENTICATED, 403
 * PERMISSION_DENIED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 502/503/504
 * UNAVAILABLE, other 5xx INTERNAL; a 400 is the request's fault
 * (INVALID_ARGUMENT) unless the registry lacks content a manifest names
 * (FAILED_PRECONDITION).
 */
export function codeForStatus(status: number, registryCode: string | undefined): ErrorCode {
  switch (status) {
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 404:
      return "NOT_FOUND";
    case 405:
      return "UNIMPLEMENTED";
    case 408:
      return "TIMEOUT";
    case 429:
      return "RESOURCE_EXHAUSTED";
    case 502:
    case 503:
    case 504:
      return "UNAVAILABLE";
  }
  if (status === 400 || status === 416) return registryCode === "MANIFEST_BLOB_UNKNOWN" || registryCode === "BLOB_UNKNOWN" ? "FAILED_PRECONDITION" : "INVALID_ARGUMENT";
  if (status >= 500) return "INTERNAL";
  return "UNKNOWN";
}
