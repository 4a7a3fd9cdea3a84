// Bearer tokens as Depot checks them: the organization token for projects and
// for registering builds, a build's own token for that build's calls. Error
// messages never quote a token.
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { DepotStore } from "./store.js";
import type { LocalBuildRecord } from "./types.js";

export type Caller = { kind: "organization" } | { kind: "build"; build: LocalBuildRecord };

export class Authenticator {
  constructor(
    private readonly store: DepotStore,
    private readonly organizationToken: string,
  ) {}

  /** A call that needs the organization token. */
  organization(ctx: HandlerContext): void {
    if (this.caller(ctx).kind !== "organization") {
      throw new ConnectError("this call needs the organization token, not a build token", Code.PermissionDenied);
    }
  }

  /**
   * A call about one build: it must exist, and the caller must hold its
   * token (or, with `allowOrganization`, the organization token).
   */
  build(ctx: HandlerContext, buildId: string, options: { allowOrganization?: boolean } = {}): LocalBuildRecord {
    return this.buildFor(ctx.requestHeader.get("authorization") ?? undefined, buildId, options);
  }

  /** `build()` for a request that is not a Connect call: the Authorization header itself. */
  buildFor(authorization: string | undefined, buildId: string, options: { allowOrganization?: boolean } = {}): LocalBuildRecord {
    const caller = this.callerOf(authorization);
    const build = this.store.builds.get(buildId);
    if (!build) throw new ConnectError(`build ${JSON.stringify(buildId)} not found`, Code.NotFound);
    if (caller.kind === "organization" && options.allowOrganization) return build;
    if (caller.kind === "build" && caller.build === build) return build;
    throw new ConnectError(
      caller.kind === "organization" ? "this call needs the build's own token" : "the token belongs to another build",
      Code.PermissionDenied,
    );
  }

  /** Who the call's token belongs to (any valid token). */
  caller(ctx: HandlerContext): Caller {
    return this.callerOf(ctx.requestHeader.get("authorization") ?? undefined);
  }

  private callerOf(header: string | undefined): Caller {
    const token = header ? /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] : undefined;
    if (!token) throw new ConnectError("missing Authorization: Bearer token", Code.Unauthenticated);
    if (token === this.organizationToken) return { kind: "organization" };
    const build = this.store.buildByToken(token);
    if (build) return { kind: "build", build };
    throw new ConnectError("unknown token", Code.Unauthenticated);
  }
}
