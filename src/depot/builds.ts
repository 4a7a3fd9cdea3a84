import { Code, ConnectError } from "@connectrpc/connect";
import { AbortError, BuildKitNodeError } from "../errors.js";
import { Command } from "../gen/depot/cli/v1/build_pb.js";
import { createLogger } from "../log.js";
import type { RegistryAuth, RegistryCredentials } from "../session/auth.js";
import { redact } from "./errors.js";
import type { Clock } from "./clock.js";
import { DEPOT_REGISTRY, type SavedImage, savedImage, withDepotCredentials } from "./saved-image.js";
import { StatusReporter } from "./status-reporter.js";
import type { StepTimings } from "./step-timings.js";
import { type AcquireOptions, acquireMachine, type DepotMachine, type Machine } from "./machine.js";
import { callDepot, type DepotApi } from "./transport.js";

const log = createLogger("depot");

export const FINISH_TIMEOUT_MS = 30_000;
/** Asking where a picked-up build saves: a little, then Depot's own registry. */
const SAVE_REGISTRY_TIMEOUT_MS = 10_000;
/** Step timings are for Depot's UI: not worth holding a build's end up for long. */
const TIMINGS_TIMEOUT_MS = 5_000;
/** CreateBuild: 200 ms doubling, at most 6 tries (about 6 s of waiting in all), only while the request cannot have reached Depot. */
const CREATE_ATTEMPTS = 6;

export interface CreateBuildInput {
  projectId: string;
  /** Image names the build will produce (shown in Depot's UI). */
  tags?: string[];
  push?: boolean;
  load?: boolean;
  /** Also save the image in Depot's registry (its names: the build's `savedTags`). */
  save?: boolean;
  /** More tags for the saved image (the build id is always one). */
  saveTags?: string[];
}

export interface GetBuildOptions {
  /** The build's own token (what CreateBuild gave whoever started it). Default: `DEPOT_TOKEN`. */
  token?: string;
  signal?: AbortSignal;
}

/** A build registered with Depot. */
export interface DepotBuild {
  readonly id: string;
  /** The build's own token; Depot accepts it only for this build's calls. */
  readonly token: string;
  /** The build's page in Depot's UI. */
  readonly url: string;
  /** The project Depot runs it in (Depot may choose another than asked). */
  readonly projectId: string;
  /**
   * The names its image is saved under in Depot's registry when it was
   * created with `save` (the first is `<registry>/<project>:<build id>`);
   * empty otherwise. Push there with `registryAuth()`.
   */
  readonly savedTags: readonly string[];
  /**
   * Registry credentials for this build's pushes: those Depot issued for its
   * registry (CreateBuild's, else `x-token` with the build token) over
   * `base` (default "docker-config"). Give it to the build as `registryAuth`.
   */
  registryAuth(base?: RegistryAuth): RegistryAuth;
  /**
   * Acquires a machine: `platform` is "amd64" | "arm64" | "linux/amd64" |
   * "linux/arm64" | "x86_64" | "aarch64" (anything else INVALID_ARGUMENT).
   * Health reports start at once and last until the machine is released or
   * the build finished. Rejects with TIMEOUT after `timeoutMs` (default 10
   * minutes), AbortError when `signal` aborts.
   */
  acquireMachine(platform: string, options?: AcquireOptions): Promise<DepotMachine>;
  /**
   * Reports the result exactly once: undefined → success; an AbortError /
   * code CANCELED / ConnectError canceled → canceled; anything else → error
   * with its message. Later calls return the first call's promise. Uses its
   * own timeout (30 s), never the build's signal, so a canceled build can
   * still report. Releases the build's machines first, then tells Depot the
   * steps `machine.build()` ran, with their times (ReportTimings, bounded).
   */
  finish(error?: unknown): Promise<void>;
  /**
   * The names a save of this build goes to: those CreateBuild answered, or,
   * for a build picked up from elsewhere, `<registry>/<project>:<build id>`
   * and one per save tag in the registry Depot names (GetPullToken's
   * `registry_host`; Depot's own if it names none), with `x-token` and the
   * build token as its credentials.
   * @internal
   */
  saveNames(saveTags: readonly string[], options?: { signal?: AbortSignal | undefined }): Promise<string[]>;
}

/** Not public API: settings tests may change. */
export interface BuildSettings {
  healthIntervalMs: number;
  statusIntervalMs?: number;
  clock?: Clock;
  /** The client's `dockerEngine`, for machines that are a dockerd's BuildKit. */
  dockerEngine?: string;
}

