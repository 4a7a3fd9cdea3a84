/**
 * A local stand-in for Depot's API, for tests and offline CI: a real Connect
 * server (Connect binary and JSON, and gRPC, over HTTP/1.1 and h2c on one
 * port) serving what Depot's own clients call — the `depot` CLI and
 * `@depot/sdk-node` as well as this library — from memory. Its machines are
 * mTLS fronts for one real BuildKit, issued with real certificates; its saved
 * images live in a real registry behind a front that checks Depot's tokens.
 */
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { BuildService as BuildV1Service } from "../gen/depot/build/v1/build_pb.js";
import { BuildKitService } from "../gen/depot/buildkit/v1/buildkit_pb.js";
import { BuildService as CliBuildService } from "../gen/depot/cli/v1/build_pb.js";
import { PushService } from "../gen/depot/cli/v1/push_pb.js";
import { ProjectsService as CliProjectsService } from "../gen/depot/cli/v1beta1/projects_pb.js";
import { OrganizationService } from "../gen/depot/core/v1/org_pb.js";
import { ProjectService } from "../gen/depot/core/v1/project_pb.js";
import { BuildKitNodeError } from "../errors.js";
import { parseAddress } from "../transport/address.js";
import { createLogger } from "../log.js";
import type { TlsOptions } from "../transport/tls-options.js";
import { type CertificateAuthority, createCertificateAuthority } from "./certificates.js";
import { Authenticator } from "./local-depot/auth.js";
import { blobService } from "./local-depot/blob-service.js";
import { buildkitV1Service } from "./local-depot/buildkit-v1-service.js";
import { buildV1Service } from "./local-depot/build-v1-service.js";
import { cliBuildService } from "./local-depot/cli-build-service.js";
import { cliProjectsService } from "./local-depot/cli-projects-service.js";
import type { DepotContext } from "./local-depot/context.js";
import { FaultInjector } from "./local-depot/faults.js";
import { BLOB_HOST, startHostsProxy } from "./local-depot/hosts-proxy.js";
import { listen } from "./local-depot/listener.js";
import { MachinePool } from "./local-depot/machines.js";
import { organizationService } from "./local-depot/organization-service.js";
import { projectService } from "./local-depot/project-service.js";
import { pushService } from "./local-depot/push-service.js";
import { startSavedImageFronts } from "./local-depot/saved-image-fronts.js";
import { DEFAULT_MAX_LOG_BYTES_PER_BUILD, StatusRecorder } from "./local-depot/status.js";
import { DepotStore, newOrganizationToken, REGIONS } from "./local-depot/store.js";
import type { LocalBuildRecord, LocalDepotClock, LocalDepotFaults, LocalProject, LocalSavedImage } from "./local-depot/types.js";

export type {
  LocalBuildOptions,
  LocalBuildRecord,
  LocalBuildResult,
  LocalBuildStep,
  LocalDepotClock,
  LocalDepotFaults,
  LocalFaultCode,
  LocalHardware,
  LocalImagePull,
  LocalMachineRecord,
  LocalMachineStopReason,
  LocalPlatform,
  LocalProject,
  LocalPushRecord,
  LocalSavedImage,
  LocalStatusReports,
  LocalStepLog,
  LocalTimedStep,
} from "./local-depot/types.js";

/** The registry of the set-up script (`scripts/local-buildkit.sh`). */
export const DEFAULT_SAVED_IMAGE_REGISTRY = "127.0.0.1:5000";

