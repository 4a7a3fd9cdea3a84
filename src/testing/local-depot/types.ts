// The state a local Depot keeps, as tests inspect it. Plain objects: the
// services mutate them in place, tests read them.
import type { Hardware } from "../../gen/depot/core/v1/project_pb.js";

/** A machine architecture Depot builds on. */
export type LocalPlatform = "amd64" | "arm64";

/** A project hardware size by its enum name, e.g. "HARDWARE_16X32". */
export type LocalHardware = Exclude<keyof typeof Hardware, "HARDWARE_UNSPECIFIED">;

export interface LocalProject {
  projectId: string;
  organizationId: string;
  name: string;
  regionId: string;
  createdAt: Date;
  /** `keepBytes` is the deprecated field, kept when a client sends it. */
  cachePolicy: { keepGb: number; keepDays: number; keepBytes?: bigint };
  hardware: LocalHardware;
  /** ResetProject / ResetProjectCache calls (the BuildKit cache is shared, so nothing is dropped). */
  cacheResets: number;
}

export type LocalBuildResult = "success" | "error" | "canceled";

/**
 * Why a machine's front was stopped: its build finished, it went without
 * health reports, the local Depot stopped, its build was canceled, or the
 * client released it (depot.buildkit.v1 ReleaseEndpoint).
 */
export type LocalMachineStopReason = "finished" | "idle" | "stopped" | "canceled" | "released";

export interface LocalMachineRecord {
  platform: LocalPlatform;
  /** `tcp://127.0.0.1:<port>`: the machine's mTLS front. */
  endpoint: string;
  /** The name its server certificate carries (not its address). */
  serverName: string;
  startedAt: Date;
  stoppedAt?: Date;
  stopReason?: LocalMachineStopReason;
}

export interface LocalBuildRecord {
  id: string;
  projectId: string;
  /** The build's own token, as CreateBuild returned it. */
  token: string;
  createdAt: Date;
  status: "running" | LocalBuildResult;
  finish?: { result: LocalBuildResult; error?: string; at: Date };
  /** How many FinishBuild calls arrived (a second one is refused). */
  finishCalls: number;
  /** From the depot.cli.v1 CreateBuild options (none from depot.build.v1). */
  options: LocalBuildOptions[];
  /** From ReportBuildHealth (depot.cli.v1) and ReportHealth (depot.buildkit.v1) alike. */
  healthReports: { platform: LocalPlatform; at: Date }[];
  /** GetBuildKitConnection polls and GetEndpoint answers. */
  connectionPolls: { platform: LocalPlatform; at: Date; answer: "pending" | "active" }[];
  machines: LocalMachineRecord[];
  /** The build's steps as its BuildKit status reports showed them, in order of first sight. */
  steps: LocalBuildStep[];
  /** What the status reports carried (ReportStatus and ReportStatusStream). */
  statusReports: LocalStatusReports;
  /** ReportTimings, as sent (the last call wins). */
  timings: LocalTimedStep[];
  /** ReportBuildContext: the Dockerfiles the build used. */
  dockerfiles: { target: string; filename: string; contents: string }[];
  /** Images pushed to the saved-image registry under this build's token. */
  saves: LocalSavedImage[];
  /** Reads of this build's saved image from the saved-image registry. */
  pulls: LocalImagePull[];
  /** `depot push` copies of this build's saved image (depot.cli.v1 PushService). */
  pushes: LocalPushRecord[];
}

/** One target's options as the CLI sent them to CreateBuild. */
export interface LocalBuildOptions {
  /** The command's enum name without its prefix: "BUILD", "BAKE", … */
  command: string;
  tags: string[];
  push: boolean;
  load: boolean;
  save: boolean;
  saveTags: string[];
  targetName?: string;
}

export interface LocalBuildStep {
  /** The BuildKit vertex digest. */
  digest: string;
  name: string;
  /** The vertex digests it depends on. */
  inputs: string[];
  cached: boolean;
  startedAt?: Date;
  completedAt?: Date;
  error?: string;
  logs: LocalStepLog[];
}

export interface LocalStepLog {
  /** The text as written (UTF-8), one entry per chunk BuildKit sent. */
  message: string;
  at: Date;
  /** 1 stdout, 2 stderr. */
  stream: number;
}

export interface LocalStatusReports {
  /** ReportStatusStream calls opened, and how many of them ended cleanly. */
  streamsOpened: number;
  streamsCompleted: number;
  /** Request messages received, on either RPC. */
  requests: number;
  /** BuildKit StatusResponse messages those requests carried. */
  statuses: number;
  /** Log bytes not kept once a build's logs reached the bound (see LocalDepotOptions.maxLogBytesPerBuild). */
  droppedLogBytes: number;
}

export interface LocalTimedStep {
  name: string;
  startTime?: Date;
  durationMs: number;
  cached: boolean;
  error?: string;
  stableDigest?: string;
}

export interface LocalSavedImage {
  /** `<registry host>/<project>:<tag>` as the client pushed it. */
  reference: string;
  /** The manifest's (or index's) digest. */
  digest: string;
  mediaType: string;
  at: Date;
}

export interface LocalImagePull {
  reference: string;
  /** Who read it: the build's own token, a pull token, or the organization token. */
  by: "build token" | "pull token" | "organization token";
  at: Date;
}

export interface LocalPushRecord {
  pushId: string;
  /** Where the image went, as the client named it. */
  tag: string;
  startedAt: Date;
  finishedAt?: Date;
  error?: string;
  /** Blobs the local Depot copied to the destination for it. */
  blobsCopied: string[];
}

/** The Connect codes a fault can fail a call with. */
export type LocalFaultCode = "unavailable" | "internal" | "unauthenticated" | "permission_denied" | "not_found" | "deadline_exceeded" | "aborted";

export interface LocalDepotFaults {
  /**
   * The next `count` calls of `method` (e.g. "CreateBuild",
   * "GetBuildKitConnection", "ReportBuildHealth", "ListProjects") fail with
   * `code` (default "unavailable"), before any other check. A bare method
   * name matches it on every service ("CreateBuild": cli.v1 and build.v1);
   * "depot.cli.v1.BuildService/CreateBuild" names one.
   */
  failNext(method: string, count: number, code?: LocalFaultCode): void;
  /** GetBuildKitConnection answers `pending` forever while set. */
  stayPending: boolean;
  /**
   * ReportBuildHealth answers with this `cancels_at` while set (a Date in the
   * past cancels at once). A build told so loses its machines (stopReason
   * "canceled") a short grace period after that time, as Depot would.
   */
  cancelsAt: Date | undefined;
}

/** Where the local Depot reads the time for idle machines and cancels (default the wall clock). */
export interface LocalDepotClock {
  /** Milliseconds since the epoch. */
  now(): number;
}
