// Who may read and write the saved-image registry, as Depot's registry
// decides it: Basic auth with the user name `x-token` and a Depot token as
// the password. A build's token writes and reads its project's repository, a
// pull token (GetPullToken, GetPullInfo) reads one project or one build, the
// organization token does anything. Repositories are named by project id.
// The answered requests become the records tests read: saves and pulls.
// Several fronts may share one SavedImageAccess (the usual one and the one
// answering as registry.depot.dev): one registry behind them, one set of
// records, each front's references under the name clients reach it by.
import type { IncomingHttpHeaders } from "node:http";
import type { AccessDecision, RegistryRequest } from "../registry-front.js";
import type { DepotStore, PullTokenScope } from "./store.js";
import type { LocalBuildRecord, LocalImagePull, LocalSavedImage } from "./types.js";

/** A front's `observe`: what the registry answered to a request the front let through. */
export type RegistryObserver = (request: RegistryRequest, status: number, headers: IncomingHttpHeaders) => void;

/** Told of each image saved, once it is in its build's `saves`. */
export type SaveListener = (image: LocalSavedImage, build: LocalBuildRecord) => void;

type Caller =
  | { kind: "organization" }
  | { kind: "build"; build: LocalBuildRecord }
  | { kind: "pull"; scope: PullTokenScope };

const USER_NAME = "x-token";
const WRITE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export class SavedImageAccess {
  /** Who made each request that was let through, for `observe`. */
  private readonly callers = new WeakMap<RegistryRequest, Caller>();
  /** `<project>:<tag>` → the build that last saved that tag. */
  private readonly savedTags = new Map<string, LocalBuildRecord>();

  constructor(
    private readonly store: DepotStore,
    private readonly organizationToken: string,
    private readonly onSave?: SaveListener,
  ) {}

  readonly authorize = (request: RegistryRequest): AccessDecision => {
    const caller = this.caller(request.headers.authorization);
    if (!caller) return { ok: false, status: 401, code: "UNAUTHORIZED", message: `log in with the user name ${USER_NAME} and a Depot token` };
    const { target } = request;
    if (!target) {
      // `/v2/` is the login check; the catalog and anything else is the organization's alone.
      if (request.url.split("?")[0] === "/v2/" || caller.kind === "organization") return this.allow(request, caller);
      return denied("only the organization token lists repositories");
    }
    if (caller.kind === "organization") return this.allow(request, caller);
    const projectId = caller.kind === "build" ? caller.build.projectId : caller.scope.projectId;
    if (target.repository !== projectId) return denied(`the token does not cover repository ${target.repository}`);
    if (WRITE_METHODS.has(request.method)) {
      return caller.kind === "build" ? this.allow(request, caller) : denied("a pull token only reads");
    }
    if (caller.kind === "pull" && caller.scope.buildId && target.kind === "manifests" && !isDigest(target.reference)) {
      const build = this.buildOfTag(target.repository, target.reference);
      if (build?.id !== caller.scope.buildId) return denied(`the token reads only build ${caller.scope.buildId}`);
    }
    return this.allow(request, caller);
  };

  /**
   * The `observe` of a front that clients reach as `host()` (`host[:port]`,
   * as image references name it): the records' references use that name.
   */
  observer(host: () => string): RegistryObserver {
    return (request, status, headers) => {
      const { target } = request;
      const caller = this.callers.get(request);
      if (!target || !caller || target.kind !== "manifests" || isDigest(target.reference) || status >= 300) return;
      const reference = `${host()}/${target.repository}:${target.reference}`;
      if (request.method === "PUT") {
        const build = caller.kind === "build" ? caller.build : this.store.builds.get(target.reference);
        if (!build) return;
        this.savedTags.set(`${target.repository}:${target.reference}`, build);
        const digest = firstHeader(headers["docker-content-digest"]);
        const image = { reference, digest, mediaType: firstHeader(request.headers["content-type"]), at: new Date() };
        build.saves.push(image);
        this.onSave?.(image, build);
      } else if (request.method === "GET" || request.method === "HEAD") {
        const build = this.buildOfTag(target.repository, target.reference);
        build?.pulls.push({ reference, by: pulledBy(caller), at: new Date() });
      }
    };
  }

  private allow(request: RegistryRequest, caller: Caller): AccessDecision {
    this.callers.set(request, caller);
    return { ok: true };
  }

  private buildOfTag(repository: string, tag: string): LocalBuildRecord | undefined {
    const build = this.savedTags.get(`${repository}:${tag}`) ?? this.store.builds.get(tag);
    return build?.projectId === repository ? build : undefined;
  }

  private caller(authorization: string | undefined): Caller | undefined {
    const match = authorization ? /^Basic\s+(\S+)$/i.exec(authorization) : null;
    if (!match) return undefined;
    const decoded = Buffer.from(match[1]!, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0 || decoded.slice(0, colon) !== USER_NAME) return undefined;
    const token = decoded.slice(colon + 1);
    if (token === this.organizationToken) return { kind: "organization" };
    const build = this.store.buildByToken(token);
    if (build) return { kind: "build", build };
    const scope = this.store.pullTokenScope(token);
    return scope ? { kind: "pull", scope } : undefined;
  }
}

function denied(message: string): AccessDecision {
  return { ok: false, status: 403, code: "DENIED", message };
}

function pulledBy(caller: Caller): LocalImagePull["by"] {
  return caller.kind === "organization" ? "organization token" : caller.kind === "build" ? "build token" : "pull token";
}

/** A tag never holds a colon; a digest always does ("sha256:…"). */
function isDigest(reference: string): boolean {
  return reference.includes(":");
}

function firstHeader(value: string | string[] | undefined): string {
  return (Array.isArray(value) ? value[0] : value) ?? "";
}