export interface LocalDepotOptions {
  /**
   * The BuildKit behind every machine: "docker://", "unix:///run/buildkit/buildkitd.sock",
   * or "tcp://host:port" (with `buildkitTls` for mutual TLS).
   */
  buildkit: string;
  /** If `buildkit` is tcp:// with TLS. */
  buildkitTls?: TlsOptions;
  /** Default 0 (any free port), always on 127.0.0.1. A port in use: ALREADY_EXISTS. */
  port?: number;
  /** The organization token; default a random "org-…" string. */
  token?: string;
  /** Default "org-local". */
  organizationId?: string;
  /** The organization's display name (`depot org list`, `depot projects list`); default "Local Depot". */
  organizationName?: string;
  /** GetBuildKitConnection answers `pending` this many times per machine first (default 2). */
  pendingPolls?: number;
  /** `wait_ms` in those replies (default 100). */
  pendingWaitMs?: number;
  /** A machine with no health report for this long is reclaimed (its front stopped) (default 60_000). */
  machineIdleTimeoutMs?: number;
  /**
   * Ask clients to compress their gRPC traffic with machines ("gzip"), or to
   * send it as is ("identity"): `ActiveConnection.compressor` of
   * depot.cli.v1. Unset leaves it to the client.
   */
  machineCompression?: "gzip" | "identity";
  /**
   * Where saved builds (`depot build --save`) go: a registry, `host:port`,
   * spoken to over plain HTTP (default "127.0.0.1:5000", the set-up
   * script's), put behind a front that checks Depot's tokens; `false` for no
   * saved-image registry.
   */
  savedImageRegistry?: string | false;
  /** Credentials the front sends to `savedImageRegistry`, if it needs them. */
  savedImageRegistryAuth?: { username: string; password: string };
  /**
   * Also serve the saved-image registry as Depot's own, `registry.depot.dev`,
   * on this port of 127.0.0.1 (0: any free port). Handed a build it did not
   * create (`DEPOT_BUILD_ID`), the `depot` CLI saves to
   * `registry.depot.dev/<project>:<build id>` whatever the server, and BuildKit
   * pushes there itself: with that name resolving to 127.0.0.1 (/etc/hosts),
   * port 80 here and the BuildKit told the host is plain HTTP (buildkitd.toml:
   * `[registry."registry.depot.dev"] http = true`), such saves land here, with
   * the same tokens and records as through `savedImageRegistry`'s front.
   * Off by default; needs a saved-image registry. A port in use: ALREADY_EXISTS;
   * one below 1024 without root: PERMISSION_DENIED.
   */
  depotRegistryPort?: number;
  /**
   * Called for each image saved to the saved-image registry, once it is in
   * its build's `saves` (e.g. to log it). It must not throw.
   */
  onImageSaved?: (image: LocalSavedImage, build: LocalBuildRecord) => void;
  /** Log bytes kept per build from its status reports; more are counted, not kept (default 16 MiB). */
  maxLogBytesPerBuild?: number;
  /** The time for idle machines and cancels; tests inject one to make those exact (default the wall clock). */
  clock?: LocalDepotClock;
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
  /** `127.0.0.1:<port>`: the saved-image registry's front (plain HTTP and HTTPS), when there is one. */
  readonly savedImageRegistry: string | undefined;
  /**
   * With `depotRegistryPort`: the same registry as image references reach it
   * there, "registry.depot.dev" on port 80 or 443, else "registry.depot.dev:<port>".
   */
  readonly depotRegistry: string | undefined;
  /**
   * `http://127.0.0.1:<port>`: an HTTPS proxy for Depot's clients (HTTPS_PROXY).
   * It answers for `blob.depot.dev`, which `depot push` calls to copy blobs,
   * and tunnels every other host.
   */
  readonly httpsProxy: string;
  /**
   * The CA (PEM) behind the saved-image registry's and the proxy's HTTPS
   * certificates: what a client must trust (the `depot` CLI reads SSL_CERT_FILE).
   */
  readonly caCertificate: string;
  /** That CA, to issue more certificates clients of this local Depot will trust (e.g. an HTTPS registry front). */
  readonly certificateAuthority: CertificateAuthority;
  /** Adds a project directly (tests' setup), returns it. */
  addProject(p: { name: string; regionId?: string; projectId?: string }): LocalProject;
  /** Closes the listener and its connections, stops every machine. Idempotent. */
  stop(): Promise<void>;
}

const SERVICES: DescService[] = [
  CliBuildService,
  PushService,
  CliProjectsService,
  BuildV1Service,
  BuildKitService,
  ProjectService,
  OrganizationService,
];

