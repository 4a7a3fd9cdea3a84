// depot.buildkit.v1.BuildKitService: the machine API of Depot's Node SDK.
// The same machines as depot.cli.v1's GetBuildKitConnection, offered as a
// server stream (`pending` until the machine is up, then `active`, then the
// end), held by a client stream of health reports, and given back per
// platform with ReleaseEndpoint.
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { BuildKitService, type GetEndpointResponseSchema, Platform } from "../../gen/depot/buildkit/v1/buildkit_pb.js";
import type { DepotContext } from "./context.js";
import type { LocalPlatform } from "./types.js";

export function buildkitV1Service(depot: DepotContext): ServiceImpl<typeof BuildKitService> {
  return {
    async *getEndpoint(req, ctx): AsyncGenerator<MessageInitShape<typeof GetEndpointResponseSchema>> {
      const build = depot.auth.build(ctx, req.buildId);
      const platform = platformName(req.platform);
      for (;;) {
        if (build.status !== "running") throw new ConnectError(`build ${build.id} is finished`, Code.FailedPrecondition);
        const answer = await depot.machines.connection(build, platform);
        build.connectionPolls.push({ platform, at: new Date(), answer: answer.state });
        if (answer.state === "active") {
          const { endpoint, serverName, ca, cert, key } = answer.machine;
          yield { connection: { case: "active", value: { endpoint, serverName, cert: { cert: { cert }, key: { key } }, caCert: { cert: ca } } } };
          return;
        }
        yield { connection: { case: "pending", value: {} } };
        await sleep(answer.waitMs, undefined, { signal: ctx.signal });
      }
    },

    async reportHealth(requests, ctx) {
      for await (const req of requests) {
        const build = depot.auth.build(ctx, req.buildId);
        const platform = platformName(req.platform);
        build.healthReports.push({ platform, at: new Date() });
        depot.machines.healthReport(build.id, platform);
      }
      return {};
    },

    async releaseEndpoint(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId);
      await depot.machines.release(build.id, platformName(req.platform));
      return {};
    },
  };
}

function platformName(platform: Platform): LocalPlatform {
  if (platform === Platform.AMD64) return "amd64";
  if (platform === Platform.ARM64) return "arm64";
  throw new ConnectError(`platform must be PLATFORM_AMD64 or PLATFORM_ARM64, got ${platform}`, Code.InvalidArgument);
}
