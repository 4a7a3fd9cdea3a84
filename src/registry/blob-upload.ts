import { BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import { RegistryError } from "./errors.js";
import type { Descriptor } from "./manifest.js";
import type { ImageReference } from "./reference.js";
import type { RegistryCallOptions, RegistryClient } from "./registry-client.js";
import { pullScope, pushScope } from "./scopes.js";

const log = createLogger("registry");

/**
 * A blob's bytes: in memory, or a function that opens them as a stream
 * (called once per attempt, so that a refused push can be sent again).
 */
export type BlobSource = Uint8Array | (() => AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>);

export interface PushBlobOptions extends RegistryCallOptions {
  /**
   * Send the blob in PATCH requests of at most this many bytes, then a
   * closing PUT (for registries or proxies that limit a request's size).
   * Default: one streamed PUT.
   */
  chunkSize?: number;
  /** A repository of the same registry to mount the blob from before sending it. */
  mountFrom?: ImageReference;
  /** The bytes sent so far, as they go. */
  onProgress?: (sent: number) => void;
}

/** How the blob came to be in the repository. */
export interface PushBlobResult {
  how: "existed" | "mounted" | "uploaded";
}

/**
 * HEAD, then (mount or) upload, again a bounded number of times when the
 * registry refuses in a way that may pass (a 5xx; a digest mismatch while
 * another push of the same blob runs). Each attempt asks HEAD first: a
 * concurrent push may have finished the blob meanwhile.
 */
export async function pushBlob(
  client: RegistryClient,
  image: ImageReference,
  descriptor: Descriptor,
  source: BlobSource,
  options: PushBlobOptions,
): Promise<PushBlobResult> {
  const { signal } = options;
  if (!/^sha(256|384|512):[a-f0-9]+$/.test(String(descriptor?.digest)) || !(Number.isSafeInteger(descriptor.size) && descriptor.size >= 0)) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", "a blob's descriptor needs its digest (sha256:…) and its size in bytes");
  }
  if (options.chunkSize !== undefined && !(Number.isInteger(options.chunkSize) && options.chunkSize > 0)) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", "chunkSize must be a positive whole number of bytes");
  }
  const what = `pushing blob ${descriptor.digest} to ${image.host}/${image.repository}`;
  return client.withPushRetries(
    what,
    async () => {
      if (await client.headBlob(image, descriptor.digest, signal ? { signal } : {})) return { how: "existed" as const };
      const upload = await startUpload(client, image, descriptor.digest, options.mountFrom, signal);
      if (upload.mounted) return { how: "mounted" as const };
      try {
        const bytes = typeof source === "function" ? await source() : inMemory(source);
        await (options.chunkSize !== undefined
          ? sendChunked(client, image, upload.location, descriptor, bytes, options.chunkSize, options)
          : sendWhole(client, image, upload.location, descriptor, bytes, options));
      } catch (err) {
        await cancelUpload(client, image, upload.location);
        throw err;
      }
      log(`${what}: uploaded ${descriptor.size} bytes`);
      return { how: "uploaded" as const };
    },
    signal,
  );
}

/** Mounts a blob from another repository of the same registry; false when the registry would not. */
export async function mountBlob(client: RegistryClient, image: ImageReference, digest: string, from: ImageReference, options: RegistryCallOptions): Promise<boolean> {
  if (from.host !== image.host) return false;
  const upload = await startUpload(client, image, digest, from, options.signal);
  if (upload.mounted) return true;
  // The registry opened an upload instead: nothing will be sent to it.
  await cancelUpload(client, image, upload.location);
  return false;
}

type Upload = { mounted: true } | { mounted: false; location: string };

/**
 * `POST /v2/<name>/blobs/uploads/`, with `mount`/`from` when mounting (the
 * token then needs pull on the source repository too). 201: mounted;
 * 202: an upload session at `Location`.
 */
async function startUpload(client: RegistryClient, image: ImageReference, digest: string, mountFrom: ImageReference | undefined, signal: AbortSignal | undefined): Promise<Upload> {
  const mount = mountFrom && mountFrom.host === image.host && mountFrom.repository !== image.repository ? mountFrom : undefined;
  const query = mount ? `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(mount.repository)}` : "";
  const response = await client.request(image, {
    method: "POST",
    path: `/v2/${image.repository}/blobs/uploads/${query}`,
    scopes: mount ? [pushScope(image), pullScope(mount)] : [pushScope(image)],
    headers: { "Content-Length": "0" },
    signal,
    what: mount ? `mounting blob ${digest} from ${mount.repository} into ${image.host}/${image.repository}` : `starting an upload to ${image.host}/${image.repository}`,
  });
  await response.discard();
  if (response.status === 201 && mount) {
    log(`mounted ${digest} from ${mount.repository} into ${image.repository}`);
    return { mounted: true };
  }
  return { mounted: false, location: nextLocation(response, image) };
}

