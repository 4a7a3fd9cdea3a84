// What every service of the local Depot shares, and the build steps two
// services have in common (depot.cli.v1 and depot.build.v1 share one store).
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "../../log.js";
import type { Authenticator } from "./auth.js";
import type { FaultInjector } from "./faults.js";
import type { MachinePool } from "./machines.js";
import type { StatusRecorder } from "./status.js";
import type { DepotStore } from "./store.js";
import type { LocalBuildRecord, LocalBuildResult, LocalProject } from "./types.js";

/** What FinishBuild reports. */
export type BuildResult = { result: LocalBuildResult; error?: string };

export interface DepotContext {
  store: DepotStore;
  auth: Authenticator;
  machines: MachinePool;
  faults: FaultInjector;
  /** The server's own URL, for the build links CreateBuild returns. */
  apiUrl: () => string;
  /** The organization's display name (ListOrganizations, the CLI's project list). */
  organizationName: string;
  status: StatusRecorder;
  /** The saved-image registry, when the local Depot has one. */
  savedImages: SavedImagesContext | undefined;
  /** The gRPC compression machines ask clients for (ActiveConnection's compressor), if any. */
  machineCompression: "gzip" | "identity" | undefined;
  log: Logger;
}

export interface SavedImagesContext {
  /** `127.0.0.1:<port>`: the front clients push to and pull from. */
  host: string;
  /** The registry behind it, `host:port`, plain HTTP. */
  upstream: string;
  /** Sent to the registry behind the front, when it needs credentials. */
  upstreamAuthorization: string | undefined;
  /** The CA of the local Depot's HTTPS endpoints (PEM). */
  caCertificate: string;
}

/** The project `projectId` names, or NOT_FOUND. */
export function existingProject(depot: DepotContext, projectId: string): LocalProject {
  const project = depot.store.projects.get(projectId);
  if (!project) throw new ConnectError(`project ${JSON.stringify(projectId)} not found`, Code.NotFound);
  return project;
}

/** Registers a build of an existing project. */
export function createBuild(depot: DepotContext, projectId: string, options: LocalBuildRecord["options"]): LocalBuildRecord {
  existingProject(depot, projectId);
  const build = depot.store.addBuild(projectId, options);
  depot.log(`build ${build.id} created in ${projectId}`);
  return build;
}

/** Records a build's result once and stops its machines; a second result is refused. */
export async function finishBuild(
  depot: DepotContext,
  build: LocalBuildRecord,
  result: BuildResult | undefined,
): Promise<void> {
  build.finishCalls++;
  if (build.finish) throw new ConnectError(`build ${build.id} is already finished (${build.finish.result})`, Code.FailedPrecondition);
  if (!result) throw new ConnectError("a result (success, error or canceled) is required", Code.InvalidArgument);
  build.finish = { ...result, at: new Date() };
  build.status = result.result;
  depot.log(`build ${build.id} finished: ${result.result}`);
  await depot.machines.stopBuild(build.id, "finished");
}

export function buildUrl(depot: DepotContext, build: LocalBuildRecord): string {
  return `${depot.apiUrl()}/orgs/${depot.store.organizationId}/projects/${build.projectId}/builds/${build.id}`;
}
