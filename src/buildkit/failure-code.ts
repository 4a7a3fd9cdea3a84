import type { ErrorCode } from "../errors.js";

/**
 * Registry answers the daemon quotes when it could not pull or push: the
 * HTTP status, or what containerd/distribution and dockerd say for it.
 */
const REGISTRY_UNAUTHENTICATED = /\b401 Unauthorized\b|\bunauthorized: |authentication required|no basic auth credentials|failed to authorize|failed to fetch (?:anonymous|oauth) token/i;
const REGISTRY_DENIED = /\b403 Forbidden\b|\bdenied: |requested access to the resource is denied|insufficient_scope/i;
/** Go's dialer failing to reach a registry (`dial tcp 127.0.0.1:5999: connect: connection refused`). */
const REGISTRY_UNREACHABLE = /\bdial tcp [^ ]+: (?:connect: connection refused|connect: no route to host|i\/o timeout|lookup [^ ]+(?: on [^ ]+)?: no such host)|\bconnection reset by peer\b/i;

/**
 * The code of a solve the daemon failed (a request over its size limit never
 * gets here: build.ts makes that RESOURCE_EXHAUSTED), from the daemon's
 * message: a registry that refused credentials UNAUTHENTICATED (or
 * PERMISSION_DENIED), one that could not be reached UNAVAILABLE; anything
 * else, and every failed RUN (`exitCode` set: its output may say anything),
 * BUILD_FAILED.
 */
export function solveFailureCode(daemonMessage: string, exitCode: number | undefined): ErrorCode {
  if (exitCode !== undefined) return "BUILD_FAILED";
  return registryFailureCode(daemonMessage) ?? "BUILD_FAILED";
}

/**
 * The code of a registry failure a daemon reports in words (BuildKit's
 * exporter, dockerd's push): refused credentials, refused access, not
 * reachable; undefined when the message is none of those.
 */
export function registryFailureCode(message: string): ErrorCode | undefined {
  if (REGISTRY_UNAUTHENTICATED.test(message)) return "UNAUTHENTICATED";
  if (REGISTRY_DENIED.test(message)) return "PERMISSION_DENIED";
  if (REGISTRY_UNREACHABLE.test(message)) return "UNAVAILABLE";
  return undefined;
}
