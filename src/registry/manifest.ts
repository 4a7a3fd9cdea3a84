import { BuildKitNodeError } from "../errors.js";

/** The media types of the manifests a registry serves. */
export const MediaType = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

/** Every manifest type this client asks for (no schema 1). */
export const manifestMediaTypes: readonly string[] = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest];

export function isIndexMediaType(mediaType: string): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerManifestList;
}

export function isManifestMediaType(mediaType: string): boolean {
  return manifestMediaTypes.includes(mediaType);
}

/** A platform, as an index lists it for each of its manifests. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

/** A pointer to content by digest (OCI image-spec descriptor). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  /** Where a non-distributable (foreign) layer can be fetched instead of the registry. */
  urls?: string[];
  artifactType?: string;
}

/** An image manifest: a config and layers (OCI, or Docker schema 2). */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** An image index (OCI) or manifest list (Docker): manifests by platform. */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** A manifest as fetched: its descriptor, its exact bytes (what the digest covers) and what they say. */
export type Manifest =
  | { kind: "index"; descriptor: Descriptor; bytes: Uint8Array; index: ImageIndex }
  | { kind: "image"; descriptor: Descriptor; bytes: Uint8Array; manifest: ImageManifest };

/** The annotations BuildKit puts on an attestation manifest in an index (as buildx reads them). */
export const attestationAnnotations = {
  referenceType: "vnd.docker.reference.type",
  referenceDigest: "vnd.docker.reference.digest",
  attestationManifest: "attestation-manifest",
} as const;

/** An index entry that is an attestation (provenance, SBOM) for another entry, not a runnable image. */
export function isAttestation(descriptor: Descriptor): boolean {
  return descriptor.annotations?.[attestationAnnotations.referenceType] === attestationAnnotations.attestationManifest;
}

/** Layers a registry does not serve: Windows base layers and other non-distributable ones with their own `urls`. */
export function isForeign(blob: Descriptor): boolean {
  return (
    blob.mediaType === MediaType.dockerForeignLayerGzip || (blob.mediaType.startsWith("application/vnd.oci.image.layer.nondistributable.") && (blob.urls?.length ?? 0) > 0)
  );
}

/** An image manifest's config and layers, foreign layers left out: the blobs its registry holds. */
export function registryBlobs(manifest: Extract<Manifest, { kind: "image" }>): Descriptor[] {
  return [manifest.manifest.config, ...manifest.manifest.layers].filter((blob) => !isForeign(blob));
}

/** `linux/arm64/v8` → `{ os: "linux", architecture: "arm64", variant: "v8" }`. */
export function parsePlatform(platform: string | Platform): Platform {
  if (typeof platform !== "string") return platform;
  const [os = "", architecture = "", variant, ...extra] = platform.split("/");
  if (!os || !architecture || extra.length > 0 || variant === "") {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `invalid platform "${platform}": expected os/architecture[/variant]`);
  }
  return { os, architecture, ...(variant ? { variant } : {}) };
}

/** The platform an image config names (`os`, `architecture`, `variant`), if it names one. */
export function configPlatform(config: unknown): Platform | undefined {
  const { os, architecture, variant } = (config ?? {}) as { os?: unknown; architecture?: unknown; variant?: unknown };
  if (typeof os !== "string" || typeof architecture !== "string") return undefined;
  return { os, architecture, ...(typeof variant === "string" && variant ? { variant } : {}) };
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, ...(platform.variant ? [platform.variant] : [])].join("/");
}

/**
 * Whether an index entry for `candidate` serves `wanted`: same os and
 * architecture, and the same variant when `wanted` names one (arm64's `v8`
 * is its default, as containerd's matcher reads it).
 */
export function platformMatches(wanted: Platform, candidate: Platform | undefined): boolean {
  if (!candidate || candidate.os !== wanted.os || candidate.architecture !== wanted.architecture) return false;
  if (!wanted.variant) return true;
  const normal = (p: Platform) => p.variant ?? (p.architecture === "arm64" ? "v8" : undefined);
  return normal(candidate) === normal(wanted);
}

/**
 * Reads manifest bytes: an image manifest or an index, by its media type
 * (the response's, else the document's own field). Throws for anything else
 * (schema 1, an unknown artifact).
 */
export function parseManifest(bytes: Uint8Array, descriptor: Descriptor, what: string): Manifest {
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw new BuildKitNodeError("INTERNAL", `${what}: the registry sent a manifest that is not JSON`);
  }
  if (typeof document !== "object" || document === null) throw new BuildKitNodeError("INTERNAL", `${what}: the registry sent a manifest that is not an object`);
  const fields = document as Record<string, unknown>;
  const declared = typeof fields.mediaType === "string" ? fields.mediaType : undefined;
  const mediaType = isManifestMediaType(descriptor.mediaType) ? descriptor.mediaType : (declared ?? (Array.isArray(fields.manifests) ? MediaType.ociIndex : MediaType.ociManifest));
  const withType = { ...descriptor, mediaType };
  if (fields.schemaVersion !== 2) throw new BuildKitNodeError("UNIMPLEMENTED", `${what}: only schema 2 manifests are supported (got ${String(fields.schemaVersion)})`);
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(fields.manifests)) throw new BuildKitNodeError("INTERNAL", `${what}: the index has no manifests`);
    return { kind: "index", descriptor: withType, bytes, index: document as ImageIndex };
  }
  if (mediaType === MediaType.ociManifest || mediaType === MediaType.dockerManifest) {
    if (typeof fields.config !== "object" || !Array.isArray(fields.layers)) throw new BuildKitNodeError("INTERNAL", `${what}: the manifest has no config or layers`);
    return { kind: "image", descriptor: withType, bytes, manifest: document as ImageManifest };
  }
  throw new BuildKitNodeError("UNIMPLEMENTED", `${what}: unsupported manifest type ${mediaType}`);
}
