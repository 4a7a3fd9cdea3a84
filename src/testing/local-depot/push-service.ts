// depot.cli.v1.PushService: `depot push` announces each copy of a saved
// build to another registry, and its outcome. The blobs go through the blob
// service; the manifests the CLI puts itself.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { PushService } from "../../gen/depot/cli/v1/push_pb.js";
import type { DepotContext } from "./context.js";
import { randomId } from "./store.js";

export function pushService(depot: DepotContext): ServiceImpl<typeof PushService> {
  return {
    startPush(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId, { allowOrganization: true });
      if (!req.tag) throw new ConnectError("tag is required", Code.InvalidArgument);
      const pushId = `push_${randomId(12)}`;
      build.pushes.push({ pushId, tag: req.tag, startedAt: new Date(), blobsCopied: [] });
      depot.log(`build ${build.id}: push ${pushId} started`);
      return { pushId };
    },

    finishPush(req, ctx) {
      const build = depot.auth.build(ctx, req.buildId, { allowOrganization: true });
      const push = build.pushes.find((p) => p.pushId === req.pushId);
      if (!push) throw new ConnectError(`build ${build.id} has no push ${JSON.stringify(req.pushId)}`, Code.NotFound);
      if (push.finishedAt) throw new ConnectError(`push ${push.pushId} is already finished`, Code.FailedPrecondition);
      push.finishedAt = new Date();
      if (req.error !== undefined) push.error = req.error;
      depot.log(`build ${build.id}: push ${push.pushId} ${push.error === undefined ? "finished" : "failed"}`);
      return {};
    },
  };
}
