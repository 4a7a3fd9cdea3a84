// depot.cli.v1.BuildService: the build lifecycle Depot's Go SDK and CLI use,
// and what the CLI reports about a build as it runs.
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type BuildOptions,
  BuilderPlatform,
  BuildService,
  BuildStatus,
  Command,
  type CreateBuildRequest,
  type FinishBuildRequest,
} from "../../gen/depot/cli/v1/build_pb.js";
import { type BuildResult, buildUrl, createBuild, type DepotContext, existingProject, finishBuild } from "./context.js";
import { pageSize } from "./paging.js";
import { savedImageName, saveResponse } from "./saves.js";
import type { LocalBuildOptions, LocalBuildRecord, LocalPlatform } from "./types.js";

export function cliBuildService(depot: DepotContext): ServiceImpl<typeof BuildService> {
  return {
    createBuild(req, ctx) {
      depot.auth.organization(ctx);
      refuseOtherEngines(req);
      const build = createBuild(depot, req.projectId, req.options.map(optionsRecord));
      return {
        buildId: build.id,
        buildToken: build.token,
        buildUrl: buildUrl(depot, build),
        projectId: build.projectId,
        ...saveResponse(depot, build),
      };
    },

    getBuild(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId, { allowOrganization: true });
      return { buildId: build.id, projectId: build.projectId, buildUrl: buildUrl(depot, build) };
    },

    async finishBuild(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId);
      await finishBuild(depot, build, resultOf(req.result));
      return {};
    },

    async getBuildKitConnection(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId);
      const platform = platformName(req.platform);
      if (build.status !== "running") throw new ConnectError(`build ${build.id} is finished`, Code.FailedPrecondition);
      const answer = await depot.machines.connection(build, platform);
      build.connectionPolls.push({ platform, at: new Date(), answer: answer.state });
      if (answer.state === "pending") {
        // Written even when wait_ms is 0: an absent member reads as "no answer" to Depot's Go SDK.
        return { connection: { case: "pending", value: { waitMs: answer.waitMs } } };
      }
      const { endpoint, serverName, ca, cert, key } = answer.machine;
      return {
        connection: {
          case: "active",
          // Both certificates always: Depot's Go SDK reads them without checking.
          value: { endpoint, serverName, cert: { cert, key }, caCert: { cert: ca }, compressor: compressor(depot.machineCompression) },
        },
      };
    },

    reportBuildHealth(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId);
      const platform = platformName(req.platform);
      build.healthReports.push({ platform, at: new Date() });
      depot.machines.healthReport(build.id, platform);
      const cancelsAt = depot.faults.cancelsAt;
      if (!cancelsAt) return {};
      depot.machines.announceCancel(build.id, cancelsAt);
      return { cancelsAt: timestampFromDate(cancelsAt) };
    },

    reportTimings(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId);
      build.timings = req.buildSteps.map((step) => ({
        name: step.name,
        ...(step.startTime ? { startTime: timestampDate(step.startTime) } : {}),
        durationMs: step.durationMs,
        cached: step.cached,
        ...(step.error !== undefined ? { error: step.error } : {}),
        ...(step.stableDigest !== undefined ? { stableDigest: step.stableDigest } : {}),
      }));
      return {};
    },

    reportStatus(req, ctx) {
      depot.status.record(depot.auth.build(ctx, req.buildId), req.statuses);
      return {};
    },

    async reportStatusStream(requests, ctx) {
      // One stream per machine, open for the whole solve. What arrived is kept
      // even when the stream breaks off.
      let build: LocalBuildRecord | undefined;
      for await (const req of requests) {
        const current = depot.auth.build(ctx, req.buildId);
        if (build !== current) {
          if (build) throw new ConnectError("one status stream carries one build", Code.InvalidArgument);
          build = current;
          build.statusReports.streamsOpened++;
        }
        depot.status.record(build, req.statuses);
      }
      if (build) build.statusReports.streamsCompleted++;
      return {};
    },

    reportBuildContext(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId);
      build.dockerfiles = req.dockerfiles.map(({ target, filename, contents }) => ({ target, filename, contents }));
      return {};
    },

    listBuilds(req, ctx) {
      depot.auth.organization(ctx);
      existingProject(depot, req.projectId);
      const page = depot.store.pageOfBuilds(req.projectId, { size: pageSize(req.pageSize), token: req.pageToken });
      return { builds: page.items.map(buildMessage), nextPageToken: page.nextToken ?? "" };
    },

    getPullInfo(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId, { allowOrganization: true });
      const saved = savedImages(depot);
      return {
        reference: savedImageName(saved.host, build.projectId, build.id),
        username: "x-token",
        password: depot.store.addPullToken({ projectId: build.projectId, buildId: build.id }),
        options: build.options.map(optionsMessage),
        saveForLoad: false,
        registryHost: saved.host,
      };
    },

    getPullToken(req, ctx) {
      const saved = savedImages(depot);
      const caller = depot.auth.caller(ctx);
      if (req.buildId !== undefined && req.buildId !== "") {
        const build = depot.auth.build(ctx, req.buildId, { allowOrganization: true });
        return { token: depot.store.addPullToken({ projectId: build.projectId, buildId: build.id }), registryHost: saved.host };
      }
      const projectId = req.projectId ?? (caller.kind === "build" ? caller.build.projectId : "");
      existingProject(depot, projectId);
      if (caller.kind === "build" && caller.build.projectId !== projectId) {
        throw new ConnectError("a build token reads only its own project", Code.PermissionDenied);
      }
      return { token: depot.store.addPullToken({ projectId }), registryHost: saved.host };
    },
  };
}

