import { timestampDate } from "@bufbuild/protobuf/wkt";
import { BuildKitNodeError } from "../errors.js";
import {
  type CachePolicy as CachePolicyMessage,
  Hardware as HardwareEnum,
  type Project as ProjectMessage,
} from "../gen/depot/core/v1/project_pb.js";
import { createLogger } from "../log.js";
import { DepotError } from "./errors.js";
import { callDepot, type DepotApi } from "./transport.js";

const log = createLogger("depot");

/** CPUs x GB of memory of a project's machines; UNSPECIFIED means Depot's default (16x32). */
export type Hardware =
  | "HARDWARE_UNSPECIFIED"
  | "HARDWARE_16X32"
  | "HARDWARE_4X4"
  | "HARDWARE_8X8"
  | "HARDWARE_8X16"
  | "HARDWARE_32X64"
  | "HARDWARE_64X128"
  | "HARDWARE_96X192"
  | "HARDWARE_192X384";

/** How much build cache a project keeps: at most `keepGb` GB, entries used within `keepDays` days (0: no limit). */
export interface CachePolicy {
  keepGb: number;
  keepDays: number;
}

export interface Project {
  projectId: string;
  organizationId: string;
  name: string;
  /** e.g. `us-east-1`, `eu-central-1`. */
  regionId: string;
  createdAt: Date;
  cachePolicy: CachePolicy;
  hardware: Hardware;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface CreateProjectInput {
  name: string;
  regionId: string;
  cachePolicy?: CachePolicy;
  hardware?: Hardware;
}

/** Only the fields given change. */
export interface ProjectChanges {
  name?: string;
  regionId?: string;
  cachePolicy?: CachePolicy;
  hardware?: Hardware;
}

export interface DepotProjects {
  /** Every project of the organization (all pages), optionally of one region. */
  list(options?: { regionId?: string; signal?: AbortSignal }): Promise<Project[]>;
  get(projectId: string, options?: RequestOptions): Promise<Project>;
  create(input: CreateProjectInput, options?: RequestOptions): Promise<Project>;
  update(projectId: string, changes: ProjectChanges, options?: RequestOptions): Promise<Project>;
  /** Deletes the project, its machines and its cache volumes. */
  delete(projectId: string, options?: RequestOptions): Promise<void>;
  /** Stops the project's machines and deletes its cache, keeping the project. */
  reset(projectId: string, options?: RequestOptions): Promise<void>;
}

/** Reads are idempotent: a transient failure is tried again (a few times). Writes are tried once. */
const READ_ATTEMPTS = 4;

/** Depot's ProjectService, with the organization token. */
export function createProjectsApi(api: DepotApi, orgToken: () => string): DepotProjects {
  const projects = api.projects;
  return {
    async list(options = {}) {
      const token = orgToken();
      const out: Project[] = [];
      const seen = new Set<string>();
      let pageToken: string | undefined;
      do {
        const page = await callDepot(
          "ListProjects",
          token,
          (call) => projects.listProjects({ ...(options.regionId ? { regionId: options.regionId } : {}), ...(pageToken ? { pageToken } : {}) }, call),
          { signal: options.signal, maxAttempts: READ_ATTEMPTS },
        );
        out.push(...page.projects.map((p) => toProject(p, "ListProjects")));
        pageToken = page.nextPageToken || undefined;
        if (pageToken !== undefined) {
          if (seen.has(pageToken)) throw new DepotError("ListProjects", "INTERNAL", "Depot ListProjects returned the same page token twice");
          seen.add(pageToken);
        }
      } while (pageToken !== undefined);
      return out;
    },

    async get(projectId, options = {}) {
      const token = orgToken();
      checkId(projectId);
      const res = await callDepot("GetProject", token, (call) => projects.getProject({ projectId }, call), {
        signal: options.signal,
        maxAttempts: READ_ATTEMPTS,
      });
      return toProject(res.project, "GetProject");
    },

    async create(input, options = {}) {
      const token = orgToken();
      if (!input?.name) throw new BuildKitNodeError("INVALID_ARGUMENT", "projects.create: name is required");
      if (!input.regionId) throw new BuildKitNodeError("INVALID_ARGUMENT", "projects.create: regionId is required (e.g. us-east-1)");
      const request = {
        name: input.name,
        regionId: input.regionId,
        ...(input.cachePolicy ? { cachePolicy: toCachePolicyMessage(input.cachePolicy) } : {}),
        ...(input.hardware ? { hardware: toHardwareEnum(input.hardware) } : {}),
      };
      const res = await callDepot("CreateProject", token, (call) => projects.createProject(request, call), { signal: options.signal });
      const project = toProject(res.project, "CreateProject");
      log(`created project ${project.projectId} (${project.name}, ${project.regionId})`);
      return project;
    },

    async update(projectId, changes, options = {}) {
      const token = orgToken();
      checkId(projectId);
      const request = {
        projectId,
        ...(changes.name !== undefined ? { name: changes.name } : {}),
        ...(changes.regionId !== undefined ? { regionId: changes.regionId } : {}),
        ...(changes.cachePolicy ? { cachePolicy: toCachePolicyMessage(changes.cachePolicy) } : {}),
        ...(changes.hardware ? { hardware: toHardwareEnum(changes.hardware) } : {}),
      };
      const res = await callDepot("UpdateProject", token, (call) => projects.updateProject(request, call), { signal: options.signal });
      return toProject(res.project, "UpdateProject");
    },

    async delete(projectId, options = {}) {
      const token = orgToken();
      checkId(projectId);
      await callDepot("DeleteProject", token, (call) => projects.deleteProject({ projectId }, call), { signal: options.signal });
      log(`deleted project ${projectId}`);
    },

    async reset(projectId, options = {}) {
      const token = orgToken();
      checkId(projectId);
      await callDepot("ResetProject", token, (call) => projects.resetProject({ projectId }, call), { signal: options.signal });
      log(`reset project ${projectId}`);
    },
  };
}

function checkId(projectId: string): void {
  if (typeof projectId !== "string" || projectId === "") throw new BuildKitNodeError("INVALID_ARGUMENT", "a project id is required");
}

const GB = 1024 ** 3;

/** The wire message as a plain object: int64 as number, Timestamp as Date, enum as its name. */
export function toProject(message: ProjectMessage | undefined, method: string): Project {
  if (!message) throw new DepotError(method, "INTERNAL", `Depot ${method} returned no project`);
  const policy = message.cachePolicy;
  // keep_gb superseded keep_bytes (int64); an older server may fill only the latter.
  const keepGb = policy ? policy.keepGb || (policy.keepBytes ? Math.round(Number(policy.keepBytes) / GB) : 0) : 0;
  return {
    projectId: message.projectId,
    organizationId: message.organizationId,
    name: message.name,
    regionId: message.regionId,
    createdAt: message.createdAt ? timestampDate(message.createdAt) : new Date(0),
    cachePolicy: { keepGb, keepDays: policy?.keepDays ?? 0 },
    hardware: hardwareName(message.hardware),
  };
}

function hardwareName(value: HardwareEnum): Hardware {
  const name = HardwareEnum[value] as Hardware | undefined;
  if (name) return name;
  log(`unknown hardware value ${value}; reported as HARDWARE_UNSPECIFIED`);
  return "HARDWARE_UNSPECIFIED";
}

function toHardwareEnum(name: Hardware): HardwareEnum {
  const value = (HardwareEnum as unknown as Record<string, number | undefined>)[name];
  if (typeof value !== "number" || !name.startsWith("HARDWARE_")) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `unknown hardware "${name}" (expected one of ${hardwareNames().join(", ")})`);
  }
  return value;
}

function hardwareNames(): string[] {
  return Object.keys(HardwareEnum).filter((k) => k.startsWith("HARDWARE_"));
}

function toCachePolicyMessage(policy: CachePolicy): Pick<CachePolicyMessage, "keepGb" | "keepDays"> {
  for (const [field, value] of Object.entries({ keepGb: policy.keepGb, keepDays: policy.keepDays })) {
    if (!Number.isInteger(value) || value < 0 || value > 2 ** 31 - 1) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `cachePolicy.${field} must be a whole number ≥ 0, not ${String(value)}`);
    }
  }
  return { keepGb: policy.keepGb, keepDays: policy.keepDays };
}
