// depot.build.v1.BuildService: the public build registration API (what
// Depot's Node SDK exposes). Same builds as depot.cli.v1; no canceled result.
import type { ServiceImpl } from "@connectrpc/connect";
import { BuildService, type FinishBuildRequest } from "../../gen/depot/build/v1/build_pb.js";
import { type BuildResult, createBuild, type DepotContext, finishBuild } from "./context.js";

export function buildV1Service(depot: DepotContext): Partial<ServiceImpl<typeof BuildService>> {
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
