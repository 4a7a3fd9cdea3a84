import { Code, ConnectError } from "@connectrpc/connect";
import { AbortError, BuildKitNodeError } from "../errors.js";
import { Command } from "../gen/depot/cli/v1/build_pb.js";
import { createLogger } from "../log.js";
import { redact } from "./errors.js";
import { type AcquireOptions, acquireMachine, type DepotMachine, type Machine } from "./machine.js";
import { callDepot, type DepotApi } from "./transport.js";

const log = createLogger("depot");

export const FINISH_TIMEOUT_MS = 30_000;
/** CreateBuild: 200 ms doubling, at most 6 tries (about 6 s of waiting in all), only while the request cannot have reached Depot. */
const CREATE_ATTEMPTS = 6;

export interface CreateBuildInput {
  projectId: string;
  /** Image names the build will produce (shown in Depot's UI). */
  tags?: string[];
  push?: boolean;
  load?: boolean;
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
   * still report. Releases the build's machines first.
   */
  finish(error?: unknown): Promise<void>;
}

export interface DepotBuilds {
  /** Registers a build (CreateBuild with the organization token; transient failures retried). */
  create(input: CreateBuildInput, options?: { signal?: AbortSignal }): Promise<DepotBuild>;
}

export function createBuildsApi(api: DepotApi, orgToken: () => string, settings: { healthIntervalMs: number }): DepotBuilds {
  return {
    async create(input, options = {}) {
      const token = orgToken();
      if (!input?.projectId) throw new BuildKitNodeError("INVALID_ARGUMENT", "builds.create: projectId is required");
      const request = {
        projectId: input.projectId,
        options: [{ command: Command.BUILD, tags: input.tags ?? [], push: input.push ?? false, load: input.load ?? false }],
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
      log(`build ${reply.buildId} created in project ${reply.projectId || input.projectId}`);
      return new Build(api, {
        id: reply.buildId,
        token: reply.buildToken,
        url: reply.buildUrl,
        projectId: reply.projectId || input.projectId,
        secrets: [token, reply.buildToken],
        healthIntervalMs: settings.healthIntervalMs,
      });
    },
  };
}

class Build implements DepotBuild {
  readonly id: string;
  readonly url: string;
  readonly projectId: string;
  readonly #token: string;
  readonly #api: DepotApi;
  readonly #secrets: string[];
  readonly #healthIntervalMs: number;
  readonly #ended = new AbortController();
  readonly #machines = new Set<Machine>();
  #finish: Promise<void> | undefined;

  constructor(api: DepotApi, build: { id: string; token: string; url: string; projectId: string; secrets: string[]; healthIntervalMs: number }) {
    this.#api = api;
    this.id = build.id;
    this.#token = build.token;
    this.url = build.url;
    this.projectId = build.projectId;
    this.#secrets = build.secrets;
    this.#healthIntervalMs = build.healthIntervalMs;
  }

  /** A getter, so that logging or inspecting the build does not print it. */
  get token(): string {
    return this.#token;
  }

  async acquireMachine(platform: string, options: AcquireOptions = {}): Promise<DepotMachine> {
    const machine = await acquireMachine(
      { api: this.#api, buildId: this.id, buildToken: this.#token, healthIntervalMs: this.#healthIntervalMs, ended: this.#ended.signal },
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

  async #report(error: unknown): Promise<void> {
    this.#ended.abort();
    await Promise.all([...this.#machines].map((m) => m.release()));
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
