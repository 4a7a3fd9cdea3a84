import { type Client, createClient } from "@connectrpc/connect";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { BuildKitNodeError } from "../errors.js";
import { Control, type UsageRecord as UsageRecordMessage } from "../gen/moby/buildkit/v1/control_pb.js";
import type { Platform } from "../gen/pb/types_pb.js";
import type { Channel } from "../transport/channel.js";
import type { BuildOptions } from "./build-options.js";
import { BuildRun, startBuild } from "./build.js";
import { callError } from "./call-error.js";
import { type DaemonKind, daemonKind, exporterLimit } from "./daemon-kind.js";
import { validateCallOptions } from "./validate-options.js";

/** Options every daemon call takes. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Fails the call with a TIMEOUT error after this long (at most 99,999,999 ms: gRPC's deadline header takes 8 digits). */
  timeoutMs?: number;
}

export interface Worker {
  id: string;
  /** `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm/v7`. */
  platforms: string[];
  labels: Record<string, string>;
  /** Reported by BuildKit v0.11 and later. */
  buildkitVersion?: BuildKitVersion;
}

export interface BuildKitVersion {
  /** e.g. `github.com/moby/buildkit`. */
  package: string;
  /** e.g. `v0.13.2`. */
  version: string;
  revision: string;
}

/**
 * What `info()` learned. BuildKit before v0.11 (dockerd 20.10 embeds v0.8)
 * has no Info call: that is a normal answer, not an error.
 */
export type BuildKitInfo =
  | { status: "ok"; buildkitVersion: BuildKitVersion }
  | { status: "unimplemented"; message: string };

export interface UsageRecord {
  id: string;
  mutable: boolean;
  inUse: boolean;
  /** Bytes. */
  size: number;
  parents: string[];
  createdAt?: Date;
  lastUsedAt?: Date;
  usageCount: number;
  description: string;
  recordType: string;
  shared: boolean;
}

export interface DiskUsageOptions extends CallOptions {
  /** containerd-style filters, e.g. `type==regular`. */
  filter?: string[];
}

export interface PruneOptions extends CallOptions {
  /** Also remove internal and frontend cache entries, and shared ones. */
  all?: boolean;
  filter?: string[];
  /** Keep entries used within this many milliseconds. */
  keepDurationMs?: number;
  /** Keep at least this many bytes of cache (`keepBytes` before BuildKit v0.17). */
  reservedSpace?: number;
  /** BuildKit v0.17+: prune until the cache is below this many bytes. */
  maxUsedSpace?: number;
  /** BuildKit v0.17+: prune until this many bytes of disk are free. */
  minFreeSpace?: number;
}

export interface PruneResult {
  deleted: UsageRecord[];
  reclaimedBytes: number;
}

/** See `BuildKitClient.features()`. */
export interface BuildKitFeatures {
  /** The `image` exporter: BuildKit pushes images itself, by tag or by digest (`pushByDigest`). */
  imageExporter: boolean;
}

/**
 * A connection to one BuildKit daemon. Get one from `connect()`; close it
 * with `close()` or `await using`.
 */
export class BuildKitClient implements AsyncDisposable {
  readonly #channel: Channel;
  readonly #control: Client<typeof Control>;
  /** The Engine API socket `connect()` was given (`dockerEngine`), if any. */
  readonly #dockerEngine: string | undefined;
  #closed = false;

  /** @internal Use `connect()`. */
  constructor(channel: Channel, options: { dockerEngine?: string | undefined } = {}) {
    this.#channel = channel;
    this.#control = createClient(Control, channel.transport);
    this.#dockerEngine = options.dockerEngine;
  }

  /** The address this client was connected with. */
  get address(): string {
    return this.#channel.address;
  }

