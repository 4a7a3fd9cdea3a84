// Saving a build to Depot's registry: CreateBuild with `save` answers the
// names to push the image under (`<registry>/<project>:<build>`, and one per
// save tag) and the credentials for that registry (base64 of
// `x-token:<build token>`), which the client hands to BuildKit.
import type { DepotContext } from "./context.js";
import type { LocalBuildRecord } from "./types.js";

export function savedImageName(host: string, projectId: string, tag: string): string {
  return `${host}/${projectId}:${tag}`;
}

/** CreateBuildResponse's additional tags and credentials; none unless a target asked to be saved. */
export function saveResponse(depot: DepotContext, build: LocalBuildRecord) {
  const saved = depot.savedImages;
  if (!saved || !build.options.some((o) => o.save)) return {};
  const tags = [build.id, ...build.options.flatMap((o) => (o.save ? o.saveTags : []))].filter((tag) => tag !== "");
  return {
    additionalTags: [...new Set(tags)].map((tag) => ({ tag: savedImageName(saved.host, build.projectId, tag), push: true })),
    additionalCredentials: [{ host: saved.host, token: Buffer.from(`x-token:${build.token}`).toString("base64") }],
  };
}
