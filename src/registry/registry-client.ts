import { Readable } from "node:stream";
import { BuildKitNodeError } from "../errors.js";
import { type RegistryAuth, type RegistryAuthOptions, registryCredentials } from "../session/auth.js";
import { type BlobSource, type PushBlobOptions, type PushBlobResult, mountBlob, pushBlob } from "./blob-upload.js";
import { type CopyImageOptions, type CopyImageResult, copyImage } from "./copy-image.js";
import { sha256, verified } from "./digest.js";
import { RegistryError } from "./errors.js";
import { type ImageArchiveOptions, type ImageArchiveResult, writeImageArchive } from "./image-archive.js";
import { type Descriptor, type Manifest, manifestMediaTypes, parseManifest } from "./manifest.js";
import { type IndexSource, type PushIndexOptions, type PushIndexResult, pushIndex } from "./push-index.js";
import { withRetries } from "./push-retry.js";
import { type ImageReference, formatImageReference, toImageReference } from "./reference.js";
import { RegistryHttp, type RegistryRequest, type RegistryResponse } from "./registry-http.js";
import { pullScope, pushScope } from "./scopes.js";

export interface RegistryClientOptions {
  /**
   * Where credentials come from: docker's `config.json` (`"docker-config"`,
   * the default: credential helpers, `credsStore`, `auths`), a record by
   * registry host (`{ "ghcr.io": { username, password } }`), or a function
   * of the host (`docker.io` for Docker Hub). Each host's answer is kept for
   * the client's life.
   */
  auth?: RegistryAuth;
  /** How `"docker-config"` is read (its directory, the credential helpers' timeout). */
  authOptions?: RegistryAuthOptions;
  /**
   * Registries reached over plain HTTP: `true` for every one, or a list of
   * hosts (`["registry.internal:5000"]`). Loopback registries (`localhost`,
   * `127.0.0.1`, `[::1]`) always are. Default: HTTPS for all others.
   */
  insecure?: boolean | readonly string[];
  /**
   * How long, in ms, a registry may take to answer a request, or to move a
   * body's next bytes (a large blob streams as long as it keeps moving).
   * Default 60 000.
   */
  timeoutMs?: number;
  /**
   * How many more times a push is tried when the registry refused it with a
   * 5xx or a digest mismatch (concurrent pushes of one blob). Default 3.
   */
  pushRetries?: number;
  /** Default `buildkit-node`. */
  userAgent?: string;
}

/** Options every call takes. */
export interface RegistryCallOptions {
  /** Aborts the call (and any transfer in flight): rejects with AbortError. */
  signal?: AbortSignal;
}

const defaultTimeoutMs = 60_000;
/** The Accept header of a manifest request: every type this client reads. */
const manifestAccept = manifestMediaTypes.join(", ");
const defaultPushRetries = 3;

/**
 * A client of the registry HTTP API (Distribution v2 / OCI distribution):
 * manifests and indexes (Docker and OCI), blobs streamed both ways, cross-
 * repository mounts, and the operations built on them: `pushIndex`,
 * `copyImage`, `writeImageArchive`. Authenticates like Docker (Basic, or
 * Bearer tokens scoped to each request), with a deadline on every request
 * and typed failures (RegistryError): 401 UNAUTHENTICATED, 403
 * PERMISSION_DENIED, 404 NOT_FOUND, unreachable UNAVAILABLE, no answer in
 * time TIMEOUT. Credentials and tokens never appear in an error or a log.
 *
 * Every method takes an image as text (`ghcr.io/acme/app:1`, read as Docker
 * reads it) or as parsed by `parseImageReference`.
 */
export class RegistryClient {
  /** @internal */
  readonly http: RegistryHttp;
  /** @internal */
  readonly pushRetries: number;

  constructor(options: RegistryClientOptions = {}) {
    const auth = options.auth ?? "docker-config";
    const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
    if (!(timeoutMs > 0)) throw new BuildKitNodeError("INVALID_ARGUMENT", "timeoutMs must be a positive number of milliseconds");
    this.pushRetries = Math.max(0, Math.floor(options.pushRetries ?? defaultPushRetries));
    this.http = new RegistryHttp({
      credentials: registryCredentials(auth, options.authOptions),
      insecure: options.insecure ?? false,
      timeoutMs,
      userAgent: options.userAgent ?? "buildkit-node",
    });
  }

  /** Fetches a manifest or an index; its digest is checked when the reference names one. Rejects NOT_FOUND when absent. */
  async getManifest(image: string | ImageReference, options: RegistryCallOptions = {}): Promise<Manifest> {
    const ref = toImageReference(image);
    const what = `GET ${describe(ref)}`;
    const response = await this.request(ref, { method: "GET", path: manifestPath(ref), scopes: [pullScope(ref)], headers: { Accept: manifestAccept }, signal: options.signal, what });
    const bytes = await response.bytes();
    const digest = sha256(bytes);
    if (ref.digest && ref.digest.startsWith("sha256:") && ref.digest !== digest) {
      throw new RegistryError("INTERNAL", `${what}: the registry sent a manifest whose digest is ${digest}`, { host: ref.host });
    }
    const mediaType = mediaTypeOf(response.headers) ?? "";
    return parseManifest(bytes, { mediaType, digest: ref.digest ?? digest, size: bytes.byteLength }, what);
  }

