import type { BuildOptions } from "../buildkit/build-options.js";
import type { BuildRun } from "../buildkit/build.js";
import { connect } from "../buildkit/connect.js";
import { takeContextsInHand } from "../buildkit/context-hold.js";
import { validateBuildOptions } from "../buildkit/validate-options.js";
import type { BuildKitClient } from "../buildkit/client.js";
import { AbortError, BuildKitNodeError, findCause } from "../errors.js";
import type { GetBuildKitConnectionResponse_ActiveConnection } from "../gen/depot/cli/v1/build_pb.js";
import { createLogger } from "../log.js";
import type { TlsOptions } from "../transport/tls-options.js";
import { DepotError, depotCallError } from "./errors.js";
import type { Clock } from "./clock.js";
import { HealthReporter, MAX_TIMER_MS } from "./health.js";
import { builderPlatform, type MachinePlatform, normalizePlatform } from "./platform.js";
import { type BuildReporting, reportedBuild } from "./reported-build.js";
import { backoffMs, isTransient, sleep } from "./retry.js";
import { API_CALL_TIMEOUT_MS, callOptions, type DepotApi } from "./transport.js";

const log = createLogger("depot");

export const DEFAULT_ACQUIRE_TIMEOUT_MS = 600_000;
export const DEFAULT_READINESS_TIMEOUT_MS = 300_000;
/** `pending.wait_ms` is kept within these bounds: 0 must not spin, a huge value must not stall. */
const PENDING_WAIT_MIN_MS = 50;
const PENDING_WAIT_MAX_MS = 5_000;
const READINESS_RETRY_MS = 1_000;
/** Bounds one connection attempt to a machine (its dial, TLS and first ListWorkers). */
const CONNECT_ATTEMPT_TIMEOUT_MS = 30_000;

export interface AcquireOptions {
  /** Gives up with a TIMEOUT error after this long. Default 10 minutes. */
  timeoutMs?: number;
  /** Aborts the acquisition (AbortError). Health reports of a held machine never follow it. */
  signal?: AbortSignal;
}

export interface MachineConnectOptions {
  /** Keeps trying (every second) for this long. Default 5 minutes. */
  readinessTimeoutMs?: number;
  signal?: AbortSignal;
}

/** A BuildKit machine Depot started for a build, held until released. */
export interface DepotMachine extends AsyncDisposable {
  readonly platform: MachinePlatform;
  /** `tcp://<ip>:<port>`. */
  readonly endpoint: string;
  /** The name the machine's certificate is checked against. */
  readonly serverName: string;
  /** Aborted when the machine is released or Depot's cancels_at time passes (reason says which). */
  readonly signal: AbortSignal;
  /**
   * mTLS BuildKitClient (CA as the only root, server_name checked; the
   * private key never written to disk), readiness-probed with ListWorkers
   * every second up to `readinessTimeoutMs` (default 300_000). Cached: a
   * second call returns the same client.
   */
  connect(options?: MachineConnectOptions): Promise<BuildKitClient>;
  /**
   * Builds on this machine (connecting first, as `connect(connectOptions)`),
   * with its BuildKit status relayed to Depot's UI as it happens and its
   * steps kept for the timings the build reports when it is finished: what
   * `depot.build()` does on each machine. `client.build()` on `connect()`'s
   * client builds without telling Depot. As `client.build()`, it checks its
   * options at once (INVALID_ARGUMENT) and takes a `{ tar }` stream in hand
   * in the call itself, before connecting.
   */
  build(options: BuildOptions, connectOptions?: MachineConnectOptions): BuildRun;
  /** Idempotent: stops health reports, closes the BuildKit client. */
  release(): Promise<void>;
}

/** What acquiring needs to know of its build. */
export interface BuildContext {
  api: DepotApi;
  buildId: string;
  buildToken: string;
  healthIntervalMs: number;
  /** Times health reports and cancellations; default the system's. */
  clock?: Clock;
  /** Aborted when the build is finished: acquisitions in progress stop. */
  ended: AbortSignal;
  /** The client's `dockerEngine`, for machines that are a dockerd's BuildKit. */
  dockerEngine?: string;
  /** Where the machine's builds report (`machine.build()`). */
  reporting(platform: MachinePlatform): BuildReporting;
}

/**
 * Asks Depot for a machine until it is active: health reports start at once
 * (before the first GetBuildKitConnection, so Depot never sees a silent
 * client), `pending.wait_ms` is honoured, transient failures are retried with
 * backoff. On any failure the health reports stop before the error is thrown.
 */
