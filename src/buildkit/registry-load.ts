import { PassThrough } from "node:stream";
import type { CopyProgress } from "../registry/copy-image.js";
import type { Descriptor, Platform } from "../registry/manifest.js";
import type { ImageReference } from "../registry/reference.js";
import type { RegistryClient } from "../registry/registry-client.js";
import { localDockerSocket } from "./daemon-kind.js";
import { DockerEngine } from "./docker-engine.js";

export interface LoadRegistryImageOptions {
  /** The Docker Engine's socket. Default: `DOCKER_HOST` when it is `unix://…`, else /var/run/docker.sock. */
  dockerSocket?: string;
  /** The platform to load from a multi-platform image. Default: this machine's. */
  platform?: string | Platform;
  /** The tags Docker gives the image. Default: the reference, when it has a tag. */
  names?: string[];
  /** Aborts the transfer and the load: rejects with AbortError. */
  signal?: AbortSignal;
  /** Each blob's progress as it streams from the registry to Docker. */
  onProgress?: (event: CopyProgress) => void;
}

export interface LoadRegistryImageResult {
  /** The image manifest loaded. */
  descriptor: Descriptor;
  /** What Docker reports it loaded: the tags, or the image id when there are none. */
  loaded: string[];
}

/**
 * Loads an image from a registry into a Docker Engine (`POST /images/load`):
 * a `docker load` archive streamed from the registry straight into the
 * Engine, nothing on disk, one layer in flight at a time. For an Engine that
 * cannot reach the registry itself, or whose credentials differ.
 */
export async function loadRegistryImage(registry: RegistryClient, image: string | ImageReference, options: LoadRegistryImageOptions = {}): Promise<LoadRegistryImageResult> {
  const engine = new DockerEngine(options.dockerSocket ?? localDockerSocket());
  const archive = new PassThrough();
  const signal = options.signal ? { signal: options.signal } : {};
  // Either side failing ends the other (the archive is destroyed): the first failure is the cause.
  let cause: { error: unknown } | undefined;
  const first = (err: unknown) => {
    cause ??= { error: err };
    archive.destroy(err as Error);
    throw err;
  };
  const loading = engine.load(archive, signal).catch(first);
  const writing = registry
    .writeImageArchive(image, {
      format: "docker",
      dest: archive,
      ...signal,
      ...(options.platform !== undefined ? { platform: options.platform } : {}),
      ...(options.names ? { names: options.names } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    })
    .catch(first);
  try {
    const [written, loaded] = await Promise.all([writing, loading]);
    return { descriptor: written.descriptor, loaded };
  } catch (err) {
    await Promise.allSettled([writing, loading]);
    throw cause ? cause.error : err;
  }
}
