// depot.cli.v1beta1.ProjectsService: the `depot` CLI's own project list
// (`depot projects list`) and cache reset (`depot cache reset`).
import type { ServiceImpl } from "@connectrpc/connect";
import { ProjectsService } from "../../gen/depot/cli/v1beta1/projects_pb.js";
import { type DepotContext, existingProject } from "./context.js";

export function cliProjectsService(depot: DepotContext): ServiceImpl<typeof ProjectsService> {
  return {
    listProjects(_req, ctx) {
      depot.auth.organization(ctx);
      const projects = [...depot.store.projects.values()].map((p) => ({
        id: p.projectId,
        name: p.name,
        orgId: p.organizationId,
        orgName: depot.organizationName,
      }));
      return { projects };
    },

    resetProjectCache(req, ctx) {
      depot.auth.organization(ctx);
      const project = existingProject(depot, req.projectId);
      // The BuildKit behind the machines is shared: the reset is recorded, no cache is dropped.
      project.cacheResets++;
      depot.log(`project ${project.projectId}: cache reset`);
      return { name: project.name, orgName: depot.organizationName };
    },
  };
}
