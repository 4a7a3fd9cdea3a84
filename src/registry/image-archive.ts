import { once } from "node:events";
import { Readable, type Writable } from "node:stream";
import * as tar from "tar-stream";
import { AbortError, BuildKitNodeError } from "../errors.js";
import { streamToOutput } from "../session/stream-to-output.js";
import type { CopyProgress } from "./copy-image.js";
import {
  configPlatform,
  type Descriptor,
  formatPlatform,
  type ImageIndex,
  isAttestation,
  isForeign,
  type Manifest,
  MediaType,
  type Platform,
  parsePlatform,
  platformMatches,
  registryBlobs,
} from "./manifest.js";
import { formatImageReference, type ImageReference, parseImageReference, withDigest, withTag } from "./reference.js";
import type { RegistryClient, RegistryCallOptions } from "./registry-client.js";

export interface ImageArchiveOptions extends RegistryCallOptions {
  /**
   * `oci`: an OCI image layout (`oci-layout`, `index.json`, `blobs/`).
   * `docker`: what `docker load` takes (`manifest.json` with the config and
   * layers; the same tar is also an OCI layout). One platform only.
   */
  format: "oci" | "docker";
  /** A file path (written whole or not at all) or a Writable (ended when done, destroyed on a failure). */
  dest: string | Writable;
  /**
   * The platform to take from an index (`linux/arm64`). Default: for
   * `docker`, this machine's (`linux/amd64` on x64); for `oci`, every
   * platform the index has.
   */
  platform?: string | Platform;
  /**
   * The names to record: `docker load` tags the image with them
   * (`RepoTags`); an OCI layout lists them in `index.json`. Default: the
   * reference itself when it has a tag.
   */
  names?: string[];
  /** Each blob's progress as it is written. */
  onProgress?: (event: CopyProgress) => void;
}

export interface ImageArchiveResult {
  /** What the archive's `index.json` points at: the image manifest, or the whole index. */
  descriptor: Descriptor;
  /** Platforms of the images the archive holds. */
  platforms: Platform[];
  /** The names recorded, canonical (`docker.io/library/app:1`). */
  names: string[];
}

/** Every blob of the archive: manifests in memory (small), the rest streamed from the registry. */
interface ArchivePlan {
  top: Manifest;
  manifests: Manifest[];
  blobs: Descriptor[];
  platforms: Platform[];
}

/**
 * Streams an image out of the registry into a tar, one blob at a time,
 * never holding a layer in memory: the manifests first, then configs and
 * layers as they arrive (each checked against its digest), then
 * `index.json` (and `manifest.json` for Docker).
 */
export async function writeImageArchive(client: RegistryClient, image: ImageReference, options: ImageArchiveOptions): Promise<ImageArchiveResult> {
  // Stops reading the registry when the destination failed.
  const stop = new AbortController();
  const call: RegistryCallOptions = { signal: options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal };
  let names: ImageReference[];
  let plan: ArchivePlan;
  try {
    if (options.format !== "oci" && options.format !== "docker") throw new BuildKitNodeError("INVALID_ARGUMENT", `format must be "oci" or "docker"`);
    names = (options.names ?? (image.tag !== undefined ? [formatImageReference(image)] : [])).map((name) => {
      const parsed = parseImageReference(name);
      return parsed.tag !== undefined ? parsed : withTag(parsed, "latest");
    });
    plan = await planArchive(client, image, options, call);
  } catch (err) {
    // A Writable is the caller's reader's (a Docker load, say): it must learn that nothing comes,
    // as pipeline() would tell it, without crashing a caller that listens for nothing.
    if (typeof options.dest !== "string") options.dest.once("error", () => {}).destroy(err as Error);
    throw err;
  }

  const pack = tar.pack();
  // Its failures reach the caller through `writing` and `sinking`; a destroyed pack must not throw.
  pack.on("error", () => {});
  const writing = writeEntries(client, image, plan, names, options, pack, call).then(
    () => pack.finalize(),
    (err: unknown) => {
      pack.destroy(err as Error);
      throw err;
    },
  );
  // Streams as Node sees them: the pack is a streamx Readable.
  const archive = Readable.from(pack as unknown as AsyncIterable<Uint8Array>, { objectMode: false });
  const sinking = sink(archive, options.dest, options.signal).catch((err: unknown) => {
    stop.abort(err);
    throw err;
  });
  // Both sides settle (a partial file is removed) before the call does.
  const [written, sunk] = await Promise.allSettled([writing, sinking]);
  if (written.status === "rejected" || sunk.status === "rejected") {
    if (options.signal?.aborted) throw new AbortError("writing the image archive was aborted", { cause: options.signal.reason });
    // The destination's own failure (a full disk, a reader gone) comes first, as one of ours.
    const failure: unknown = stop.signal.aborted ? stop.signal.reason : written.status === "rejected" ? written.reason : (sunk as PromiseRejectedResult).reason;
    throw BuildKitNodeError.from(failure, "writing the image archive");
  }
  return { descriptor: plan.top.descriptor, platforms: plan.platforms, names: names.map((name) => formatImageReference(name)) };
}

