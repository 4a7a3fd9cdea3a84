import { createHash } from "node:crypto";
import { RegistryError } from "./errors.js";

/** `sha256:<hex>` of bytes in memory (a manifest). */
export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * Passes a blob's bytes on as they come, failing at the end if they are not
 * what the digest (and the size, when known) say: a registry or a proxy that
 * corrupts or cuts a blob is caught before anyone trusts it.
 */
export async function* verified(body: AsyncIterable<Uint8Array>, digest: string, size: number | undefined, what: string, host: string): AsyncGenerator<Uint8Array> {
  const [algorithm = "", expected = ""] = digest.split(":");
  const hash = algorithm === "sha256" || algorithm === "sha384" || algorithm === "sha512" ? createHash(algorithm) : undefined;
  const known = size !== undefined && size >= 0;
  let received = 0;
  for await (const chunk of body) {
    received += chunk.byteLength;
    if (known && received > size) throw new RegistryError("INTERNAL", `${what}: the registry sent more than the ${size} bytes the descriptor says`, { host });
    hash?.update(chunk);
    yield chunk;
  }
  if (known && received !== size) throw new RegistryError("INTERNAL", `${what}: the registry sent ${received} of ${size} bytes`, { host });
  if (hash && hash.digest("hex") !== expected) throw new RegistryError("INTERNAL", `${what}: the bytes the registry sent do not match the digest`, { host });
}
