import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import { type Clock, type ClockTimer, systemClock } from "./clock.js";
import { builderPlatform, type MachinePlatform } from "./platform.js";
import { callOptions, type DepotApi } from "./transport.js";

const log = createLogger("depot");

export const HEALTH_INTERVAL_MS = 5_000;
export const HEALTH_CALL_TIMEOUT_MS = 10_000;

/** setTimeout's longest delay; a later cancellation is re-armed when it fires. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface HealthReporterOptions {
  api: DepotApi;
  buildId: string;
  buildToken: string;
  platform: MachinePlatform;
  intervalMs: number;
  /** Default the system's. */
  clock?: Clock | undefined;
}

/**
 * Tells Depot a machine is still wanted: one ReportBuildHealth at once, then
 * one `intervalMs` after each reply (each call bounded by its own 10 s, with
 * the build token). Depot reclaims a machine whose reports stop, so nothing
 * but `stop()` ends them: not a caller's signal, not a failed report.
 *
 * A reply may carry `cancels_at`: `canceled` aborts at that time (at once if
 * it has passed), with a reason saying so, and the reports stop.
 */
export class HealthReporter {
  readonly #options: HealthReporterOptions;
  readonly #clock: Clock;
  /** Aborted by stop(): ends the call in flight, and says the reports are over. */
  readonly #stop = new AbortController();
  readonly #canceled = new AbortController();
  #nextReport: ClockTimer | undefined;
  #cancelTimer: ClockTimer | undefined;
  #cancelsAt: number | undefined;

  constructor(options: HealthReporterOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
  }

  /** Aborted when Depot's `cancels_at` time passes. */
  get canceled(): AbortSignal {
    return this.#canceled.signal;
  }

  start(): void {
    const { buildId, platform, intervalMs } = this.#options;
    log(`build ${buildId}: reporting ${platform} health every ${intervalMs} ms`);
    void this.#report();
  }

  /** Idempotent. Ends the reports, the call in flight and the cancellation timer. */
  stop(): void {
    if (this.#stopped) return;
    this.#stop.abort();
    this.#clock.clearTimeout(this.#nextReport);
    this.#clock.clearTimeout(this.#cancelTimer);
    log(`build ${this.#options.buildId}: ${this.#options.platform} health reports stopped`);
  }

  get #stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  async #report(): Promise<void> {
    const { api, buildId, buildToken, platform, intervalMs } = this.#options;
    try {
      const reply = await api.builds.reportBuildHealth(
        { buildId, platform: builderPlatform(platform) },
        callOptions(buildToken, { signal: this.#stop.signal, timeoutMs: HEALTH_CALL_TIMEOUT_MS }),
      );
      if (this.#stopped) return;
      this.#scheduleCancel(reply.cancelsAt ? timestampDate(reply.cancelsAt).getTime() : undefined);
    } catch (err) {
      if (this.#stopped) return;
      // Keep reporting: one lost report is no reason to give the machine up.
      log(`build ${buildId}: ${platform} health report failed (${err instanceof ConnectError ? Code[err.code] : "error"})`);
    }
    if (!this.#stopped) this.#nextReport = this.#clock.setTimeout(() => void this.#report(), intervalMs);
  }

  #scheduleCancel(at: number | undefined): void {
    if (at === this.#cancelsAt) return;
    this.#clock.clearTimeout(this.#cancelTimer);
    this.#cancelTimer = undefined;
    this.#cancelsAt = at;
    if (at === undefined) return;
    log(`build ${this.#options.buildId}: Depot cancels it at ${new Date(at).toISOString()}`);
    const fire = () => {
      const left = at - this.#clock.now();
      if (left > 0) {
        this.#cancelTimer = this.#clock.setTimeout(fire, Math.min(left, MAX_TIMER_MS));
        return;
      }
      const { buildId, platform } = this.#options;
      this.stop();
      this.#canceled.abort(new BuildKitNodeError("CANCELED", `Depot canceled build ${buildId} at ${new Date(at).toISOString()} (${platform} machine)`));
    };
    fire();
  }
}
