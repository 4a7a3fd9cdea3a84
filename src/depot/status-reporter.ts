import type { MessageInitShape } from "@bufbuild/protobuf";
import { type CallOptions, Code, ConnectError } from "@connectrpc/connect";
import type { ReportStatusStreamRequestSchema } from "../gen/depot/cli/v1/build_pb.js";
import type { StatusResponse } from "../gen/moby/buildkit/v1/control_pb.js";
import { createLogger } from "../log.js";
import { type Clock, type ClockTimer, systemClock } from "./clock.js";
import { authHeaders, type DepotApi } from "./transport.js";

const log = createLogger("depot");

/** A batch leaves at most this often (the depot CLI's pace). */
export const STATUS_BATCH_INTERVAL_MS = 1_000;
/** What waits for Depot while it is slow; past it, updates are dropped and counted. */
export const STATUS_MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** How long the end of a build waits for Depot to take the last batch. */
export const STATUS_FLUSH_TIMEOUT_MS = 2_000;

export interface StatusReporterOptions {
  api: DepotApi;
  buildId: string;
  /** The build's token. */
  token: string;
  /** For logs: which machine. */
  platform: string;
  intervalMs?: number;
  maxPendingBytes?: number;
  flushTimeoutMs?: number;
  clock?: Clock;
}

/** What a reporter did, for logs and tests. */
export interface StatusReportSummary {
  /** Status updates Depot took. */
  sent: number;
  /** Updates dropped: Depot was too slow, refused the stream, or it broke. */
  dropped: number;
  /** Why the stream ended early, if it did (a Connect code name, or "flush timeout"). */
  failure?: string;
}

/**
 * Relays a solve's BuildKit status to Depot (ReportStatusStream, one client
 * stream per machine, as the depot CLI does) so that Depot's UI shows the
 * build's steps and logs. Updates are batched once per interval; while
 * Depot is slow the batches wait in a bounded queue, and past its bound they
 * are dropped and counted. Nothing here can fail, stall or slow the build:
 * `push` never blocks or throws, a refused or broken stream only stops the
 * reporting, and `close` waits a bounded time for the last batch.
 */
export class StatusReporter {
  readonly #options: Required<Omit<StatusReporterOptions, "clock">> & { clock: Clock };
  readonly #call = new AbortController();
  #queue: StatusResponse[] = [];
  #queuedBytes = 0;
  #sent = 0;
  /** Handed to the stream, not yet taken by it. */
  #inFlight = 0;
  #dropped = 0;
  #failure: string | undefined;
  #closing = false;
  #timer: ClockTimer | undefined;
  #wake: (() => void) | undefined;
  #done: Promise<void> | undefined;

  constructor(options: StatusReporterOptions) {
    this.#options = {
      intervalMs: STATUS_BATCH_INTERVAL_MS,
      maxPendingBytes: STATUS_MAX_PENDING_BYTES,
      flushTimeoutMs: STATUS_FLUSH_TIMEOUT_MS,
      clock: systemClock,
      ...options,
    };
  }

  /** Queues one status update for the next batch. Never blocks, never throws. */
  push(status: StatusResponse): void {
    if (this.#closing || this.#failure !== undefined) {
      this.#dropped++;
      return;
    }
    const bytes = approximateSize(status);
    if (this.#queuedBytes + bytes > this.#options.maxPendingBytes) {
      this.#dropped++;
      return;
    }
    this.#queue.push(status);
    this.#queuedBytes += bytes;
    this.#done ??= this.#stream();
    this.#timer ??= this.#options.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#wake?.();
    }, this.#options.intervalMs);
  }

  /**
   * Sends what is queued and ends the stream, waiting at most the flush
   * timeout for Depot to take it; then gives up on what is left.
   */
  async close(): Promise<StatusReportSummary> {
    if (!this.#closing) {
      this.#closing = true;
      this.#options.clock.clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#wake?.();
      if (this.#done) {
        let timer: ClockTimer | undefined;
        const timedOut = new Promise<boolean>((resolve) => (timer = this.#options.clock.setTimeout(() => resolve(true), this.#options.flushTimeoutMs)));
        const late = await Promise.race([this.#done.then(() => false), timedOut]);
        this.#options.clock.clearTimeout(timer);
        if (late) {
          this.#failure ??= "flush timeout";
          this.#call.abort();
          await this.#done;
        }
      }
      this.#dropped += this.#queue.length + this.#inFlight;
      this.#queue = [];
      this.#inFlight = 0;
      const { buildId, platform } = this.#options;
      log(`build ${buildId}: ${platform} status: ${this.#sent} sent, ${this.#dropped} dropped${this.#failure ? ` (${this.#failure})` : ""}`);
    }
    return { sent: this.#sent, dropped: this.#dropped, ...(this.#failure ? { failure: this.#failure } : {}) };
  }

  async #stream(): Promise<void> {
    const { api, buildId, token, platform } = this.#options;
    // No deadline: the stream lasts as long as the solve.
    const call: CallOptions = { headers: authHeaders(token), signal: this.#call.signal };
    try {
      await api.builds.reportStatusStream(this.#batches(), call);
    } catch (err) {
      // The code only: a server's message might echo what it was sent.
      this.#failure ??= err instanceof ConnectError ? Code[err.code] : "error";
      if (!this.#call.signal.aborted) log(`build ${buildId}: ${platform} status stream ended (${this.#failure}); the build goes on without it`);
    }
  }

  /** One request per interval with everything queued; ends when closing and empty. */
  async *#batches(): AsyncGenerator<MessageInitShape<typeof ReportStatusStreamRequestSchema>> {
    const { buildId } = this.#options;
    for (;;) {
      if (this.#queue.length === 0 || (!this.#closing && this.#timer !== undefined)) {
        if (this.#closing && this.#queue.length === 0) return;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
        continue;
      }
      const statuses = this.#queue;
      this.#queue = [];
      this.#queuedBytes = 0;
      this.#inFlight = statuses.length;
      yield { buildId, statuses };
      this.#sent += statuses.length;
      this.#inFlight = 0;
    }
  }
}

/** Roughly what a status update weighs on the wire: its log bytes and a little per entry. */
function approximateSize(status: StatusResponse): number {
  let bytes = 64 * (status.vertexes.length + status.statuses.length + status.logs.length + status.warnings.length);
  for (const l of status.logs) bytes += l.msg.length;
  for (const v of status.vertexes) bytes += v.name.length + v.error.length;
  return bytes;
}