export async function acquireMachine(build: BuildContext, platformName: string, options: AcquireOptions = {}): Promise<Machine> {
  const platform = normalizePlatform(platformName);
  const timeoutMs = options.timeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new BuildKitNodeError("INVALID_ARGUMENT", `acquireMachine: timeoutMs must be > 0, not ${timeoutMs}`);
  const what = `the ${platform} machine of build ${build.buildId}`;
  if (options.signal?.aborted) throw new AbortError(`acquiring ${what} was aborted`, { cause: options.signal.reason });
  if (build.ended.aborted) throw new BuildKitNodeError("FAILED_PRECONDITION", `build ${build.buildId} is finished; no machine can be acquired`);

  const health = new HealthReporter({ ...build, platform, intervalMs: build.healthIntervalMs, clock: build.clock });
  health.start();
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), Math.min(timeoutMs, MAX_TIMER_MS));
  const stop = AbortSignal.any([timeout.signal, health.canceled, build.ended, ...(options.signal ? [options.signal] : [])]);
  let lastError: unknown;

  const stopped = (): BuildKitNodeError => {
    if (options.signal?.aborted) return new AbortError(`acquiring ${what} was aborted`, { cause: options.signal.reason });
    if (health.canceled.aborted) return health.canceled.reason as BuildKitNodeError;
    if (build.ended.aborted) return new BuildKitNodeError("FAILED_PRECONDITION", `build ${build.buildId} was finished while acquiring ${what}`);
    const last = lastError ? `; last error: ${depotCallError("GetBuildKitConnection", lastError, [build.buildToken]).message}` : "; Depot kept answering pending";
    return new BuildKitNodeError("TIMEOUT", `timed out after ${timeoutMs} ms acquiring ${what}${last}`, { cause: lastError });
  };

  log(`build ${build.buildId}: acquiring the ${platform} machine`);
  try {
    for (let retry = 0; ; ) {
      let reply;
      try {
        reply = await build.api.builds.getBuildKitConnection(
          { buildId: build.buildId, platform: builderPlatform(platform), requiredEngine: { engine: { case: "buildkit", value: {} } } },
          callOptions(build.buildToken, { signal: stop, timeoutMs: API_CALL_TIMEOUT_MS }),
        );
        retry = 0;
      } catch (err) {
        if (stop.aborted) throw stopped();
        if (!isTransient(err)) throw depotCallError("GetBuildKitConnection", err, [build.buildToken]);
        lastError = err;
        const delay = backoffMs(retry++);
        log(`build ${build.buildId}: GetBuildKitConnection failed for ${platform}; retrying in ${delay} ms`);
        await sleep(delay, stop).catch(() => {});
        if (stop.aborted) throw stopped();
        continue;
      }
      const connection = reply.connection;
      if (connection.case === "active") {
        const machine = new Machine(build, platform, activeConnection(connection.value, what), health);
        log(`build ${build.buildId}: ${platform} machine active at ${machine.endpoint} (${machine.serverName})`);
        return machine;
      }
      const waitMs = Math.min(PENDING_WAIT_MAX_MS, Math.max(PENDING_WAIT_MIN_MS, connection.value?.waitMs ?? 0));
      await sleep(waitMs, stop).catch(() => {});
      if (stop.aborted) throw stopped();
    }
  } catch (err) {
    health.stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

interface Connection {
  endpoint: string;
  serverName: string;
  tls: Required<Pick<TlsOptions, "ca" | "cert" | "key" | "serverName">>;
  /** What Depot asked the client to compress its messages with. */
  compression: "gzip" | "identity";
}

function activeConnection(active: GetBuildKitConnectionResponse_ActiveConnection, what: string): Connection {
  const { endpoint, serverName, cert, caCert } = active;
  if (!endpoint) throw new DepotError("GetBuildKitConnection", "INTERNAL", `Depot returned ${what} without an endpoint`);
  // Never fall back to plaintext: a machine without credentials is refused.
  if (!cert?.cert || !cert.key || !caCert?.cert || !serverName) {
    throw new DepotError("GetBuildKitConnection", "INTERNAL", `Depot returned ${what} without its TLS credentials or server name; refusing to connect without mutual TLS`);
  }
  return {
    endpoint: endpoint.includes("://") ? endpoint : `tcp://${endpoint}`,
    serverName,
    tls: { ca: caCert.cert, cert: cert.cert, key: cert.key, serverName },
    compression: active.compressor.case === "gzip" ? "gzip" : "identity",
  };
}

export class Machine implements DepotMachine {
  readonly platform: MachinePlatform;
  readonly endpoint: string;
  readonly serverName: string;
  readonly #build: BuildContext;
  readonly #tls: Connection["tls"]; // in memory only, never logged
  #compression: Connection["compression"];
  readonly #health: HealthReporter;
  readonly #ended = new AbortController();
  #client: Promise<BuildKitClient> | undefined;
  #release: Promise<void> | undefined;
  readonly #onCanceled = () => void this.#end(this.#health.canceled.reason);

  constructor(build: BuildContext, platform: MachinePlatform, connection: Connection, health: HealthReporter) {
    this.#build = build;
    this.platform = platform;
    this.endpoint = connection.endpoint;
    this.serverName = connection.serverName;
    this.#tls = connection.tls;
    this.#compression = connection.compression;
    this.#health = health;
    if (health.canceled.aborted) this.#onCanceled();
    else health.canceled.addEventListener("abort", this.#onCanceled, { once: true });
  }

  get signal(): AbortSignal {
    return this.#ended.signal;
  }

  connect(options: MachineConnectOptions = {}): Promise<BuildKitClient> {
    if (this.signal.aborted) return Promise.reject(this.#endedError());
    this.#client ??= this.#connectWhenReady(options).catch((err: unknown) => {
      this.#client = undefined;
      throw err;
    });
    return this.#client;
  }

  build(options: BuildOptions, connectOptions: MachineConnectOptions = {}): BuildRun {
    validateBuildOptions(options);
    // Before connecting: a stream not read until the machine answers could lose what it carries meanwhile.
    const held = takeContextsInHand(options);
    const signal = connectOptions.signal ?? options.signal;
    const run = reportedBuild(this.connect({ ...connectOptions, ...(signal ? { signal } : {}) }), held.options, this.#build.reporting(this.platform));
    run.then(held.release, held.release);
    return run;
  }

  release(): Promise<void> {
    return this.#end(new BuildKitNodeError("CANCELED", `the ${this.platform} machine of build ${this.#build.buildId} was released`));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  /** Ends the machine once, whatever ends it: health stops, `signal` aborts, the client closes. */
  #end(reason: unknown): Promise<void> {
    this.#release ??= (async () => {
      this.#health.stop();
      this.#health.canceled.removeEventListener("abort", this.#onCanceled);
      this.#ended.abort(reason);
      log(`build ${this.#build.buildId}: ${this.platform} machine ended: ${(reason as Error).message}`);
      const client = this.#client;
      if (client) await client.then((c) => c.close(), () => {});
    })();
    return this.#release;
  }

  #endedError(): BuildKitNodeError {
    const reason = this.signal.reason as Error;
    return new BuildKitNodeError("CANCELED", `${reason.message}; it can no longer be used`, { cause: reason });
  }

  async #connectWhenReady(options: MachineConnectOptions): Promise<BuildKitClient> {
    const timeoutMs = options.readinessTimeoutMs ?? DEFAULT_READINESS_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const stop = options.signal ? AbortSignal.any([this.signal, options.signal]) : this.signal;
    const what = `the ${this.platform} machine of build ${this.#build.buildId} at ${this.endpoint}`;
    let lastError: unknown;
    for (let attempt = 1; ; attempt++) {
      try {
        const client = await connect(this.endpoint, {
          tls: this.#tls,
          ...(this.#build.dockerEngine ? { dockerEngine: this.#build.dockerEngine } : {}),
          compression: this.#compression,
          connectTimeoutMs: Math.max(1, Math.min(CONNECT_ATTEMPT_TIMEOUT_MS, deadline - Date.now())),
          signal: stop,
        });
        if (this.signal.aborted) {
          await client.close();
          throw this.#endedError();
        }
        log(`connected to ${what} (attempt ${attempt})`);
        return client;
      } catch (err) {
        if (options.signal?.aborted) throw new AbortError(`connecting to ${what} was aborted`, { cause: options.signal.reason });
        if (this.signal.aborted) throw this.#endedError();
        if (err instanceof BuildKitNodeError && err.code === "INVALID_ARGUMENT") throw err;
        if (this.#compression === "gzip" && refusesGzip(err)) {
          // Depot asked for gzip but this BuildKit cannot read it (dockerd's v0.8 behind a local Depot): go without.
          log(`${what} cannot read gzip'd requests; connecting without compression`);
          this.#compression = "identity";
          continue;
        }
        lastError = err;
        log(`${what} is not ready (attempt ${attempt}): ${(err as Error).message}`);
      }
      if (Date.now() + READINESS_RETRY_MS >= deadline) {
        const last = lastError instanceof Error ? lastError.message : String(lastError);
        throw new BuildKitNodeError("TIMEOUT", `${what} was not ready within ${timeoutMs} ms: ${last}`, { cause: lastError });
      }
      await sleep(READINESS_RETRY_MS, stop).catch(() => {});
    }
  }
}

/** grpc-go's answer to a compressed request when it has no decompressor for it. */
function refusesGzip(err: unknown): boolean {
  return findCause(err, (e) => /Decompressor is not installed for grpc-encoding/.test(e.message)) !== undefined;
}
