// The local Depot's records: projects and builds, their ids and tokens, and
// the cursors that page through them. No protocol and no auth here.
import { randomBytes } from "node:crypto";
import { BuildKitNodeError } from "../../errors.js";
import { invalidPageToken } from "./paging.js";
import type { LocalBuildRecord, LocalProject } from "./types.js";

export const REGIONS: readonly string[] = ["us-east-1", "eu-central-1"];
export const DEFAULT_CACHE_POLICY = { keepGb: 50, keepDays: 14 } as const;

/** Lowercase letters and digits, like Depot's own ids. */
export function randomId(length: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from(randomBytes(length), (byte) => alphabet[byte % alphabet.length]).join("");
}

export function newOrganizationToken(): string {
  return `org-${randomBytes(24).toString("base64url")}`;
}

export interface NewProject {
  name: string;
  regionId: string;
  projectId?: string;
  cachePolicy?: LocalProject["cachePolicy"];
  hardware?: LocalProject["hardware"];
}

export class DepotStore {
  readonly projects = new Map<string, LocalProject>();
  readonly builds = new Map<string, LocalBuildRecord>();
  /** Creation order, which listings and their cursors follow even across deletions. */
  private readonly projectSequence = new Map<string, number>();
  private readonly buildSequence = new Map<string, number>();
  private nextSequence = 1;
  private readonly buildsByToken = new Map<string, LocalBuildRecord>();
  private readonly pullTokens = new Map<string, PullTokenScope>();

  constructor(readonly organizationId: string) {}

  addProject(input: NewProject): LocalProject {
    const projectId = input.projectId ?? `prj_${randomId(12)}`;
    if (this.projects.has(projectId)) {
      throw new BuildKitNodeError("ALREADY_EXISTS", `project ${projectId} already exists`);
    }
    const project: LocalProject = {
      projectId,
      organizationId: this.organizationId,
      name: input.name,
      regionId: input.regionId,
      createdAt: new Date(),
      cachePolicy: input.cachePolicy ?? { ...DEFAULT_CACHE_POLICY },
      hardware: input.hardware ?? "HARDWARE_16X32",
      cacheResets: 0,
    };
    this.projects.set(projectId, project);
    this.projectSequence.set(projectId, this.nextSequence++);
    return project;
  }

  deleteProject(projectId: string): void {
    this.projects.delete(projectId);
    this.projectSequence.delete(projectId);
  }

  addBuild(projectId: string, options: LocalBuildRecord["options"]): LocalBuildRecord {
    let id = randomId(10);
    while (this.builds.has(id)) id = randomId(10);
    const build: LocalBuildRecord = {
      id,
      projectId,
      token: `depot-build-${randomBytes(24).toString("base64url")}`,
      createdAt: new Date(),
      status: "running",
      finishCalls: 0,
      options,
      healthReports: [],
      connectionPolls: [],
      machines: [],
      steps: [],
      statusReports: { streamsOpened: 0, streamsCompleted: 0, requests: 0, statuses: 0, droppedLogBytes: 0 },
      timings: [],
      dockerfiles: [],
      saves: [],
      pulls: [],
      pushes: [],
    };
    this.builds.set(id, build);
    this.buildsByToken.set(build.token, build);
    this.buildSequence.set(id, this.nextSequence++);
    return build;
  }

  buildByToken(token: string): LocalBuildRecord | undefined {
    return this.buildsByToken.get(token);
  }

  /** A token for the saved-image registry, reading one project (or one build of it). */
  addPullToken(scope: PullTokenScope): string {
    const token = `depot-pull-${randomBytes(24).toString("base64url")}`;
    this.pullTokens.set(token, scope);
    return token;
  }

  pullTokenScope(token: string): PullTokenScope | undefined {
    return this.pullTokens.get(token);
  }

  /** Projects in creation order, a page at a time; a token not ours is refused. */
  pageOfProjects(filter: (p: LocalProject) => boolean, request: PageRequest): Page<LocalProject> {
    const all = [...this.projects.values()].filter(filter);
    return page(all, (p) => this.projectSequence.get(p.projectId) ?? 0, request, "oldest first");
  }

  /** A project's builds, newest first, a page at a time; a token not ours is refused. */
  pageOfBuilds(projectId: string, request: PageRequest): Page<LocalBuildRecord> {
    const all = [...this.builds.values()].filter((b) => b.projectId === projectId);
    return page(all, (b) => this.buildSequence.get(b.id) ?? 0, request, "newest first");
  }
}

export interface PullTokenScope {
  projectId: string;
  /** Set when the token reads only this build's image. */
  buildId?: string;
}

export interface PageRequest {
  size: number;
  token?: string | undefined;
}

export interface Page<T> {
  items: T[];
  /** Set when more items follow. */
  nextToken?: string;
}

/**
 * A page token names the last item handed out by its creation number, so
 * paging never repeats or skips an item when others are added or deleted.
 */
function page<T>(
  items: T[],
  seq: (item: T) => number,
  { size, token }: PageRequest,
  order: "oldest first" | "newest first",
): Page<T> {
  const ascending = order === "oldest first";
  const sorted = items.sort((a, b) => (ascending ? seq(a) - seq(b) : seq(b) - seq(a)));
  let start = 0;
  if (token) {
    const after = decodeCursor(token);
    if (after === undefined) throw invalidPageToken();
    start = sorted.findIndex((item) => (ascending ? seq(item) > after : seq(item) < after));
    if (start === -1) start = sorted.length;
  }
  const pageItems = sorted.slice(start, start + size);
  const last = pageItems.at(-1);
  const more = start + size < sorted.length;
  return { items: pageItems, ...(more && last !== undefined ? { nextToken: encodeCursor(seq(last)) } : {}) };
}

function encodeCursor(sequence: number): string {
  return Buffer.from(`after:${sequence}`).toString("base64url");
}

function decodeCursor(token: string): number | undefined {
  const match = /^after:(\d+)$/.exec(Buffer.from(token, "base64url").toString());
  return match ? Number(match[1]) : undefined;
}