export interface DepotBuilds {
  /** Registers a build (CreateBuild with the organization token; transient failures retried). */
  create(input: CreateBuildInput, options?: { signal?: AbortSignal }): Promise<DepotBuild>;
  /**
   * Picks up a build started elsewhere (by Depot's SDK, a CI step, another
   * process) from its id and its build token (GetBuild): acquire its
   * machines and finish it as if it had been created here.
   */
  get(buildId: string, options?: GetBuildOptions): Promise<DepotBuild>;
  /**
   * The build `DEPOT_BUILD_ID` names, with `DEPOT_TOKEN` as its token (how
   * Depot's SDK hands a build to the depot CLI), or undefined when
   * `DEPOT_BUILD_ID` is not set.
   */
  fromEnvironment(env?: NodeJS.ProcessEnv, options?: { signal?: AbortSignal }): Promise<DepotBuild | undefined>;
}

export function createBuildsApi(api: DepotApi, orgToken: () => string, settings: BuildSettings): DepotBuilds {
  const builds: DepotBuilds = {
    async create(input, options = {}) {
      const token = orgToken();
      if (!input?.projectId) throw new BuildKitNodeError("INVALID_ARGUMENT", "builds.create: projectId is required");
      const saveTags = input.saveTags ?? [];
      if (saveTags.length > 0 && !input.save) throw new BuildKitNodeError("INVALID_ARGUMENT", "builds.create: saveTags needs save: true");
      const request = {
        projectId: input.projectId,
        options: [
          { command: Command.BUILD, tags: input.tags ?? [], push: input.push ?? false, load: input.load ?? false, save: input.save ?? false, saveTags },
        ],
      };
      const reply = await callDepot("CreateBuild", token, (call) => api.builds.createBuild(request, call), {
        signal: options.signal,
        maxAttempts: CREATE_ATTEMPTS,
        // Two tries that both reach Depot would register two builds.
        idempotent: false,
      });
      if (!reply.buildId || !reply.buildToken) {
        throw new BuildKitNodeError("INTERNAL", "Depot CreateBuild returned no build id or build token");
      }
      const projectId = reply.projectId || input.projectId;
      log(`build ${reply.buildId} created in project ${projectId}`);
      const identity = { id: reply.buildId, token: reply.buildToken, projectId };
      return new Build(api, {
        ...identity,
        url: reply.buildUrl,
        secrets: [token, reply.buildToken],
        settings,
        saved: savedImage(reply, identity, saveTags),
        save: input.save ?? false,
      });
    },

    async get(buildId, options = {}) {
      const token = options.token ?? process.env.DEPOT_TOKEN;
      if (!buildId) throw new BuildKitNodeError("INVALID_ARGUMENT", "builds.get: a build id is required");
      if (!token) throw new BuildKitNodeError("INVALID_ARGUMENT", "builds.get: the build's token is required (pass { token } or set DEPOT_TOKEN)");
      const reply = await callDepot("GetBuild", token, (call) => api.builds.getBuild({ buildId }, call), { signal: options.signal, maxAttempts: 4 });
      const identity = { id: reply.buildId || buildId, token, projectId: reply.projectId };
      log(`picked up build ${identity.id} of project ${identity.projectId}`);
      return new Build(api, {
        ...identity,
        url: reply.buildUrl,
        secrets: [token],
        settings,
        saved: savedImage({ additionalTags: [], additionalCredentials: [] }, identity, []),
        save: false,
      });
    },

    async fromEnvironment(env = process.env, options = {}) {
      const buildId = env.DEPOT_BUILD_ID;
      if (!buildId) return undefined;
      return builds.get(buildId, { ...(env.DEPOT_TOKEN ? { token: env.DEPOT_TOKEN } : {}), ...(options.signal ? { signal: options.signal } : {}) });
    },
  };
  return builds;
}

class Build implements DepotBuild {
  readonly id: string;
  readonly url: string;
  readonly projectId: string;
  readonly #token: string;
  readonly #api: DepotApi;
  readonly #secrets: string[];
  readonly #settings: BuildSettings;
  readonly #ended = new AbortController();
  readonly #machines = new Set<Machine>();
  /** The solves `machine.build()` ran, for ReportTimings. */
  readonly #steps: { platform: string; timings: StepTimings }[] = [];
  readonly #credentials: Map<string, RegistryCredentials>;
  readonly savedTags: readonly string[];
  #finish: Promise<void> | undefined;

  constructor(
    api: DepotApi,
    build: {
      id: string;
      token: string;
      url: string;
      projectId: string;
      secrets: string[];
      settings: BuildSettings;
      /** Depot's names and credentials for its registry; the names only count when the build is saved. */
      saved: SavedImage;
      save: boolean;
    },
  ) {
    this.#api = api;
    this.id = build.id;
    this.#token = build.token;
    this.url = build.url;
    this.projectId = build.projectId;
    this.#secrets = build.secrets;
    this.#settings = build.settings;
    this.#credentials = build.saved.credentials;
    this.savedTags = build.save ? build.saved.tags : [];
  }

