// The machines of the local Depot: one mTLS front for the real BuildKit per
// (build, platform), started after a few `pending` answers, kept while health
// reports come in, stopped when the build finishes, goes quiet or is canceled.
import { Code, ConnectError } from "@connectrpc/connect";
import { createLogger } from "../../log.js";
import type { TlsOptions } from "../../transport/tls-options.js";
import { type BuildKitFront, startBuildKitFront } from "../buildkit-front.js";
import type { LocalBuildRecord, LocalDepotClock, LocalDepotFaults, LocalMachineRecord, LocalMachineStopReason, LocalPlatform } from "./types.js";

const log = createLogger("local-depot");

/** How long past its `cancels_at` a build keeps its machines: time for the client to stop cleanly first. */
const CANCEL_GRACE_MS = 2_000;

export interface MachinePoolOptions {
  buildkit: string;
  buildkitTls?: TlsOptions | undefined;
  pendingPolls: number;
  pendingWaitMs: number;
  idleTimeoutMs: number;
  faults: LocalDepotFaults;
  /** Reads the time for idle and cancel decisions (tests inject one to make them exact). */
  clock: LocalDepotClock | undefined;
}

/** What a client needs to reach a machine: Depot's `ActiveConnection`. */
export interface MachineCredentials {
  endpoint: string;
  serverName: string;
  ca: string;
  cert: string;
  key: string;
}

export type ConnectionAnswer = { state: "pending"; waitMs: number } | { state: "active"; machine: MachineCredentials };

interface RunningMachine {
  record: LocalMachineRecord;
  front: BuildKitFront;
  credentials: MachineCredentials;
  /** Its start, or the last health report for its (build, platform). */
  lastSeen: number;
}

/** One (build, platform): how often it was answered `pending`, and its machine. */
interface Slot {
  polls: number;
  running?: RunningMachine | undefined;
  starting?: Promise<RunningMachine> | undefined;
}

export class MachinePool {
  private readonly slots = new Map<string, Map<LocalPlatform, Slot>>();
  /** When each build was told it is canceled (ms since the epoch). */
  private readonly cancelTimes = new Map<string, number>();
  /** Front starts and stops under way, for stop() to wait on. */
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly reaper: NodeJS.Timeout;
  private closed = false;

  private readonly now: () => number;

  constructor(private readonly options: MachinePoolOptions) {
    const clock = options.clock;
    this.now = clock ? () => clock.now() : Date.now;
    // One timer for every machine; unref'd so a forgotten stop() never keeps a test process alive.
    // With an injected clock, time moves when the test says: look often so a move is acted on at once.
    const period = clock ? 20 : Math.max(10, Math.min(1_000, Math.floor(options.idleTimeoutMs / 4)));
    this.reaper = setInterval(() => this.reap(), period).unref();
  }

  /** GetBuildKitConnection: `pending` for the first polls, then the machine, the same one until it stops. */
  async connection(build: LocalBuildRecord, platform: LocalPlatform): Promise<ConnectionAnswer> {
    if (this.closed) throw new ConnectError("the local Depot is stopping", Code.Unavailable);
    if (this.isCanceled(build.id)) throw new ConnectError(`build ${build.id} was canceled`, Code.FailedPrecondition);
    const slot = this.slot(build.id, platform);
    if (slot.running) return { state: "active", machine: slot.running.credentials };
    if (!slot.starting) {
      if (this.options.faults.stayPending || slot.polls < this.options.pendingPolls) {
        slot.polls++;
        return { state: "pending", waitMs: this.options.pendingWaitMs };
      }
      slot.starting = this.track(this.start(build, platform, slot)).finally(() => (slot.starting = undefined));
    }
    // Concurrent polls for one platform share one start.
    const machine = await slot.starting;
    return { state: "active", machine: machine.credentials };
  }

  /** ReportBuildHealth: keeps that platform's machine from being reclaimed. */
  healthReport(buildId: string, platform: LocalPlatform): void {
    const running = this.slots.get(buildId)?.get(platform)?.running;
    if (running) running.lastSeen = this.now();
  }

