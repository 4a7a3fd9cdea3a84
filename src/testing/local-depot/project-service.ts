// depot.core.v1.ProjectService: projects of the one organization, by its token.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { type CachePolicy, Hardware, ProjectService } from "../../gen/depot/core/v1/project_pb.js";
import { type DepotContext, existingProject } from "./context.js";
import { pageSize } from "./paging.js";
import { DEFAULT_CACHE_POLICY, REGIONS } from "./store.js";
import type { LocalHardware, LocalProject } from "./types.js";

const GIB = 1024 ** 3;

export function projectService(depot: DepotContext): ServiceImpl<typeof ProjectService> {
  /** The organization token, then the project. */
  const project = (ctx: HandlerContext, projectId: string): LocalProject => {
    depot.auth.organization(ctx);
    return existingProject(depot, projectId);
  };

  return {
    listProjects(req, ctx) {
      depot.auth.organization(ctx);
      const region = req.regionId;
      const page = depot.store.pageOfProjects((p) => !region || p.regionId === region, {
        size: pageSize(req.pageSize),
        token: req.pageToken,
      });
      return { projects: page.items.map(projectMessage), ...(page.nextToken ? { nextPageToken: page.nextToken } : {}) };
    },

    getProject(req, ctx) {
      return { project: projectMessage(project(ctx, req.projectId)) };
    },

    createProject(req, ctx) {
      depot.auth.organization(ctx);
      if (req.organizationId !== undefined && req.organizationId !== depot.store.organizationId) {
        throw new ConnectError("the token does not belong to that organization", Code.PermissionDenied);
      }
      const created = depot.store.addProject({
        name: validName(req.name),
        regionId: validRegion(req.regionId),
        cachePolicy: cachePolicyOf(req.cachePolicy),
        hardware: hardwareOf(req.hardware),
      });
      depot.log(`project ${created.projectId} created`);
      return { project: projectMessage(created) };
    },

    updateProject(req, ctx) {
      const found = project(ctx, req.projectId);
      // Validate everything before changing anything.
      const name = req.name === undefined ? found.name : validName(req.name);
      const regionId = req.regionId === undefined ? found.regionId : validRegion(req.regionId);
      const cachePolicy = req.cachePolicy === undefined ? found.cachePolicy : cachePolicyOf(req.cachePolicy);
      const hardware = req.hardware === undefined ? found.hardware : hardwareOf(req.hardware);
      Object.assign(found, { name, regionId, cachePolicy, hardware });
      return { project: projectMessage(found) };
    },

    deleteProject(req, ctx) {
      depot.store.deleteProject(project(ctx, req.projectId).projectId);
      depot.log(`project ${req.projectId} deleted`);
      return {};
    },

    resetProject(req, ctx) {
      // The BuildKit behind the machines is shared: the reset is recorded, no cache is dropped.
      project(ctx, req.projectId).cacheResets++;
      return {};
    },
  };
}

function projectMessage(p: LocalProject) {
  const { keepGb, keepDays, keepBytes } = p.cachePolicy;
  return {
    projectId: p.projectId,
    organizationId: p.organizationId,
    name: p.name,
    regionId: p.regionId,
    createdAt: timestampFromDate(p.createdAt),
    // keep_bytes always: Depot's CLI reads "no limit" from its absence.
    cachePolicy: { keepGb, keepDays, keepBytes: keepBytes ?? BigInt(keepGb) * BigInt(GIB) },
    hardware: Hardware[p.hardware],
  };
}

function validName(name: string): string {
  if (name.trim() === "") throw new ConnectError("name is required", Code.InvalidArgument);
  return name;
}

function validRegion(regionId: string): string {
  if (!REGIONS.includes(regionId)) {
    throw new ConnectError(`region_id must be one of ${REGIONS.join(", ")}, got ${JSON.stringify(regionId)}`, Code.InvalidArgument);
  }
  return regionId;
}

/**
 * No policy means Depot's defaults. Older clients send only the deprecated
 * byte count; a zero `keep_gb` without it means the default size, while a
 * zero `keep_days` means no age limit, as Depot's CLI reads it.
 */
function cachePolicyOf(policy: CachePolicy | undefined): LocalProject["cachePolicy"] {
  if (!policy) return { ...DEFAULT_CACHE_POLICY };
  const { keepGb, keepDays, keepBytes } = policy;
  if (keepGb < 0 || keepDays < 0 || (keepBytes !== undefined && keepBytes < 0n)) {
    throw new ConnectError("cache_policy values must not be negative", Code.InvalidArgument);
  }
  const gb = keepGb > 0 ? keepGb : keepBytes ? Math.max(1, Math.round(Number(keepBytes) / GIB)) : DEFAULT_CACHE_POLICY.keepGb;
  return { keepGb: gb, keepDays, ...(keepBytes !== undefined ? { keepBytes } : {}) };
}

/** Unset or unspecified means Depot's default machine, 16 CPUs and 32 GB. */
function hardwareOf(hardware: Hardware | undefined): LocalHardware {
  if (hardware === undefined || hardware === Hardware.HARDWARE_UNSPECIFIED) return "HARDWARE_16X32";
  const name = Hardware[hardware] as LocalHardware | "HARDWARE_UNSPECIFIED" | undefined;
  if (name === undefined || name === "HARDWARE_UNSPECIFIED") throw new ConnectError(`unknown hardware ${hardware}`, Code.InvalidArgument);
  return name;
}
