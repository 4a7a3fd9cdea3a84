import { type Descriptor, type Manifest, registryBlobs } from "./manifest.js";
import { type ImageReference, withDigest } from "./reference.js";
import type { RegistryClient, RegistryCallOptions } from "./registry-client.js";

export interface CopyImageOptions extends RegistryCallOptions {
  /** Mount blobs from the source repository when both are on one registry. Default true. */
  mount?: boolean;
  /** How many blobs move at once. Default 3. */
  concurrency?: number;
  /** Upload in PATCHes of this many bytes (see `pushBlob`). Default one PUT per blob. */
  chunkSize?: number;
  /** Each blob's and manifest's progress, for a progress display. */
  onProgress?: (event: CopyProgress) => void;
}

/** One blob or manifest of a copy (or an archive), as it moves. */
export interface CopyProgress {
  kind: "blob" | "manifest";
  digest: string;
  mediaType: string;
  size: number;
  /** Bytes moved so far; `size` once done. */
  current: number;
  /** `copying` while bytes move; then how it ended: sent, mounted, or already there. */
  status: "copying" | "copied" | "mounted" | "existed";
}

export interface CopyImageResult {
  /** What the target now holds under its tag (the source's bytes, so the same digest). */
  descriptor: Descriptor;
  /** Blobs by how they got there. */
  blobs: { copied: number; mounted: number; existed: number };
  /** Blob bytes sent to the target. */
  bytesCopied: number;
}

/** The default number of blobs in flight. */
const defaultConcurrency = 3;

/**
 * Copies the image `from` names to `to`: each manifest of an index (by
 * digest), each one's config and layers, then the top manifest under `to`'s
 * tag (or digest). The bytes of every manifest are kept as they are, so the
 * digests are the source's. Blobs shared by several platforms move once.
 */
export async function copyImage(client: RegistryClient, from: ImageReference, to: ImageReference, options: CopyImageOptions): Promise<CopyImageResult> {
  const copy = new ImageCopy(client, from, to, options);
  const top = await client.getManifest(from, signalOf(options));
  if (top.kind === "index") {
    for (const child of top.index.manifests) await copy.manifestByDigest(child);
  } else if (!(await client.headManifest(withDigest(to, top.descriptor.digest), signalOf(options)))) {
    // (A registry holds a manifest only with all its blobs: one it has needs none of them.)
    await copy.blobsOf(top);
  }
  const descriptor = await copy.putManifest(top, to.tag !== undefined || to.digest === undefined ? to : withDigest(to, top.descriptor.digest));
  return { descriptor, blobs: copy.counts, bytesCopied: copy.bytesCopied };
}

/** The state of one copy: blobs already handled (by digest), counts, the pool of transfers. */
export class ImageCopy {
  readonly counts = { copied: 0, mounted: 0, existed: 0 };
  bytesCopied = 0;
  readonly #client: RegistryClient;
  readonly #from: ImageReference;
  readonly #to: ImageReference;
  readonly #options: CopyImageOptions;
  readonly #blobs = new Map<string, Promise<void>>();
  readonly #pool: Pool;
  /** Stops the other transfers once one failed. */
  readonly #stop = new AbortController();
  readonly #call: RegistryCallOptions;

  constructor(client: RegistryClient, from: ImageReference, to: ImageReference, options: CopyImageOptions) {
    this.#client = client;
    this.#from = from;
    this.#to = to;
    this.#options = options;
    this.#pool = new Pool(Math.max(1, options.concurrency ?? defaultConcurrency));
    this.#call = { signal: options.signal ? AbortSignal.any([options.signal, this.#stop.signal]) : this.#stop.signal };
  }

  /** Copies a manifest the source holds by digest (with its blobs), unless the target has it. */
  async manifestByDigest(descriptor: Descriptor): Promise<void> {
    const target = withDigest(this.#to, descriptor.digest);
    const signal = this.#call;
    if (await this.#client.headManifest(target, signal)) {
      this.#progress("manifest", descriptor, descriptor.size, "existed");
      return;
    }
    const manifest = await this.#client.getManifest(withDigest(this.#from, descriptor.digest), signal);
    if (manifest.kind === "index") {
      for (const child of manifest.index.manifests) await this.manifestByDigest(child);
    } else {
      await this.blobsOf(manifest);
    }
    await this.putManifest(manifest, target);
  }

  /** An image manifest's config and layers, a few at a time; foreign layers (fetched from their `urls`) stay behind. */
  async blobsOf(manifest: Extract<Manifest, { kind: "image" }>): Promise<void> {
    await Promise.all(registryBlobs(manifest).map((blob) => this.#blob(blob))).catch((err: unknown) => {
      this.#stop.abort(err);
      throw err;
    });
  }

  async putManifest(manifest: Manifest, target: ImageReference): Promise<Descriptor> {
    const descriptor = await this.#client.putManifest(target, { mediaType: manifest.descriptor.mediaType, bytes: manifest.bytes }, this.#call);
    this.#progress("manifest", descriptor, descriptor.size, "copied");
    return descriptor;
  }

  #blob(blob: Descriptor): Promise<void> {
    let done = this.#blobs.get(blob.digest);
    if (!done) {
      done = this.#pool.run(() => this.#copyBlob(blob));
      this.#blobs.set(blob.digest, done);
    }
    return done;
  }

  async #copyBlob(blob: Descriptor): Promise<void> {
    const mount = this.#options.mount !== false && this.#from.host === this.#to.host;
    this.#progress("blob", blob, 0, "copying");
    let sent = 0;
    const { how } = await this.#client.pushBlob(this.#to, blob, () => this.#client.getBlob(this.#from, blob, this.#call), {
      ...this.#call,
      ...(mount ? { mountFrom: this.#from } : {}),
      ...(this.#options.chunkSize !== undefined ? { chunkSize: this.#options.chunkSize } : {}),
      onProgress: (n) => {
        sent = n;
        this.#progress("blob", blob, n, "copying");
      },
    });
    if (how === "uploaded") {
      this.counts.copied++;
      this.bytesCopied += sent;
    } else {
      this.counts[how]++;
    }
    this.#progress("blob", blob, blob.size, how === "uploaded" ? "copied" : how);
  }

  #progress(kind: CopyProgress["kind"], descriptor: Descriptor, current: number, status: CopyProgress["status"]): void {
    this.#options.onProgress?.({ kind, digest: descriptor.digest, mediaType: descriptor.mediaType, size: descriptor.size, current, status });
  }
}

function signalOf(options: RegistryCallOptions): RegistryCallOptions {
  return options.signal ? { signal: options.signal } : {};
}

/** Runs at most `size` tasks at once, the rest in order of arrival. */
export class Pool {
  readonly #size: number;
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(size: number) {
    this.#size = size;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#size) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#running++;
    try {
      return await task();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }
}