/** One PUT with the whole blob, streamed, its length announced. */
async function sendWhole(
  client: RegistryClient,
  image: ImageReference,
  location: string,
  descriptor: Descriptor,
  bytes: AsyncIterable<Uint8Array>,
  options: PushBlobOptions,
): Promise<void> {
  const response = await client.request(image, {
    method: "PUT",
    path: withDigest(location, descriptor.digest),
    scopes: [pushScope(image)],
    headers: { "Content-Type": "application/octet-stream", "Content-Length": String(descriptor.size) },
    body: counted(bytes, options.onProgress),
    signal: options.signal,
    what: `uploading blob ${descriptor.digest} to ${image.host}/${image.repository}`,
  });
  await response.discard();
}

/** PATCHes of `chunkSize` bytes with their Content-Range, then the closing PUT. */
async function sendChunked(
  client: RegistryClient,
  image: ImageReference,
  location: string,
  descriptor: Descriptor,
  bytes: AsyncIterable<Uint8Array>,
  chunkSize: number,
  options: PushBlobOptions,
): Promise<void> {
  const what = `uploading blob ${descriptor.digest} to ${image.host}/${image.repository}`;
  const reader = new ChunkReader(bytes[Symbol.asyncIterator]());
  let sent = 0;
  while (sent < descriptor.size) {
    const length = Math.min(chunkSize, descriptor.size - sent);
    const start = sent;
    const response = await client.request(image, {
      method: "PATCH",
      path: location,
      scopes: [pushScope(image)],
      headers: { "Content-Type": "application/octet-stream", "Content-Length": String(length), "Content-Range": `${start}-${start + length - 1}` },
      body: counted(reader.take(length), options.onProgress && ((n) => options.onProgress!(start + n))),
      signal: options.signal,
      what: `${what} (bytes ${start}-${start + length - 1})`,
    });
    await response.discard();
    location = nextLocation(response, image);
    sent += length;
  }
  if (!(await reader.atEnd())) throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: the blob is longer than its descriptor's ${descriptor.size} bytes`);
  const response = await client.request(image, {
    method: "PUT",
    path: withDigest(location, descriptor.digest),
    scopes: [pushScope(image)],
    headers: { "Content-Length": "0" },
    signal: options.signal,
    what: `${what} (closing)`,
  });
  await response.discard();
}

/** Ends an upload session that will not be finished, so the registry frees it; best effort. */
async function cancelUpload(client: RegistryClient, image: ImageReference, location: string): Promise<void> {
  await client
    .request(image, { method: "DELETE", path: location, scopes: [pushScope(image)], what: `cancelling an upload to ${image.host}/${image.repository}`, accept: [404] })
    .then((response) => response.discard())
    .catch(() => {});
}

/** The upload's next URL, from `Location` (relative to the request's URL, as registries may give it). */
function nextLocation(response: { headers: Headers; url: string }, image: ImageReference): string {
  const location = response.headers.get("location");
  if (!location) throw new RegistryError("INTERNAL", `${image.host} opened an upload without a Location`, { host: image.host });
  return new URL(location, response.url).toString();
}

function withDigest(location: string, digest: string): string {
  const url = new URL(location);
  url.searchParams.set("digest", digest);
  return url.toString();
}

async function* inMemory(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

async function* counted(bytes: AsyncIterable<Uint8Array>, onProgress: ((sent: number) => void) | undefined): AsyncGenerator<Uint8Array> {
  let sent = 0;
  for await (const chunk of bytes) {
    yield chunk;
    sent += chunk.byteLength;
    onProgress?.(sent);
  }
}

/** Cuts one byte stream into consecutive pieces of given lengths, each itself streamed. */
class ChunkReader {
  readonly #source: AsyncIterator<Uint8Array>;
  #pending: Uint8Array | undefined;

  constructor(source: AsyncIterator<Uint8Array>) {
    this.#source = source;
  }

  /** The next `length` bytes (fewer only if the source ends). */
  async *take(length: number): AsyncGenerator<Uint8Array> {
    let left = length;
    while (left > 0) {
      const chunk = this.#pending ?? (await this.#next());
      this.#pending = undefined;
      if (!chunk) return;
      if (chunk.byteLength > left) {
        this.#pending = chunk.subarray(left);
        yield chunk.subarray(0, left);
        return;
      }
      left -= chunk.byteLength;
      yield chunk;
    }
  }

  async atEnd(): Promise<boolean> {
    if (this.#pending?.byteLength) return false;
    return (await this.#next()) === undefined;
  }

  async #next(): Promise<Uint8Array | undefined> {
    for (;;) {
      const result = await this.#source.next();
      if (result.done) return undefined;
      if (result.value.byteLength > 0) return result.value;
    }
  }
}
