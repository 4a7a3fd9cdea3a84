import { BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import { type CopyProgress, ImageCopy } from "./copy-image.js";
import { configPlatform, type Descriptor, type ImageIndex, isAttestation, MediaType, type Platform, parsePlatform } from "./manifest.js";
import { formatImageReference, type ImageReference, toImageReference, withDigest } from "./reference.js";
import type { RegistryClient, RegistryCallOptions } from "./registry-client.js";

const log = createLogger("registry");

/** One image an index is made of. */
export interface IndexSource {
  /**
   * An image manifest or an index in the registry, best by digest
   * (`127.0.0.1:5000/app@sha256:…`, what BuildKit pushed by digest). An
   * index gives all its entries (a v0.24 build's image and its attestation).
   */
  image: string | ImageReference;
  /** The platform of an image manifest; read from its config when not given. Not used for an index. */
  platform?: string | Platform;
}

export interface PushIndexOptions extends RegistryCallOptions {
  /** Annotations of the index itself (OCI indexes only). */
  annotations?: Record<string, string>;
  /** Progress of children copied into a target's repository. */
  onProgress?: (event: CopyProgress) => void;
}

export interface PushIndexResult {
  /** The index written: the same bytes under every name. */
  descriptor: Descriptor;
  /** The names it was written under, in canonical form. */
  names: string[];
}

/**
 * Writes one index (OCI, or a Docker manifest list when every child is a
 * Docker schema 2 manifest) under every target name. Children keep their
 * platform; an index source's entries are kept as they are, attestation
 * manifests included with their `vnd.docker.reference.*` annotations (as
 * `buildx imagetools create` does). A child missing from a target's
 * repository is copied there (mounted on the same registry) first.
 */
export async function pushIndex(client: RegistryClient, targets: readonly ImageReference[], sources: readonly IndexSource[], options: PushIndexOptions): Promise<PushIndexResult> {
  if (targets.length === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", "pushIndex needs at least one target name");
  if (sources.length === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", "pushIndex needs at least one source image");
  const call: RegistryCallOptions = options.signal ? { signal: options.signal } : {};

  const children: { descriptor: Descriptor; from: ImageReference }[] = [];
  for (const source of sources) {
    const from = toImageReference(source.image);
    const manifest = await client.getManifest(from, call);
    const at = withDigest(from, manifest.descriptor.digest);
    if (manifest.kind === "index") {
      for (const entry of manifest.index.manifests) children.push({ descriptor: entry, from: at });
      continue;
    }
    const platform = source.platform !== undefined ? parsePlatform(source.platform) : await platformOf(client, from, manifest.manifest.config, call);
    const { mediaType, digest, size } = manifest.descriptor;
    children.push({ descriptor: { mediaType, digest, size, platform }, from: at });
  }
  const unique = [...new Map(children.map((child) => [child.descriptor.digest, child])).values()];

  const docker = unique.every(({ descriptor }) => descriptor.mediaType === MediaType.dockerManifest && !isAttestation(descriptor));
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.dockerManifestList : MediaType.ociIndex,
    manifests: unique.map(({ descriptor }) => (docker ? withoutAnnotations(descriptor) : descriptor)),
    ...(!docker && options.annotations && Object.keys(options.annotations).length > 0 ? { annotations: options.annotations } : {}),
  };
  const bytes = Buffer.from(JSON.stringify(index));

  let descriptor: Descriptor | undefined;
  for (const target of targets) {
    for (const child of unique) {
      if (child.from.host === target.host && child.from.repository === target.repository) continue;
      // The child lives elsewhere: bring it (and its blobs) into this repository.
      await new ImageCopy(client, child.from, target, { ...call, ...(options.onProgress ? { onProgress: options.onProgress } : {}) }).manifestByDigest(child.descriptor);
    }
    descriptor = await client.putManifest(target, { mediaType: index.mediaType!, bytes }, call);
    log(`index ${formatImageReference(target)} ${descriptor.digest}: ${unique.length} manifests`);
  }
  return { descriptor: descriptor!, names: targets.map((target) => formatImageReference(target)) };
}

/** An image's platform, as its config says; refused when it names none. */
async function platformOf(client: RegistryClient, image: ImageReference, config: Descriptor, call: RegistryCallOptions): Promise<Platform> {
  const platform = configPlatform(await client.getBlobJson(image, config, call));
  if (!platform) throw new BuildKitNodeError("INVALID_ARGUMENT", `the config of ${formatImageReference(image)} names no platform; give one`);
  return platform;
}

function withoutAnnotations(descriptor: Descriptor): Descriptor {
  const { annotations: _annotations, ...rest } = descriptor;
  return rest;
}