/** Picks the manifest(s) the archive holds and lists their blobs. */
async function planArchive(client: RegistryClient, image: ImageReference, options: ImageArchiveOptions, call: RegistryCallOptions): Promise<ArchivePlan> {
  const top = await client.getManifest(image, call);
  const asked = options.platform !== undefined ? parsePlatform(options.platform) : undefined;
  if (top.kind === "image") {
    // One image: it is what was asked for, unless a platform was named that it is not.
    const platform = configPlatform(await client.getBlobJson(image, top.manifest.config, call));
    if (asked && platform && !platformMatches(asked, platform)) {
      throw new BuildKitNodeError("NOT_FOUND", `${formatImageReference(image)} is a ${formatPlatform(platform)} image, not ${formatPlatform(asked)}`);
    }
    return { top, manifests: [top], blobs: registryBlobs(top), platforms: platform ? [platform] : [] };
  }
  const images = top.index.manifests.filter((entry) => !isAttestation(entry));
  // From an index, Docker takes one platform: this machine's unless told otherwise.
  const wanted = asked ?? (options.format === "docker" ? hostPlatform() : undefined);
  if (wanted) {
    const entry = images.find((candidate) => platformMatches(wanted, candidate.platform));
    if (!entry) {
      const have = images.map((candidate) => (candidate.platform ? formatPlatform(candidate.platform) : "unknown")).join(", ");
      throw new BuildKitNodeError("NOT_FOUND", `${formatImageReference(image)} has no ${formatPlatform(wanted)} image (it has ${have || "none"})`);
    }
    const manifest = await client.getManifest(withDigest(image, entry.digest), call);
    if (manifest.kind !== "image") throw new BuildKitNodeError("UNIMPLEMENTED", `${formatImageReference(image)}: nested indexes are not supported`);
    return { top: manifest, manifests: [manifest], blobs: registryBlobs(manifest), platforms: entry.platform ? [entry.platform] : [] };
  }
  // The whole index: every manifest it lists (attestations too) and their blobs.
  const manifests: Manifest[] = [top];
  const blobs: Descriptor[] = [];
  for (const entry of top.index.manifests) {
    const manifest = await client.getManifest(withDigest(image, entry.digest), call);
    if (manifest.kind !== "image") throw new BuildKitNodeError("UNIMPLEMENTED", `${formatImageReference(image)}: nested indexes are not supported`);
    manifests.push(manifest);
    blobs.push(...registryBlobs(manifest));
  }
  return { top, manifests, blobs: unique(blobs), platforms: images.flatMap((entry) => (entry.platform ? [entry.platform] : [])) };
}

