/**
 * A local stand-in for Depot's API, for tests: a real Connect server (Connect
 * binary and JSON, and gRPC, over HTTP/1.1 and h2c on one port) serving
 * depot.cli.v1.BuildService, depot.build.v1.BuildService and
 * depot.core.v1.ProjectService from memory. Its machines are mTLS fronts for
 * one real BuildKit, issued with real certificates, so a client goes through
 * Depot's whole flow: register a build, poll for a machine, connect with
 * mutual TLS, report health, finish.
 */
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { BuildService as BuildV1Service } from "../gen/depot/build/v1/build_pb.js";
import { BuildService as CliBuildService } from "../gen/depot/cli/v1/build_pb.js";
import { ProjectService } from "../gen/depot/core/v1/project_pb.js";
import { BuildKitNodeError } from "../errors.js";
import { parseAddress } from "../transport/address.js";
import { createLogger } from "../log.js";
import type { TlsOptions } from "../transport/tls-options.js";
import { Authenticator } from "./local-depot/auth.js";
import { buildV1Service } from "./local-depot/build-v1-service.js";
import { cliBuildService } from "./local-depot/cli-build-service.js";
import type { DepotContext } from "./local-depot/context.js";
import { FaultInjector } from "./local-depot/faults.js";
import { listen } from "./local-depot/listener.js";
import { MachinePool } from "./local-depot/machines.js";
import { projectService } from "./local-depot/project-service.js";
import { DepotStore, newOrganizationToken, REGIONS } from "./local-depot/store.js";
import type { LocalBuildRecord, LocalDepotFaults, LocalProject } from "./local-depot/types.js";

export type {
  LocalBuildRecord,
  LocalBuildResult,
  LocalDepotFaults,
  LocalFaultCode,
  LocalHardware,
  LocalMachineRecord,
  LocalMachineStopReason,
  LocalPlatform,
  LocalProject,
} from "./local-depot/types.js";

export interface LocalDepotOptions {
  /** The BuildKit behind every machine, e.g. "docker://". */
  buildkit: string;
  /** If `buildkit` is tcp:// with TLS. */
  buildkitTls?: TlsOptions;
  /** Default 0 (any free port), always on 127.0.0.1. */
  port?: number;
  /** The organization token; default a random "org-…" string. */
  token?: string;
  /** Default "org-local". */
  organizationId?: string;
  /** GetBuildKitConnection answers `pending` this many times per machine first (default 2). */
  pendingPolls?: number;
  /** `wait_ms` in those replies (default 100). */
  pendingWaitMs?: number;
  /** A machine with no health report for this long is reclaimed (its front stopped) (default 60_000). */
  machineIdleTimeoutMs?: number;
}

export interface LocalDepot extends AsyncDisposable {
  /** "http://127.0.0.1:<port>" */
  readonly apiUrl: string;
  /** The organization token. */
  readonly token: string;
  readonly organizationId: string;
  /**
   * With `buildkit: "docker://…"`: the Engine socket of the dockerd whose
   * BuildKit every machine is. Pushes of images built there go through it;
   * give it to the client as `dockerEngine` (`depot.build()`,
   * `machine.connect()`, `--docker-engine`). Undefined for any other BuildKit.
   */
  readonly dockerEngine: string | undefined;
  readonly projects: ReadonlyMap<string, LocalProject>;
  readonly builds: ReadonlyMap<string, LocalBuildRecord>;
  readonly faults: LocalDepotFaults;
  /** Adds a project directly (tests' setup), returns it. */
  addProject(p: { name: string; regionId?: string; projectId?: string }): LocalProject;
  /** Closes the listener and its connections, stops every machine. Idempotent. */
  stop(): Promise<void>;
}

const SERVICES = [CliBuildService, BuildV1Service, ProjectService];

export async function startLocalDepot(options: LocalDepotOptions): Promise<LocalDepot> {
  const backend = parseAddress(options.buildkit); // a bad address fails here, not at the first machine
  const token = options.token ?? newOrganizationToken();
  const organizationId = options.organizationId ?? "org-local";
  const log = createLogger("local-depot");
  const store = new DepotStore(organizationId);
  const faults = new FaultInjector(SERVICES);
  const machines = new MachinePool({
    buildkit: options.buildkit,
    buildkitTls: options.buildkitTls,
    pendingPolls: nonNegative("pendingPolls", options.pendingPolls ?? 2),
    pendingWaitMs: nonNegative("pendingWaitMs", options.pendingWaitMs ?? 100),
    idleTimeoutMs: nonNegative("machineIdleTimeoutMs", options.machineIdleTimeoutMs ?? 60_000),
    faults,
  });
  let apiUrl = "";
  const depot: DepotContext = { store, auth: new Authenticator(store, token), machines, faults, apiUrl: () => apiUrl, log };

  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(CliBuildService, cliBuildService(depot));
      router.service(BuildV1Service, buildV1Service(depot));
      router.service(ProjectService, projectService(depot));
    },
    interceptors: [faults.interceptor],
  });
  const listener = await listen(handler, options.port ?? 0, log).catch(async (err: unknown) => {
    await machines.stop();
    throw err;
  });
  apiUrl = `http://127.0.0.1:${listener.port}`;
  log(`local Depot at ${apiUrl} for ${options.buildkit}`);

  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= Promise.all([listener.close(), machines.stop()]).then(() => log("local Depot stopped")));

  return {
    apiUrl,
    token,
    organizationId,
    dockerEngine: backend.kind === "docker" ? backend.socketPath : undefined,
    projects: store.projects,
    builds: store.builds,
    faults,
    addProject: ({ name, regionId = REGIONS[0]!, projectId }) => {
      if (!name.trim()) throw new BuildKitNodeError("INVALID_ARGUMENT", "a project needs a name");
      if (!REGIONS.includes(regionId)) throw new BuildKitNodeError("INVALID_ARGUMENT", `regionId must be one of ${REGIONS.join(", ")}`);
      return store.addProject({ name, regionId, projectId });
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) throw new BuildKitNodeError("INVALID_ARGUMENT", `${name} must be a non-negative number, got ${value}`);
  return value;
}
