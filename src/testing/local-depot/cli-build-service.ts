// depot.cli.v1.BuildService: the build lifecycle Depot's Go SDK and CLI use.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { BuilderPlatform, BuildService, BuildStatus, type FinishBuildRequest } from "../../gen/depot/cli/v1/build_pb.js";
import { type BuildResult, buildUrl, createBuild, type DepotContext, finishBuild } from "./context.js";
import { pageSize } from "./paging.js";
import type { LocalBuildRecord, LocalPlatform } from "./types.js";

export function cliBuildService(depot: DepotContext): Partial<ServiceImpl<typeof BuildService>> {
  return {
    createBuild(req, ctx) {
      depot.auth.organization(ctx);
      const options = req.options.map((o) => ({ tags: [...o.tags], push: o.push, load: o.load }));
      const build = createBuild(depot, req.projectId, options);
      return { buildId: build.id, buildToken: build.token, buildUrl: buildUrl(depot, build), projectId: build.projectId };
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
          value: { endpoint, serverName, cert: { cert, key }, caCert: { cert: ca } },
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

    listBuilds(req, ctx) {
      depot.auth.organization(ctx);
      if (!depot.store.projects.has(req.projectId)) {
        throw new ConnectError(`project ${JSON.stringify(req.projectId)} not found`, Code.NotFound);
      }
      const page = depot.store.pageOfBuilds(req.projectId, { size: pageSize(req.pageSize), token: req.pageToken });
      if (!page) throw new ConnectError("invalid page_token", Code.InvalidArgument);
      return { builds: page.items.map(buildMessage), nextPageToken: page.nextToken ?? "" };
    },
  };
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