  /** The descriptor of a manifest (HEAD), or undefined when the registry has none under that reference. */
  async headManifest(image: string | ImageReference, options: RegistryCallOptions = {}): Promise<Descriptor | undefined> {
    const ref = toImageReference(image);
    const what = `HEAD ${describe(ref)}`;
    const response = await this.request(ref, {
      method: "HEAD",
      path: manifestPath(ref),
      scopes: [pullScope(ref)],
      headers: { Accept: manifestAccept },
      signal: options.signal,
      what,
      accept: [404],
    });
    await response.discard();
    if (response.status === 404) return undefined;
    const digest = response.headers.get("docker-content-digest") ?? ref.digest;
    const length = response.headers.get("content-length");
    const size = length === null ? Number.NaN : Number(length);
    const mediaType = mediaTypeOf(response.headers);
    if (digest && Number.isSafeInteger(size) && mediaType) return { mediaType, digest, size };
    // A registry that leaves the digest out of a HEAD: read the manifest itself.
    return (await this.getManifest(ref, options)).descriptor;
  }

  /** Puts a manifest or an index under the reference (a tag, or its own digest); resolves with its descriptor. */
  async putManifest(image: string | ImageReference, manifest: { mediaType: string; bytes: Uint8Array }, options: RegistryCallOptions = {}): Promise<Descriptor> {
    const ref = toImageReference(image);
    const digest = sha256(manifest.bytes);
    if (ref.digest && !ref.tag && ref.digest !== digest) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `cannot put a manifest of digest ${digest} under ${formatImageReference(ref)}`);
    }
    const target = ref.tag ?? ref.digest ?? ref.reference;
    const what = `PUT ${ref.host}/${ref.repository} manifest ${target}`;
    await this.withPushRetries(what, async () => {
      const response = await this.request(ref, {
        method: "PUT",
        path: `/v2/${ref.repository}/manifests/${target}`,
        scopes: [pushScope(ref)],
        headers: { "Content-Type": manifest.mediaType },
        body: manifest.bytes,
        signal: options.signal,
        what,
      });
      await response.discard();
    }, options.signal);
    return { mediaType: manifest.mediaType, digest, size: manifest.bytes.byteLength };
  }

  /** The repository's tags, every page of them; none for a repository the registry does not know. */
  async listTags(image: string | ImageReference, options: RegistryCallOptions = {}): Promise<string[]> {
    const ref = toImageReference(image);
    const tags: string[] = [];
    let path: string | undefined = `/v2/${ref.repository}/tags/list?n=1000`;
    for (let page = 0; path; page++) {
      const response: RegistryResponse = await this.request(ref, { method: "GET", path, scopes: [pullScope(ref)], signal: options.signal, what: `listing the tags of ${ref.host}/${ref.repository}`, accept: [404] });
      if (response.status === 404) {
        await response.discard();
        return tags;
      }
      let body: { tags?: unknown };
      try {
        body = JSON.parse(Buffer.from(await response.bytes()).toString("utf8")) as typeof body;
      } catch {
        throw new RegistryError("INTERNAL", `listing the tags of ${ref.host}/${ref.repository}: the answer is not JSON`, { host: ref.host });
      }
      if (Array.isArray(body.tags)) tags.push(...body.tags.filter((tag): tag is string => typeof tag === "string"));
      // The next page, if any, is in an RFC 5988 Link header: `</v2/…/tags/list?last=x&n=1000>; rel="next"`.
      const next = /<([^>]+)>;\s*rel="?next"?/.exec(response.headers.get("link") ?? "")?.[1];
      path = next && page < 10_000 ? new URL(next, response.url).toString() : undefined;
    }
    return tags;
  }

  /** The descriptor of a blob in the repository (HEAD), or undefined when it has none. */
  async headBlob(image: string | ImageReference, digest: string, options: RegistryCallOptions = {}): Promise<Descriptor | undefined> {
    const ref = toImageReference(image);
    const response = await this.request(ref, {
      method: "HEAD",
      path: `/v2/${ref.repository}/blobs/${digest}`,
      scopes: [pullScope(ref)],
      signal: options.signal,
      what: `HEAD ${ref.host}/${ref.repository} blob ${digest}`,
      accept: [404],
    });
    await response.discard();
    if (response.status === 404) return undefined;
    return { mediaType: response.headers.get("content-type") ?? "application/octet-stream", digest, size: Number(response.headers.get("content-length") ?? -1) };
  }

  /**
   * A blob's bytes as a stream, straight from the registry (redirects to
   * storage followed): never held in memory. The stream fails with
   * RegistryError INTERNAL if the bytes do not match the digest (or the
   * size, when a descriptor gives one).
   */
  async getBlob(image: string | ImageReference, blob: string | Descriptor, options: RegistryCallOptions = {}): Promise<Readable> {
    const ref = toImageReference(image);
    const digest = typeof blob === "string" ? blob : blob.digest;
    const size = typeof blob === "string" ? undefined : blob.size;
    const what = `GET ${ref.host}/${ref.repository} blob ${digest}`;
    const response = await this.request(ref, { method: "GET", path: `/v2/${ref.repository}/blobs/${digest}`, scopes: [pullScope(ref)], signal: options.signal, what });
    return Readable.from(verified(response.body(), digest, size, what, ref.host), { objectMode: false });
  }

  /** @internal A small JSON blob (an image config) read whole; at most 4 MiB. */
  async getBlobJson<T>(image: ImageReference, blob: Descriptor, options: RegistryCallOptions = {}): Promise<T> {
    const limit = 4 * 1024 * 1024;
    const what = `reading ${blob.digest} of ${describe(image)}`;
    if (blob.size > limit) throw new RegistryError("RESOURCE_EXHAUSTED", `${what}: ${blob.size} bytes is more than a config may take`, { host: image.host });
    const chunks: Buffer[] = [];
    for await (const chunk of await this.getBlob(image, blob, options)) chunks.push(chunk as Buffer);
    try {
      return JSON.parse(Buffer.concat(chunks).toString("utf8")) as T;
    } catch {
      throw new RegistryError("INTERNAL", `${what}: not JSON`, { host: image.host });
    }
  }

  /**
   * Pushes a blob unless the repository has it already. `source` is the
   * bytes, or a function that opens them (called again for each retry): they
   * stream, in one PUT or, with `chunkSize`, in PATCHes of that size.
   */
  pushBlob(image: string | ImageReference, descriptor: Descriptor, source: BlobSource, options: PushBlobOptions = {}): Promise<PushBlobResult> {
    return pushBlob(this, toImageReference(image), descriptor, source, options);
  }

  /**
   * Mounts a blob from another repository of the same registry (no bytes
   * move). Resolves false when the registry would not mount it (no access
   * to `from`, or no such blob there); nothing is left half-done then.
   */
  mountBlob(image: string | ImageReference, digest: string, from: string | ImageReference, options: RegistryCallOptions = {}): Promise<boolean> {
    return mountBlob(this, toImageReference(image), digest, toImageReference(from), options);
  }

  /**
   * Writes one index under each of `targets` from images already in the
   * registry (pushed by digest, say): Docker manifest list when every child
   * is a Docker manifest, else an OCI index. An image manifest becomes one
   * entry with its platform; an index's entries are all kept (attestation
   * manifests with their `vnd.docker.reference.*` annotations, as buildx
   * does). A child not yet in a target's repository is copied there first.
   */
  pushIndex(targets: string | ImageReference | readonly (string | ImageReference)[], sources: readonly IndexSource[], options: PushIndexOptions = {}): Promise<PushIndexResult> {
    const list = (Array.isArray(targets) ? targets : [targets]) as readonly (string | ImageReference)[];
    return pushIndex(this, list.map(toImageReference), sources, options);
  }

  /**
   * Copies an image (an index with every manifest, or one manifest) and its
   * blobs from one reference to another, on the same registry or across
   * registries. Blobs the target has are skipped; on the same registry they
   * are mounted (falling back to streaming when the registry refuses); else
   * they stream GET → PUT with bounded memory.
   */
  copyImage(from: string | ImageReference, to: string | ImageReference, options: CopyImageOptions = {}): Promise<CopyImageResult> {
    return copyImage(this, toImageReference(from), toImageReference(to), options);
  }

  /**
   * Streams an image out of the registry as a tar: an OCI image layout
   * (`format: "oci"`) or an archive `docker load` takes (`"docker"`: one
   * platform, `manifest.json` + config + layers; also a valid OCI layout).
   */
  writeImageArchive(image: string | ImageReference, options: ImageArchiveOptions): Promise<ImageArchiveResult> {
    return writeImageArchive(this, toImageReference(image), options);
  }

  /** @internal A request to the image's registry. */
  request(image: ImageReference, request: Omit<RegistryRequest, "host">): Promise<RegistryResponse> {
    return this.http.request({ ...request, host: image.host });
  }

  /** @internal Runs a push step again (a bounded number of times) when the registry's refusal may pass. */
  withPushRetries<T>(what: string, step: (attempt: number) => Promise<T>, signal?: AbortSignal): Promise<T> {
    return withRetries(this.pushRetries, what, step, signal);
  }
}

/** A response's Content-Type without its parameters (`; charset=…`). */
function mediaTypeOf(headers: Headers): string | undefined {
  return headers.get("content-type")?.split(";")[0]?.trim();
}

function manifestPath(image: ImageReference): string {
  return `/v2/${image.repository}/manifests/${image.reference}`;
}

/** `127.0.0.1:5000/acme/app:1`, for messages. */
function describe(image: ImageReference): string {
  return `${image.host}/${image.repository}${image.digest ? `@${image.digest}` : `:${image.reference}`}`;
}