  /** Stops one platform's machine of a build (depot.buildkit.v1 ReleaseEndpoint); none running is fine. */
  async release(buildId: string, platform: LocalPlatform): Promise<void> {
    const slot = this.slots.get(buildId)?.get(platform);
    if (slot) await this.stopSlot(slot, "released");
  }

  /** A health answer told the build it is canceled at `at`. */
  announceCancel(buildId: string, at: Date): void {
    this.cancelTimes.set(buildId, at.getTime());
  }

  /** Stops every machine of a build (FinishBuild). */
  async stopBuild(buildId: string, reason: LocalMachineStopReason): Promise<void> {
    const slots = this.slots.get(buildId);
    if (!slots) return;
    await Promise.all([...slots.values()].map((slot) => this.stopSlot(slot, reason)));
  }

  /** Stops the reaper and every machine, and waits for starts under way. Idempotent. */
  async stop(): Promise<void> {
    this.closed = true;
    clearInterval(this.reaper);
    for (const slots of this.slots.values()) for (const slot of slots.values()) void this.stopSlot(slot, "stopped");
    // A start that completes now sees `closed` and stops its own front.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private async start(build: LocalBuildRecord, platform: LocalPlatform, slot: Slot): Promise<RunningMachine> {
    // A name that is not the address, as Depot's machines have: clients must verify against it.
    const serverName = `${platform}.${build.id}.machines.local-depot.test`;
    let front: BuildKitFront;
    try {
      front = await startBuildKitFront({ buildkit: this.options.buildkit, buildkitTls: this.options.buildkitTls, mtls: { serverName } });
    } catch (err) {
      throw new ConnectError(`could not start a ${platform} machine: ${err instanceof Error ? err.message : String(err)}`, Code.Unavailable);
    }
    const refusal = this.closed
      ? new ConnectError("the local Depot is stopping", Code.Unavailable)
      : build.status !== "running"
        ? new ConnectError(`build ${build.id} is finished`, Code.FailedPrecondition)
        : undefined;
    if (refusal) {
      await front.stop();
      throw refusal;
    }
    const { ca, cert, key } = front.tls!;
    const record: LocalMachineRecord = { platform, endpoint: front.address, serverName, startedAt: new Date() };
    build.machines.push(record);
    const running: RunningMachine = {
      record,
      front,
      credentials: { endpoint: front.address, serverName, ca: pemText(ca), cert: pemText(cert), key: pemText(key) },
      lastSeen: this.now(),
    };
    slot.running = running;
    log(`machine ${serverName} at ${front.address}`);
    return running;
  }

  /** Stops a slot's machine; the next poll for that platform starts over with `pending`. */
  private stopSlot(slot: Slot, reason: LocalMachineStopReason): Promise<void> {
    const running = slot.running;
    if (!running) return Promise.resolve();
    slot.running = undefined;
    slot.polls = 0;
    running.record.stoppedAt = new Date();
    running.record.stopReason = reason;
    log(`machine ${running.record.serverName} stopped (${reason})`);
    return this.track(running.front.stop());
  }

  private reap(): void {
    const now = this.now();
    for (const [buildId, slots] of this.slots) {
      const cancelAt = this.cancelTimes.get(buildId);
      for (const slot of slots.values()) {
        if (!slot.running) continue;
        if (cancelAt !== undefined && now >= cancelAt + CANCEL_GRACE_MS) void this.stopSlot(slot, "canceled");
        else if (now - slot.running.lastSeen > this.options.idleTimeoutMs) void this.stopSlot(slot, "idle");
      }
    }
  }

  private isCanceled(buildId: string): boolean {
    const cancelAt = this.cancelTimes.get(buildId);
    return cancelAt !== undefined && this.now() >= cancelAt;
  }

  private slot(buildId: string, platform: LocalPlatform): Slot {
    let slots = this.slots.get(buildId);
    if (!slots) this.slots.set(buildId, (slots = new Map()));
    let slot = slots.get(platform);
    if (!slot) slots.set(platform, (slot = { polls: 0 }));
    return slot;
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.inFlight.add(promise);
    const forget = () => this.inFlight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }
}

function pemText(pem: string | Uint8Array): string {
  return typeof pem === "string" ? pem : Buffer.from(pem).toString("utf8");
}
