import type { BuildResult } from "../buildkit/build-options.js";
import { type ManifestDescriptor, parseImageReference, RegistryClient } from "../buildkit/registry-client.js";
import { createLogger } from "../log.js";
import { type RegistryAuth, resolveCredentials } from "../session/auth.js";
import { type PlatformPush, platformDigest } from "./platform-outputs.js";

const log = createLogger("depot");

/** Each platform's build, in the order the platforms were asked for. */
export interface PlatformBuild {
  platform: string;
  result: BuildResult;
}

/**
 * Puts one index (manifest list) under each requested image name, pointing
 * at each platform's image by digest, in the same repository.
 */
export async function pushIndexes(
  names: string[],
  perPlatform: (PlatformBuild & { push?: PlatformPush | undefined })[],
  registryAuth: RegistryAuth | undefined,
  signal: AbortSignal,
): Promise<{ name: string; digest: string }[]> {
  const registry = new RegistryClient((host) => resolveCredentials(registryAuth ?? "docker-config", host));
  const pushed: { name: string; digest: string }[] = [];
  for (const name of names) {
    const image = parseImageReference(name);
    const children: (ManifestDescriptor & { platform: Record<string, string> })[] = [];
    for (const { platform, result, push = "helper-tags" } of perPlatform) {
      const descriptor = await registry.manifestDescriptor({ ...image, reference: platformDigest(name, platform, result, push) }, signal);
      const [os = "linux", architecture = "", variant] = platform.split("/");
      children.push({ ...descriptor, platform: { os, architecture, ...(variant ? { variant } : {}) } });
    }
    const oci = children.every((c) => c.mediaType.startsWith("application/vnd.oci."));
    const mediaType = oci ? "application/vnd.oci.image.index.v1+json" : "application/vnd.docker.distribution.manifest.list.v2+json";
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests: children }));
    const digest = await registry.putManifest(image, mediaType, index, signal);
    log(`pushed index ${name} ${digest} (${perPlatform.map((p) => p.platform).join(", ")})`);
    pushed.push({ name, digest });
  }
  return pushed;
}
