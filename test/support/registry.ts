// Reads back what a build pushed, through the registry's own HTTP API
// (the local registries started by scripts/local-buildkit.sh).
export const PLAIN_REGISTRY = "127.0.0.1:5000";
export const AUTH_REGISTRY = "127.0.0.1:5001";
export const AUTH_USER = "testuser";
export const AUTH_PASSWORD = "testpassword";
export const BASE_IMAGE = `${PLAIN_REGISTRY}/busybox:latest`;

const MANIFEST_TYPES = [
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
].join(", ");

export interface ImageManifest {
  digest: string;
  mediaType: string;
  config: { digest: string; mediaType: string };
  layers: { digest: string; size: number }[];
}

export interface ImageConfig {
  architecture: string;
  os: string;
  config: { Labels?: Record<string, string>; Env?: string[]; Cmd?: string[] };
  rootfs: { diff_ids: string[] };
}

function headers(auth?: { username: string; password: string }): Record<string, string> {
  return auth ? { Authorization: `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}` } : {};
}

export async function getManifest(registry: string, repository: string, reference: string, auth?: { username: string; password: string }): Promise<ImageManifest> {
  const response = await fetch(`http://${registry}/v2/${repository}/manifests/${reference}`, {
    headers: { Accept: MANIFEST_TYPES, ...headers(auth) },
  });
  if (!response.ok) throw new Error(`GET manifest ${registry}/${repository}:${reference}: ${response.status}`);
  const manifest = (await response.json()) as Omit<ImageManifest, "digest">;
  return { ...manifest, digest: response.headers.get("docker-content-digest") ?? "" };
}

export async function getBlobJson<T>(registry: string, repository: string, digest: string, auth?: { username: string; password: string }): Promise<T> {
  const response = await fetch(`http://${registry}/v2/${repository}/blobs/${digest}`, { headers: headers(auth) });
  if (!response.ok) throw new Error(`GET blob ${digest}: ${response.status}`);
  return (await response.json()) as T;
}

export async function getImageConfig(registry: string, repository: string, reference: string, auth?: { username: string; password: string }): Promise<ImageConfig> {
  const manifest = await getManifest(registry, repository, reference, auth);
  return getBlobJson<ImageConfig>(registry, repository, manifest.config.digest, auth);
}

export interface ImageIndex {
  digest: string;
  mediaType: string;
  manifests: { digest: string; mediaType: string; platform?: { os: string; architecture: string; variant?: string }; annotations?: Record<string, string> }[];
}

/** An image index (a multi-platform image, or an image with attestations). */
export async function getIndex(registry: string, repository: string, reference: string): Promise<ImageIndex> {
  const index = (await getManifest(registry, repository, reference)) as unknown as ImageIndex;
  if (!Array.isArray(index.manifests)) throw new Error(`${registry}/${repository}:${reference} is not an index (${index.mediaType})`);
  return index;
}

/** A repository name no other test run uses. */
export function uniqueRepository(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The tags a repository holds, sorted (an empty list for a repository that has none). */
export async function listTags(registry: string, repository: string, auth?: { username: string; password: string }): Promise<string[]> {
  const response = await fetch(`http://${registry}/v2/${repository}/tags/list`, { headers: headers(auth) });
  if (response.status === 404) return [];
  if (!response.ok) throw new Error(`GET tags of ${registry}/${repository}: ${response.status}`);
  return (((await response.json()) as { tags: string[] | null }).tags ?? []).sort();
}