export async function startLocalDepot(options: LocalDepotOptions): Promise<LocalDepot> {
  const backend = parseAddress(options.buildkit); // a bad address fails here, not at the first machine
  if (options.machineCompression !== undefined && !["gzip", "identity"].includes(options.machineCompression)) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `machineCompression must be "gzip" or "identity", got ${JSON.stringify(options.machineCompression)}`);
  }
  checkDepotRegistryPort(options);
  // Every option is checked before the machine pool starts its timer.
  const maxLogBytes = nonNegative("maxLogBytesPerBuild", options.maxLogBytesPerBuild ?? DEFAULT_MAX_LOG_BYTES_PER_BUILD);
  const token = options.token ?? newOrganizationToken();
  const organizationId = options.organizationId ?? "org-local";
  const log = createLogger("local-depot");
  const store = new DepotStore(organizationId);
  const faults = new FaultInjector(SERVICES);
  const authority = createCertificateAuthority({ commonName: "buildkit-node local Depot CA" });
  const machines = new MachinePool({
    buildkit: options.buildkit,
    buildkitTls: options.buildkitTls,
    pendingPolls: nonNegative("pendingPolls", options.pendingPolls ?? 2),
    pendingWaitMs: nonNegative("pendingWaitMs", options.pendingWaitMs ?? 100),
    idleTimeoutMs: nonNegative("machineIdleTimeoutMs", options.machineIdleTimeoutMs ?? 60_000),
    faults,
    clock: options.clock,
  });
  let apiUrl = "";
  const depot: DepotContext = {
    store,
    auth: new Authenticator(store, token),
    machines,
    faults,
    apiUrl: () => apiUrl,
    organizationName: options.organizationName ?? "Local Depot",
    status: new StatusRecorder(maxLogBytes),
    savedImages: undefined,
    machineCompression: options.machineCompression,
    log,
  };

  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(CliBuildService, cliBuildService(depot));
      router.service(PushService, pushService(depot));
      router.service(CliProjectsService, cliProjectsService(depot));
      router.service(BuildV1Service, buildV1Service(depot));
      router.service(BuildKitService, buildkitV1Service(depot));
      router.service(ProjectService, projectService(depot));
      router.service(OrganizationService, organizationService(depot, new Date()));
    },
    interceptors: [faults.interceptor],
  });

  // Everything started so far is stopped again if a later part cannot start.
  const stops: (() => Promise<void>)[] = [() => machines.stop()];
  const stopAll = () => Promise.all(stops.map((stop) => stop())).then(() => undefined);
  try {
    const listener = await listen(handler, options.port ?? 0, log);
    stops.push(() => listener.close());
    apiUrl = `http://127.0.0.1:${listener.port}`;
    const front =
      options.savedImageRegistry === false
        ? undefined
        : await startSavedImageFronts({
            registry: options.savedImageRegistry ?? DEFAULT_SAVED_IMAGE_REGISTRY,
            registryAuth: options.savedImageRegistryAuth,
            depotRegistryPort: options.depotRegistryPort,
            onImageSaved: options.onImageSaved,
            authority,
            store,
            organizationToken: token,
            started: (stop) => stops.push(stop),
          });
    if (front) depot.savedImages = front.context;
    const proxy = await startHostsProxy(new Map([[BLOB_HOST, blobService(depot)]]), authority, log);
    stops.push(() => proxy.close());
    log(`local Depot at ${apiUrl} for ${options.buildkit}`);

    let stopping: Promise<void> | undefined;
    const stop = () => (stopping ??= stopAll().then(() => log("local Depot stopped")));
    return {
      apiUrl,
      token,
      organizationId,
      dockerEngine: backend.kind === "docker" ? backend.socketPath : undefined,
      projects: store.projects,
      builds: store.builds,
      faults,
      savedImageRegistry: front?.context.host,
      depotRegistry: front?.depotRegistry,
      httpsProxy: proxy.url,
      caCertificate: authority.cert,
      certificateAuthority: authority,
      addProject: ({ name, regionId = REGIONS[0]!, projectId }) => {
        if (!name.trim()) throw new BuildKitNodeError("INVALID_ARGUMENT", "a project needs a name");
        if (!REGIONS.includes(regionId)) throw new BuildKitNodeError("INVALID_ARGUMENT", `regionId must be one of ${REGIONS.join(", ")}`);
        return store.addProject({ name, regionId, projectId });
      },
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

function checkDepotRegistryPort({ depotRegistryPort: port, savedImageRegistry }: LocalDepotOptions): void {
  if (port === undefined) return;
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `depotRegistryPort must be a port number, got ${port}`);
  }
  if (savedImageRegistry === false) throw new BuildKitNodeError("INVALID_ARGUMENT", "depotRegistryPort needs a saved-image registry (savedImageRegistry is false)");
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) throw new BuildKitNodeError("INVALID_ARGUMENT", `${name} must be a non-negative number, got ${value}`);
  return value;
}
