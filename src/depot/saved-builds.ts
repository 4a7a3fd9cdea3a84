import type { Writable } from "node:stream";
import { dockerEngineSocketPath } from "../buildkit/daemon-kind.js";
import { loadRegistryImage } from "../buildkit/registry-load.js";
import { BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import type { CopyProgress } from "../registry/copy-image.js";
import type { Descriptor } from "../registry/manifest.js";
import { parseImageReference } from "../registry/reference.js";
import { RegistryClient } from "../registry/registry-client.js";
import type { RegistryAuth, RegistryCredentials } from "../session/auth.js";
import { registryHost } from "../session/registry-host.js";
import { withDepotCredentials } from "./saved-image.js";
import { callDepot, type DepotApi } from "./transport.js";

const log = createLogger("depot");

/** Options of `depot.pull()` and `depot.push()`. */
export interface SavedBuildOptions {
  /**
   * The token to ask Depot with: the client's organization token by default;
   * a build's own token works for that build.
   */
  token?: string;
  /** Each blob's and manifest's progress. */
  onProgress?: (event: CopyProgress) => void;
  signal?: AbortSignal;
}

export interface PullOptions extends SavedBuildOptions {
  /**
   * Where the image goes: a Docker Engine (`"docker"`, the default: loaded
   * through its API, nothing on disk) or an archive (`dest`).
   */
  dest?: string | Writable;
  /** With `dest`: an OCI layout or a `docker load` tar. Default "docker". */
  format?: "oci" | "docker";
  /** The names Docker (or the archive) gives the image, e.g. `["app:dev"]`. Default: its name in Depot's registry. */
  tags?: string[];
  /** The platform to take from a multi-platform image. Default this machine's (every platform for an OCI archive). */
  platform?: string;
  /**
   * The Docker Engine to load into: its socket, `unix:///path` or `/path` (as
   * `connect()`'s `dockerEngine` and the CLI's `--docker-engine` take it).
   * Default `DOCKER_HOST` when it is `unix://…`, else /var/run/docker.sock.
   */
  dockerEngine?: string;
}

export interface PullResult {
  /** The saved image in Depot's registry. */
  reference: string;
  /** What was pulled: the image manifest (or, for an OCI archive of several platforms, the index). */
  descriptor: Descriptor;
  /** With Docker: what the Engine reports it loaded (its tags, or the image id). */
  loaded?: string[];
}

export interface PushOptions extends SavedBuildOptions {
  /** Where to push: one or more `name:tag` (required). */
  tag: string | string[];
  /** Credentials for the destination registries. Default "docker-config". */
  registryAuth?: RegistryAuth;
}

export interface PushResult {
  /** The saved image in Depot's registry. */
  reference: string;
  pushed: { name: string; digest: string }[];
}

/** Where Depot keeps a saved build, and how to read it. */
interface PullInfo {
  reference: string;
  host: string;
  credentials: RegistryCredentials;
}

/**
 * Reads saved builds back out of Depot's registry: `pull` (into a Docker
 * Engine or an archive) and `push` (to another registry, with its own
 * credentials). GetPullInfo names the image and its credentials; when it
 * gives none, GetPullToken issues a pull token (user `x-token`).
 */
export class SavedBuilds {
  readonly #api: DepotApi;
  readonly #orgToken: () => string;

  constructor(api: DepotApi, orgToken: () => string) {
    this.#api = api;
    this.#orgToken = orgToken;
  }

  async pull(buildId: string, options: PullOptions = {}): Promise<PullResult> {
    if (options.format !== undefined && options.dest === undefined) throw new BuildKitNodeError("INVALID_ARGUMENT", "pull: format needs dest");
    const dockerSocket = options.dockerEngine === undefined ? undefined : dockerEngineSocketPath(options.dockerEngine, "pull: dockerEngine");
    const info = await this.#pullInfo(buildId, options);
    const registry = new RegistryClient({ auth: (host) => (registryHost(host) === registryHost(info.host) ? info.credentials : undefined) });
    const progress = options.onProgress ? { onProgress: options.onProgress } : {};
    const signal = options.signal ? { signal: options.signal } : {};
    const platform = options.platform !== undefined ? { platform: options.platform } : {};
    const names = options.tags?.length ? { names: options.tags } : {};
    if (options.dest !== undefined) {
      const written = await registry.writeImageArchive(info.reference, { format: options.format ?? "docker", dest: options.dest, ...platform, ...names, ...progress, ...signal });
      log(`pulled build ${buildId} into a ${options.format ?? "docker"} archive`);
      return { reference: info.reference, descriptor: written.descriptor };
    }
    const loaded = await loadRegistryImage(registry, info.reference, {
      ...(dockerSocket ? { dockerSocket } : {}),
      ...platform,
      ...names,
      ...progress,
      ...signal,
    });
    log(`pulled build ${buildId} into Docker: ${loaded.loaded.join(", ")}`);
    return { reference: info.reference, descriptor: loaded.descriptor, loaded: loaded.loaded };
  }

  async push(buildId: string, options: PushOptions): Promise<PushResult> {
    const tags = typeof options?.tag === "string" ? [options.tag] : (options?.tag ?? []);
    if (tags.length === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", "push: a tag to push to is required");
    const targets = tags.map((tag) => parseImageReference(tag)); // refuses a bad name before any call
    const info = await this.#pullInfo(buildId, options);
    // Depot's credentials for its registry, the user's for everything else.
    const registry = new RegistryClient({ auth: withDepotCredentials(options.registryAuth, new Map([[registryHost(info.host), info.credentials]])) });
    const pushed: { name: string; digest: string }[] = [];
    for (const [i, target] of targets.entries()) {
      const copied = await registry.copyImage(info.reference, target, {
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      log(`pushed build ${buildId} to ${tags[i]} (${copied.blobs.copied} blobs sent, ${copied.blobs.mounted} mounted, ${copied.blobs.existed} there already)`);
      pushed.push({ name: tags[i]!, digest: copied.descriptor.digest });
    }
    return { reference: info.reference, pushed };
  }

  async #pullInfo(buildId: string, options: SavedBuildOptions): Promise<PullInfo> {
    if (!buildId || typeof buildId !== "string") throw new BuildKitNodeError("INVALID_ARGUMENT", "a build id is required");
    const token = options.token ?? this.#orgToken();
    const call = { signal: options.signal, maxAttempts: 4 };
    const info = await callDepot("GetPullInfo", token, (c) => this.#api.builds.getPullInfo({ buildId }, c), call);
    if (!info.reference) throw new BuildKitNodeError("NOT_FOUND", `build ${buildId} has no saved image in Depot's registry (was it built with save?)`);
    const host = info.registryHost || parseImageReference(info.reference).host;
    if (info.username || info.password) return { reference: info.reference, host, credentials: { username: info.username || "x-token", password: info.password } };
    const pull = await callDepot("GetPullToken", token, (c) => this.#api.builds.getPullToken({ buildId }, c), call);
    if (!pull.token) throw new BuildKitNodeError("INTERNAL", `Depot GetPullToken gave no token for build ${buildId}`);
    return { reference: info.reference, host: pull.registryHost || host, credentials: { username: "x-token", password: pull.token } };
  }
}
