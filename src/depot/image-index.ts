import type { BuildResult } from "../buildkit/build-options.js";
import { createLogger } from "../log.js";
import { parseImageReference, withDigest } from "../registry/reference.js";
import { RegistryClient } from "../registry/registry-client.js";
import type { RegistryAuth } from "../session/auth.js";
import { type PlatformPush, platformDigest } from "./platform-outputs.js";

const log = createLogger("depot");

/** Each platform's build, in the order the platforms were asked for. */
export interface PlatformBuild {
  platform: string;
  result: BuildResult;
}

/**
 * Puts one index under each requested image name, naming each platform's
 * image by digest (an attestation manifest a platform's push carried is
 * kept), in that name's repository.
 */
export async function pushIndexes(
  names: string[],
  perPlatform: (PlatformBuild & { push?: PlatformPush | undefined })[],
  options: { registryAuth?: RegistryAuth | undefined; insecure?: boolean },
  signal: AbortSignal,
): Promise<{ name: string; digest: string }[]> {
  const registry = new RegistryClient({
    auth: options.registryAuth ?? "docker-config",
    ...(options.insecure ? { insecure: names.map((name) => parseImageReference(name).host) } : {}),
  });
  const pushed: { name: string; digest: string }[] = [];
  for (const name of names) {
    const sources = perPlatform.map(({ platform, result, push = "helper-tags" }) => ({
      image: withDigest(parseImageReference(name), platformDigest(name, platform, result, push)),
      platform,
    }));
    const { descriptor } = await registry.pushIndex(name, sources, { signal });
    log(`pushed index ${name} ${descriptor.digest} (${perPlatform.map((p) => p.platform).join(", ")})`);
    pushed.push({ name, digest: descriptor.digest });
  }
  return pushed;
}