  registryAuth(base?: RegistryAuth): RegistryAuth {
    return withDepotCredentials(base, this.#credentials);
  }

  /** A getter, so that logging or inspecting the build does not print it. */
  get token(): string {
    return this.#token;
  }

  async acquireMachine(platform: string, options: AcquireOptions = {}): Promise<DepotMachine> {
    const machine = await acquireMachine(
      {
        api: this.#api,
        buildId: this.id,
        buildToken: this.#token,
        healthIntervalMs: this.#settings.healthIntervalMs,
        ...(this.#settings.clock ? { clock: this.#settings.clock } : {}),
        ...(this.#settings.dockerEngine ? { dockerEngine: this.#settings.dockerEngine } : {}),
        ended: this.#ended.signal,
        reporting: (machinePlatform) => ({
          statusReporter: () => this.#statusReporter(machinePlatform),
          recordSteps: (timings) => this.#steps.push({ platform: machinePlatform, timings }),
        }),
      },
      platform,
      options,
    );
    if (this.#ended.signal.aborted) {
      await machine.release();
      throw new BuildKitNodeError("FAILED_PRECONDITION", `build ${this.id} was finished while acquiring its ${machine.platform} machine`);
    }
    this.#machines.add(machine);
    machine.signal.addEventListener("abort", () => this.#machines.delete(machine), { once: true });
    return machine;
  }

  finish(error?: unknown): Promise<void> {
    this.#finish ??= this.#report(error);
    return this.#finish;
  }

  async saveNames(saveTags: readonly string[], options: { signal?: AbortSignal | undefined } = {}): Promise<string[]> {
    if (this.savedTags.length > 0) return [...this.savedTags];
    let registry = DEPOT_REGISTRY;
    try {
      const reply = await callDepot("GetPullToken", this.#token, (call) => this.#api.builds.getPullToken({ buildId: this.id }, call), {
        signal: options.signal,
        maxAttempts: 2,
        timeoutMs: SAVE_REGISTRY_TIMEOUT_MS,
      });
      if (reply.registryHost) registry = reply.registryHost;
    } catch (err) {
      if (options.signal?.aborted) throw err;
      log(`build ${this.id}: Depot named no registry to save in (${(err as Error).message}); saving to ${registry}`);
    }
    const saved = savedImage({ additionalTags: [], additionalCredentials: [] }, this, saveTags, registry);
    for (const [host, credentials] of saved.credentials) this.#credentials.set(host, credentials);
    return saved.tags;
  }

  #statusReporter(platform: string): StatusReporter {
    const { statusIntervalMs, clock } = this.#settings;
    return new StatusReporter({
      api: this.#api,
      buildId: this.id,
      token: this.#token,
      platform,
      ...(statusIntervalMs !== undefined ? { intervalMs: statusIntervalMs } : {}),
      ...(clock ? { clock } : {}),
    });
  }

  /** Each machine's steps; named with their platform when machines of several platforms ran. */
  async #reportTimings(): Promise<void> {
    const multi = new Set(this.#steps.map((s) => s.platform)).size > 1;
    const steps = this.#steps.flatMap(({ platform, timings }) => timings.steps(multi ? `linux/${platform}` : undefined));
    if (steps.length === 0) return;
    await callDepot("ReportTimings", this.#token, (call) => this.#api.builds.reportTimings({ buildId: this.id, buildSteps: steps }, call), {
      timeoutMs: TIMINGS_TIMEOUT_MS,
    }).catch((err: unknown) => log(`build ${this.id}: step timings not reported: ${(err as Error).message}`));
  }

  async #report(error: unknown): Promise<void> {
    this.#ended.abort();
    await Promise.all([...this.#machines].map((m) => m.release()));
    await this.#reportTimings();
    const result = finishResult(error, this.#secrets);
    log(`build ${this.id}: finishing (${result.case})`);
    await callDepot("FinishBuild", this.#token, (call) => this.#api.builds.finishBuild({ buildId: this.id, result }, call), {
      maxAttempts: 4,
      deadline: Date.now() + FINISH_TIMEOUT_MS,
    });
  }
}

/** Longer messages are cut: Depot shows it, a whole log does not belong there. */
const MAX_ERROR_MESSAGE = 4_000;

/** What FinishBuild reports for `error`. */
export function finishResult(
  error: unknown,
  secrets: readonly string[] = [],
): { case: "success"; value: object } | { case: "canceled"; value: object } | { case: "error"; value: { error: string } } {
  if (error === undefined || error === null) return { case: "success", value: {} };
  if (isCancellation(error)) return { case: "canceled", value: {} };
  let message = error instanceof Error ? error.message || error.name : String(error);
  message = redact(message || "the build failed", secrets);
  if (message.length > MAX_ERROR_MESSAGE) message = `${message.slice(0, MAX_ERROR_MESSAGE)}…`;
  return { case: "error", value: { error: message } };
}

function isCancellation(error: unknown): boolean {
  if (error instanceof AbortError) return true;
  if (error instanceof BuildKitNodeError) return error.code === "CANCELED";
  if (error instanceof ConnectError) return error.code === Code.Canceled;
  return error instanceof Error && error.name === "AbortError";
}
