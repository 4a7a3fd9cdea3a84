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
}

export type LocalBuildResult = "success" | "error" | "canceled";

/** Why a machine's front was stopped. */
export type LocalMachineStopReason = "finished" | "idle" | "stopped" | "canceled";

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
  options: { tags: string[]; push: boolean; load: boolean }[];
  healthReports: { platform: LocalPlatform; at: Date }[];
  connectionPolls: { platform: LocalPlatform; at: Date; answer: "pending" | "active" }[];
  machines: LocalMachineRecord[];
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