  async listWorkers(options: CallOptions & { filter?: string[] } = {}): Promise<Worker[]> {
    validateCallOptions(options, "listWorkers");
    const response = await this.#call("ListWorkers", () =>
      this.#control.listWorkers({ filter: options.filter ?? [] }, grpcCallOptions(options)),
    options.signal);
    return response.record.map((record) => ({
      id: record.id,
      platforms: record.platforms.map(formatPlatform),
      labels: { ...record.labels },
      ...(record.buildkitVersion?.version ? { buildkitVersion: versionOf(record.buildkitVersion) } : {}),
    }));
  }

  async info(options: CallOptions = {}): Promise<BuildKitInfo> {
    validateCallOptions(options, "info");
    try {
      const response = await this.#call("Info", () => this.#control.info({}, grpcCallOptions(options)), options.signal);
      return { status: "ok", buildkitVersion: versionOf(response.buildkitVersion) };
    } catch (err) {
      if (err instanceof BuildKitNodeError && err.code === "UNIMPLEMENTED") {
        return {
          status: "unimplemented",
          message: `${this.address} has no Info call (BuildKit before v0.11, e.g. the one in dockerd 20.10)`,
        };
      }
      throw err;
    }
  }

  async diskUsage(options: DiskUsageOptions = {}): Promise<UsageRecord[]> {
    validateCallOptions(options, "diskUsage");
    const response = await this.#call("DiskUsage", () =>
      this.#control.diskUsage({ filter: options.filter ?? [] }, grpcCallOptions(options)),
    options.signal);
    return response.record.map(usageRecordOf);
  }

  async prune(options: PruneOptions = {}): Promise<PruneResult> {
    validateCallOptions(options, "prune");
    return this.#call("Prune", async () => {
      const deleted: UsageRecord[] = [];
      const stream = this.#control.prune(
        {
          all: options.all ?? false,
          filter: options.filter ?? [],
          keepDuration: BigInt(Math.round((options.keepDurationMs ?? 0) * 1e6)),
          reservedSpace: BigInt(options.reservedSpace ?? 0),
          maxUsedSpace: BigInt(options.maxUsedSpace ?? 0),
          minFreeSpace: BigInt(options.minFreeSpace ?? 0),
        },
        grpcCallOptions(options),
      );
      for await (const record of stream) deleted.push(usageRecordOf(record));
      return { deleted, reclaimedBytes: deleted.reduce((sum, r) => sum + r.size, 0) };
    }, options.signal);
  }

  /**
   * Builds with the Dockerfile frontend while serving the build session
   * (context, credentials, secrets, SSH, outputs) from this process.
   * `await` the run for the result; iterate `run.events` for progress.
   */
  build(options: BuildOptions): BuildRun {
    if (this.#closed) throw new BuildKitNodeError("FAILED_PRECONDITION", `build: the client for ${this.address} is closed`);
    return startBuild(
      {
        address: this.address,
        control: this.#control,
        openStream: (path, headers) => this.#channel.openStream(path, headers),
        daemon: () => this.#daemonKind(),
        maxExporters: () => this.#maxExporters(),
        callError: (err, context, signal, since) => this.#callError(err, context, signal, since),
      },
      options,
    );
  }

  /**
   * What this BuildKit can do that others cannot, as buildx's driver features
   * tell: dockerd's embedded BuildKit has no `image` exporter, so it neither
   * pushes by digest nor writes OCI layouts itself.
   */
  async features(): Promise<BuildKitFeatures> {
    if (this.#closed) throw new BuildKitNodeError("FAILED_PRECONDITION", `features: the client for ${this.address} is closed`);
    const daemon = await this.#daemonKind();
    return { imageExporter: !daemon.embeddedInDocker };
  }

  #daemon: Promise<DaemonKind> | undefined;

  /** What kind of BuildKit this is, its version, and the Docker Engine the caller named for it (asked once). */
  #daemonKind(): Promise<DaemonKind> {
    this.#daemon ??= daemonKind(this.#channel.endpoint, this.#dockerEngine, this).catch((err: unknown) => {
      this.#daemon = undefined; // ask again next time
      throw err;
    });
    return this.#daemon;
  }

  /** BuildKit takes several exporters per solve from v0.13 on. */
  async #maxExporters(): Promise<number> {
    return exporterLimit(await this.#daemonKind());
  }

  /** Closes the connection. Calls in flight (a build included) fail with CANCELED: the caller's doing. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#channel.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #call<T>(method: string, run: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.#closed) throw new BuildKitNodeError("FAILED_PRECONDITION", `${method}: the client for ${this.address} is closed`);
    const since = Date.now();
    try {
      return await run();
    } catch (err) {
      throw this.#callError(err, `${method} on ${this.address}`, signal, since);
    }
  }

  #callError(err: unknown, what: string, signal: AbortSignal | undefined, since: number): BuildKitNodeError {
    return callError(err, { what, address: this.address, signal, since, loss: this.#channel.lastConnectionLoss });
  }
}

/**
 * What connect-es takes of a call's options. It writes `timeoutMs` into the
 * `grpc-timeout` header as it is, and a daemon refuses a fraction there.
 */
function grpcCallOptions({ signal, timeoutMs }: CallOptions): CallOptions {
  return { ...(signal ? { signal } : {}), ...(timeoutMs !== undefined ? { timeoutMs: Math.ceil(timeoutMs) } : {}) };
}

function formatPlatform(p: Pick<Platform, "os" | "architecture" | "variant">): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

function versionOf(v: { package: string; version: string; revision: string } | undefined): BuildKitVersion {
  return { package: v?.package ?? "", version: v?.version ?? "", revision: v?.revision ?? "" };
}

function dateOf(t: Timestamp | undefined): Date | undefined {
  return t ? timestampDate(t) : undefined;
}

function usageRecordOf(r: UsageRecordMessage): UsageRecord {
  const createdAt = dateOf(r.createdAt);
  const lastUsedAt = dateOf(r.lastUsedAt);
  return {
    id: r.id,
    mutable: r.mutable,
    inUse: r.inUse,
    size: Number(r.size),
    parents: r.parents.length > 0 ? [...r.parents] : r.parent ? [r.parent] : [],
    ...(createdAt ? { createdAt } : {}),
    ...(lastUsedAt ? { lastUsedAt } : {}),
    usageCount: Number(r.usageCount),
    description: r.description,
    recordType: r.recordType,
    shared: r.shared,
  };
}
