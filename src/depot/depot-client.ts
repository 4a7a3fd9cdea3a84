import type { BuildRun } from "../buildkit/build.js";
import { takeContextsInHand } from "../buildkit/context-hold.js";
import { validateBuildOptions } from "../buildkit/validate-options.js";
import { BuildKitNodeError } from "../errors.js";
import { createBuildsApi, type DepotBuilds } from "./builds.js";
import type { Clock } from "./clock.js";
import { type DepotBuildOptions, type DepotBuildResult, startDepotBuild } from "./depot-build.js";
import { HEALTH_INTERVAL_MS } from "./health.js";
import { createProjectsApi, type DepotProjects } from "./projects.js";
import { type PullOptions, type PullResult, type PushOptions, type PushResult, SavedBuilds } from "./saved-builds.js";
import type { KeepaliveOptions } from "../transport/http2-connection.js";
import { createDepotApi, DEFAULT_DEPOT_API_URL } from "./transport.js";

export interface DepotClientOptions {
  /** An organization API token. Default: `DEPOT_TOKEN`. */
  token?: string;
  /** Default: `DEPOT_API_URL`, else https://api.depot.dev. */
  apiUrl?: string;
  /** Default "2" (h2c with prior knowledge on an http:// URL). */
  httpVersion?: "1.1" | "2";
  /** HTTP/2 PING keepalive of the API connection: default every 30 s of silence, 20 s to answer (see `connect()`). */
  keepalive?: KeepaliveOptions;
  /**
   * Only for a Depot-compatible server whose machines are a dockerd's
   * BuildKit (a local Depot fronting `docker://`, see `LocalDepot.dockerEngine`):
   * that dockerd's Engine socket, which pushes of images built there go
   * through. Depot's own machines never need it. See `ConnectOptions.dockerEngine`.
   */
  dockerEngine?: string;
}

/**
 * Not public API: settings tests may change.
 * @internal
 */
export interface DepotClientInternalOptions extends DepotClientOptions {
  /** How often a held machine reports health. Default 5 s. */
  healthIntervalMs?: number;
  /** How often status batches go to Depot. Default 1 s. */
  statusIntervalMs?: number;
  /** The timers of health reports, cancellations and status batches. Default the system's. */
  clock?: Clock;
}

/**
 * Depot's API: projects, and builds with their machines. Speaks Connect
 * (binary protobuf) with the organization token for projects and
 * CreateBuild, and each build's own token for everything about that build.
 */
export class DepotClient {
  readonly projects: DepotProjects;
  readonly builds: DepotBuilds;
  readonly #saved: SavedBuilds;

  constructor(options: DepotClientOptions = {}) {
    const internal = options as DepotClientInternalOptions;
    const token = options.token ?? process.env.DEPOT_TOKEN;
    const apiUrl = options.apiUrl ?? (process.env.DEPOT_API_URL || DEFAULT_DEPOT_API_URL);
    const httpVersion = options.httpVersion ?? "2";
    if (httpVersion !== "1.1" && httpVersion !== "2") {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `httpVersion must be "1.1" or "2", not ${JSON.stringify(httpVersion)}`);
    }
    if (!/^https?:\/\/[^/]/i.test(apiUrl) || !URL.canParse(apiUrl)) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `the Depot API URL must be an http:// or https:// URL, not ${JSON.stringify(apiUrl)}`);
    }
    // Checked at the first call, not here: a client may be built before the token is known.
    const orgToken = (): string => {
      if (!token) throw new BuildKitNodeError("INVALID_ARGUMENT", "no Depot token: set DEPOT_TOKEN or pass { token } to new DepotClient()");
      return token;
    };
    const api = createDepotApi(apiUrl, httpVersion, options.keepalive);
    this.projects = createProjectsApi(api, orgToken);
    this.#saved = new SavedBuilds(api, orgToken);
    this.builds = createBuildsApi(api, orgToken, {
      healthIntervalMs: internal.healthIntervalMs ?? HEALTH_INTERVAL_MS,
      ...(internal.statusIntervalMs !== undefined ? { statusIntervalMs: internal.statusIntervalMs } : {}),
      ...(internal.clock ? { clock: internal.clock } : {}),
      ...(options.dockerEngine ? { dockerEngine: options.dockerEngine } : {}),
    });
  }

  /**
   * All of it in one call: registers the build, acquires one machine per
   * platform in parallel, builds each natively (events carry their
   * platform), pushes one image index for several platforms, reports the
   * result to Depot and releases every machine, whatever happens.
   */
  build(options: DepotBuildOptions): BuildRun<DepotBuildResult> {
    validateBuildOptions(options);
    // Before anything is awaited (registering the build, acquiring machines).
    const held = takeContextsInHand(options);
    const run = startDepotBuild(this, held.options);
    run.then(held.release, held.release);
    return run;
  }

  /**
   * Gets a saved build (`save: true`) out of Depot's registry: loads it into
   * a Docker Engine (the default; `tags` name it there) or writes it to
   * `dest` as a `docker load` tar or an OCI layout (`format`). Streams; the
   * image never sits in memory or, for Docker, on disk.
   */
  pull(buildId: string, options?: PullOptions): Promise<PullResult> {
    return this.#saved.pull(buildId, options);
  }

  /**
   * Copies a saved build to another registry under `tag` (index, manifests
   * and blobs, digests unchanged), with the destination's credentials from
   * `registryAuth` (default docker's config). Blobs already there are not
   * sent again; on the same registry they are mounted across repositories.
   */
  push(buildId: string, options: PushOptions): Promise<PushResult> {
    return this.#saved.push(buildId, options);
  }
}