/** The gRPC compression asked of clients; unset leaves it to them. */
function compressor(kind: DepotContext["machineCompression"]) {
  if (kind === "gzip") return { case: "gzip" as const, value: {} };
  if (kind === "identity") return { case: "identity" as const, value: {} };
  return { case: undefined };
}

/** The local Depot runs BuildKit only; asking for another engine is refused, not ignored. */
function refuseOtherEngines(req: CreateBuildRequest): void {
  const engine = req.requiredEngine?.engine.case;
  if (engine !== undefined && engine !== "buildkit") {
    throw new ConnectError(`the local Depot has only BuildKit machines, not ${engine}`, Code.Unimplemented);
  }
}

function savedImages(depot: DepotContext): NonNullable<DepotContext["savedImages"]> {
  if (!depot.savedImages) throw new ConnectError("this local Depot has no saved-image registry", Code.FailedPrecondition);
  return depot.savedImages;
}

function optionsRecord(o: BuildOptions): LocalBuildOptions {
  return {
    command: Command[o.command] ?? String(o.command),
    tags: [...o.tags],
    push: o.push,
    load: o.load,
    save: o.save,
    saveTags: [...o.saveTags],
    ...(o.targetName !== undefined ? { targetName: o.targetName } : {}),
  };
}

/** The options as CreateBuild received them, for GetPullInfo. */
function optionsMessage(o: LocalBuildOptions) {
  const command = Command[o.command as keyof typeof Command] ?? Command.UNSPECIFIED;
  return { ...o, command, ...(o.targetName !== undefined ? { targetName: o.targetName } : {}) };
}

function resultOf(result: FinishBuildRequest["result"]): BuildResult | undefined {
  switch (result.case) {
    case "success":
      return { result: "success" };
    case "error":
      return { result: "error", error: result.value.error };
    case "canceled":
      return { result: "canceled" };
    default:
      return undefined;
  }
}

function platformName(platform: BuilderPlatform): LocalPlatform {
  if (platform === BuilderPlatform.AMD64) return "amd64";
  if (platform === BuilderPlatform.ARM64) return "arm64";
  throw new ConnectError(`platform must be BUILDER_PLATFORM_AMD64 or BUILDER_PLATFORM_ARM64, got ${platform}`, Code.InvalidArgument);
}

const STATUS: Record<LocalBuildRecord["status"], BuildStatus> = {
  running: BuildStatus.RUNNING,
  success: BuildStatus.FINISHED,
  error: BuildStatus.FAILED,
  canceled: BuildStatus.CANCELED,
};

function buildMessage(build: LocalBuildRecord) {
  return {
    id: build.id,
    status: STATUS[build.status],
    createdAt: timestampFromDate(build.createdAt),
    ...(build.finish ? { finishedAt: timestampFromDate(build.finish.at) } : {}),
  };
}
