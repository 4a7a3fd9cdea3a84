// depot.build.v1.BuildService: the public build API (what Depot's Node SDK
// exposes). Same builds as depot.cli.v1; no canceled result. Its step and log
// reads show what the build's status reports carried.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { BuildService, type FinishBuildRequest, GetBuildStepsResponse_BuildStep_CacheState as CacheState } from "../../gen/depot/build/v1/build_pb.js";
import { type BuildResult, createBuild, type DepotContext, finishBuild } from "./context.js";
import { pageByOffset, pageSize } from "./paging.js";
import type { LocalBuildRecord, LocalBuildStep } from "./types.js";

export function buildV1Service(depot: DepotContext): ServiceImpl<typeof BuildService> {
  /** A build of the project named, read with the organization token or the build's own. */
  const buildOf = (ctx: HandlerContext, projectId: string, buildId: string): LocalBuildRecord => {
    const build = depot.auth.build(ctx, buildId, { allowOrganization: true });
    if (build.projectId !== projectId) throw new ConnectError(`build ${buildId} is not in project ${JSON.stringify(projectId)}`, Code.NotFound);
    return build;
  };

  return {
    createBuild(req, ctx) {
      depot.auth.organization(ctx);
      const build = createBuild(depot, req.projectId, []);
      return { buildId: build.id, buildToken: build.token };
    },

    async finishBuild(req, ctx) {
      // Depot's docs call this one with the organization token.
      const build = depot.auth.build(ctx, req.buildId, { allowOrganization: true });
      await finishBuild(depot, build, resultOf(req.result));
      return {};
    },

    getBuildSteps(req, ctx) {
      const build = buildOf(ctx, req.projectId, req.buildId);
      const page = pageByOffset(build.steps, pageSize(req.pageSize), req.pageToken);
      return { buildSteps: page.items.map(stepMessage), ...(page.nextToken ? { nextPageToken: page.nextToken } : {}) };
    },

    getBuildStepLogs(req, ctx) {
      const build = buildOf(ctx, req.projectId, req.buildId);
      const step = build.steps.find((s) => s.digest === req.buildStepDigest);
      if (!step) throw new ConnectError(`build ${build.id} has no step ${JSON.stringify(req.buildStepDigest)}`, Code.NotFound);
      const page = pageByOffset(step.logs, pageSize(req.pageSize), req.pageToken);
      return {
        logs: page.items.map((log) => ({ message: log.message, timestamp: timestampFromDate(log.at) })),
        ...(page.nextToken ? { nextPageToken: page.nextToken } : {}),
      };
    },
  };
}

function stepMessage(step: LocalBuildStep) {
  return {
    name: step.name,
    digest: step.digest,
    ...(step.startedAt ? { startedAt: timestampFromDate(step.startedAt) } : {}),
    ...(step.completedAt ? { completedAt: timestampFromDate(step.completedAt) } : {}),
    cacheState: step.cached ? CacheState.CACHED : CacheState.UNCACHED,
    ...(step.error ? { error: step.error } : {}),
    hasLogs: step.logs.length > 0,
  };
}

function resultOf(result: FinishBuildRequest["result"]): BuildResult | undefined {
  switch (result.case) {
    case "success":
      return { result: "success" };
    case "error":
      return { result: "error", error: result.value.error };
    default:
      return undefined;
  }
}