async function writeEntries(
  client: RegistryClient,
  image: ImageReference,
  plan: ArchivePlan,
  names: ImageReference[],
  options: ImageArchiveOptions,
  pack: tar.Pack,
  call: RegistryCallOptions,
): Promise<void> {
  await addFile(pack, "oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  for (const manifest of plan.manifests) await addFile(pack, blobPath(manifest.descriptor.digest), manifest.bytes);
  for (const blob of plan.blobs) {
    const report = (current: number, status: CopyProgress["status"]) =>
      options.onProgress?.({ kind: "blob", digest: blob.digest, mediaType: blob.mediaType, size: blob.size, current, status });
    report(0, "copying");
    await addStream(pack, blobPath(blob.digest), blob.size, await client.getBlob(image, blob, call), (n) => report(n, "copying"), call.signal);
    report(blob.size, "copied");
  }
  const { mediaType, digest, size } = plan.top.descriptor;
  const top: Descriptor = { mediaType, digest, size };
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests:
      names.length === 0
        ? [top]
        : names.map((name) => ({ ...top, annotations: { "io.containerd.image.name": formatImageReference(name), "org.opencontainers.image.ref.name": name.tag! } })),
  };
  await addFile(pack, "index.json", JSON.stringify(index));
  if (options.format === "docker" && plan.top.kind === "image") {
    const { config, layers } = plan.top.manifest;
    const entry = {
      Config: blobPath(config.digest),
      RepoTags: names.map((name) => formatImageReference(name, "familiar")),
      Layers: layers.filter((layer) => !isForeign(layer)).map((layer) => blobPath(layer.digest)),
    };
    await addFile(pack, "manifest.json", JSON.stringify([entry]));
  }
}

function unique(blobs: Descriptor[]): Descriptor[] {
  return [...new Map(blobs.map((blob) => [blob.digest, blob])).values()];
}

/** `blobs/sha256/<hex>` */
function blobPath(digest: string): string {
  return `blobs/${digest.replace(":", "/")}`;
}

/** This machine's platform, as Docker would pull it (Node's arch names → Go's). */
export function hostPlatform(): Platform {
  const goArch: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };
  return { os: "linux", architecture: goArch[process.arch] ?? process.arch };
}

const fileHeader = { mode: 0o644, mtime: new Date(0) };

async function addFile(pack: tar.Pack, name: string, content: string | Uint8Array): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    pack.entry({ name, ...fileHeader }, typeof content === "string" ? Buffer.from(content) : Buffer.from(content), (err) => (err ? reject(err) : resolve()));
  });
}

/** One tar entry from a stream, honouring the pack's backpressure. */
async function addStream(
  pack: tar.Pack,
  name: string,
  size: number,
  body: AsyncIterable<Uint8Array>,
  onProgress: (written: number) => void,
  signal: AbortSignal | undefined,
): Promise<void> {
  let done: (err?: Error | null) => void = () => {};
  const finished = new Promise<void>((resolve, reject) => {
    done = (err) => (err ? reject(err) : resolve());
  });
  // Awaited at the end; when the loop fails first, the entry's own failure is a consequence.
  finished.catch(() => {});
  const entry = pack.entry({ name, size, ...fileHeader }, (err) => done(err));
  // (Its failure comes through the callback; destroyed with the pack, it must not throw.)
  entry.on("error", () => {});
  let written = 0;
  try {
    for await (const chunk of body) {
      written += chunk.byteLength;
      if (!entry.write(chunk)) await once(entry as unknown as NodeJS.EventEmitter, "drain", signal ? { signal } : {});
      onProgress(written);
    }
  } catch (err) {
    entry.destroy(err as Error);
    throw err;
  }
  entry.end(undefined);
  await finished;
}

/** Pipes the archive to a Writable, or to a file that appears only once it is whole. */
async function sink(archive: Readable, dest: string | Writable, signal: AbortSignal | undefined): Promise<void> {
  await streamToOutput(archive, dest, signal).catch((err: unknown) => {
    throw signal?.aborted ? new AbortError("writing the image archive was aborted", { cause: signal.reason }) : err;
  });
}
