// startLocalDepot(): the stand-in for Depot's API (the one part no real
// daemon here can provide), driven by raw Connect clients built from our own
// service descriptors, with dockerd's real BuildKit behind its machines.
import * as net from "node:net";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type CallOptions, type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { BuildService as BuildV1Service } from "../src/gen/depot/build/v1/build_pb.js";
import {
  BuilderPlatform,
  BuildService as CliBuildService,
  BuildStatus,
  GetBuildKitConnectionRequestSchema,
  type GetBuildKitConnectionResponse_ActiveConnection,
  GetBuildKitConnectionResponseSchema,
} from "../src/gen/depot/cli/v1/build_pb.js";
import { Hardware, ProjectService } from "../src/gen/depot/core/v1/project_pb.js";
import { connect, TransportError } from "../src/index.js";
import { type LocalDepot, startLocalDepot } from "../src/testing/index.js";
import { assertDaemon, assertDockerd, BUILD_DAEMONS, DOCKER_BUILDKIT } from "./support/daemons.js";

const AMD64 = BuilderPlatform.AMD64;
const ARM64 = BuilderPlatform.ARM64;

const bearer = (token: string): CallOptions => ({ headers: { Authorization: `Bearer ${token}` } });

interface Clients {
  cli: Client<typeof CliBuildService>;
  v1: Client<typeof BuildV1Service>;
  projects: Client<typeof ProjectService>;
}

function clients(transport: Transport): Clients {
  return {
    cli: createClient(CliBuildService, transport),
    v1: createClient(BuildV1Service, transport),
    projects: createClient(ProjectService, transport),
  };
}

/** Every way a client may speak to Depot, all on the same port. */
function transports(apiUrl: string): Record<string, Transport> {
  return {
    "Connect binary over HTTP/1.1": createConnectTransport({ baseUrl: apiUrl, httpVersion: "1.1" }),
    "Connect binary over h2c": createConnectTransport({ baseUrl: apiUrl, httpVersion: "2" }),
    "Connect JSON over HTTP/1.1": createConnectTransport({ baseUrl: apiUrl, httpVersion: "1.1", useBinaryFormat: false }),
    "gRPC over h2c": createGrpcTransport({ baseUrl: apiUrl }),
  };
}

async function expectCode(call: Promise<unknown>, code: Code): Promise<ConnectError> {
  const err = await call.then(
    () => expect.unreachable(`expected ${Code[code]}`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConnectError);
  expect(Code[(err as ConnectError).code]).toBe(Code[code]);
  return err as ConnectError;
}

/** Polls GetBuildKitConnection as Depot's SDK does (without the waits) until a machine is active. */
async function acquire(
  cli: Clients["cli"],
  build: { buildId: string; buildToken: string },
  platform: BuilderPlatform,
): Promise<{ pending: number[]; active: GetBuildKitConnectionResponse_ActiveConnection }> {
  const pending: number[] = [];
  for (let i = 0; i < 20; i++) {
    const { connection } = await cli.getBuildKitConnection({ buildId: build.buildId, platform }, bearer(build.buildToken));
    if (connection.case === "active") return { pending, active: connection.value };
    expect(connection.case).toBe("pending");
    pending.push(connection.value!.waitMs);
  }
  throw new Error("no machine after 20 polls");
}

function machineTls(active: GetBuildKitConnectionResponse_ActiveConnection) {
  return { ca: active.caCert!.cert, cert: active.cert!.cert, key: active.cert!.key, serverName: active.serverName };
}

function resourceCount(type: string): number {
  return process.getActiveResourcesInfo().filter((t) => t === type).length;
}

beforeAll(() => assertDockerd());

describe("one port, every protocol", () => {
  let depot: LocalDepot;
  beforeAll(async () => {
    depot = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, pendingWaitMs: 0 });
    depot.addProject({ name: "seen by every protocol", projectId: "prj_protocols" });
  });
  afterAll(() => depot?.stop());

  it("serves Connect (binary and JSON) over HTTP/1.1 and h2c, and gRPC over h2c", async () => {
    for (const [name, transport] of Object.entries(transports(depot.apiUrl))) {
      const { projects, cli } = clients(transport);
      const listed = await projects.listProjects({}, bearer(depot.token));
      expect(listed.projects.map((p) => p.projectId), name).toEqual(["prj_protocols"]);
      // Errors keep their codes on every protocol too.
      await expectCode(projects.listProjects({}), Code.Unauthenticated);
      const build = await cli.createBuild({ projectId: "prj_protocols" }, bearer(depot.token));
      const { connection } = await cli.getBuildKitConnection({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken));
      expect(connection.case, name).toBe("pending");
    }
  });

  it("writes an empty pending member on the wire (0a 00), which Depot's Go SDK needs to see", async () => {
    const { cli } = clients(createConnectTransport({ baseUrl: depot.apiUrl, httpVersion: "1.1" }));
    const build = await cli.createBuild({ projectId: "prj_protocols" }, bearer(depot.token));
    const response = await fetch(`${depot.apiUrl}/depot.cli.v1.BuildService/GetBuildKitConnection`, {
      method: "POST",
      headers: { "Content-Type": "application/proto", "Connect-Protocol-Version": "1", Authorization: `Bearer ${build.buildToken}` },
      body: toBinary(GetBuildKitConnectionRequestSchema, { $typeName: "depot.cli.v1.GetBuildKitConnectionRequest", buildId: build.buildId, platform: ARM64 }),
    });
    expect(response.status).toBe(200);
    const bytes = new Uint8Array(await response.arrayBuffer());
    expect(Buffer.from(bytes).toString("hex")).toBe("0a00");
    expect(fromBinary(GetBuildKitConnectionResponseSchema, bytes).connection.case).toBe("pending");
  });

  it("answers plain JSON requests, with Depot's field names", async () => {
    const post = (method: string, body: unknown, token = depot.token) =>
      fetch(`${depot.apiUrl}/${method}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
    const created = await post("depot.cli.v1.BuildService/CreateBuild", { projectId: "prj_protocols" });
    expect(created.status).toBe(200);
    const build = (await created.json()) as { buildId: string; buildToken: string; buildUrl: string; projectId: string };
    expect(build).toMatchObject({ projectId: "prj_protocols", buildId: expect.any(String), buildToken: expect.any(String) });
    expect(build.buildUrl).toContain(build.buildId);
    const polled = await post("depot.cli.v1.BuildService/GetBuildKitConnection", { buildId: build.buildId, platform: "BUILDER_PLATFORM_AMD64" }, build.buildToken);
    expect(await polled.json()).toEqual({ pending: {} });
    const refused = await post("depot.core.v1.ProjectService/GetProject", { projectId: "prj_nope" });
    expect(refused.status).toBe(404);
    expect(await refused.json()).toMatchObject({ code: "not_found" });
  });
});

describe("tokens", () => {
  let depot: LocalDepot;
  let c: Clients;
  let build: { buildId: string; buildToken: string };
  let other: { buildId: string; buildToken: string };
  beforeAll(async () => {
    depot = await startLocalDepot({ buildkit: DOCKER_BUILDKIT });
    c = clients(createConnectTransport({ baseUrl: depot.apiUrl, httpVersion: "1.1" }));
    depot.addProject({ name: "tokens", projectId: "prj_tokens" });
    build = await c.cli.createBuild({ projectId: "prj_tokens" }, bearer(depot.token));
    other = await c.cli.createBuild({ projectId: "prj_tokens" }, bearer(depot.token));
  });
  afterAll(() => depot?.stop());

  it("defaults to a random org- token and the org-local organization", () => {
    expect(depot.token).toMatch(/^org-.{16,}/);
    expect(depot.organizationId).toBe("org-local");
    expect(depot.builds.get(build.buildId)?.token).toBe(build.buildToken);
  });

  it("refuses a call without a token, or with one it does not know, as unauthenticated", async () => {
    await expectCode(c.projects.listProjects({}), Code.Unauthenticated);
    await expectCode(c.cli.createBuild({ projectId: "prj_tokens" }, bearer("garbage")), Code.Unauthenticated);
    await expectCode(c.cli.createBuild({ projectId: "prj_tokens" }, { headers: { Authorization: depot.token } }), Code.Unauthenticated);
    await expectCode(c.cli.reportBuildHealth({ buildId: build.buildId, platform: AMD64 }, bearer("garbage")), Code.Unauthenticated);
  });

  it("refuses a build token where the organization token is needed", async () => {
    await expectCode(c.projects.listProjects({}, bearer(build.buildToken)), Code.PermissionDenied);
    await expectCode(c.projects.createProject({ name: "x", regionId: "us-east-1" }, bearer(build.buildToken)), Code.PermissionDenied);
    await expectCode(c.cli.createBuild({ projectId: "prj_tokens" }, bearer(build.buildToken)), Code.PermissionDenied);
    await expectCode(c.v1.createBuild({ projectId: "prj_tokens" }, bearer(build.buildToken)), Code.PermissionDenied);
    await expectCode(c.cli.listBuilds({ projectId: "prj_tokens" }, bearer(build.buildToken)), Code.PermissionDenied);
  });

  it("takes only the build's own token for that build's calls", async () => {
    const health = { buildId: build.buildId, platform: AMD64 };
    await expectCode(c.cli.reportBuildHealth(health, bearer(depot.token)), Code.PermissionDenied);
    await expectCode(c.cli.reportBuildHealth(health, bearer(other.buildToken)), Code.PermissionDenied);
    await expectCode(c.cli.getBuildKitConnection(health, bearer(other.buildToken)), Code.PermissionDenied);
    await expectCode(c.cli.finishBuild({ buildId: build.buildId, result: { case: "success", value: {} } }, bearer(depot.token)), Code.PermissionDenied);
    await c.cli.reportBuildHealth(health, bearer(build.buildToken));
    expect(depot.builds.get(build.buildId)!.finishCalls).toBe(0);
  });

  it("lets depot.build.v1 FinishBuild use the organization token or the build's own", async () => {
    const first = await c.v1.createBuild({ projectId: "prj_tokens" }, bearer(depot.token));
    const second = await c.v1.createBuild({ projectId: "prj_tokens" }, bearer(depot.token));
    await c.v1.finishBuild({ buildId: first.buildId, result: { case: "success", value: {} } }, bearer(depot.token));
    await expectCode(c.v1.finishBuild({ buildId: second.buildId, result: { case: "success", value: {} } }, bearer(first.buildToken)), Code.PermissionDenied);
    await c.v1.finishBuild({ buildId: second.buildId, result: { case: "error", value: { error: "boom" } } }, bearer(second.buildToken));
    expect(depot.builds.get(first.buildId)).toMatchObject({ status: "success", options: [] });
    expect(depot.builds.get(second.buildId)?.finish).toMatchObject({ result: "error", error: "boom" });
  });

  it("answers not_found for an unknown build or project, whatever the token", async () => {
    await expectCode(c.cli.getBuildKitConnection({ buildId: "nope", platform: AMD64 }, bearer(build.buildToken)), Code.NotFound);
    await expectCode(c.cli.finishBuild({ buildId: "nope", result: { case: "canceled", value: {} } }, bearer(build.buildToken)), Code.NotFound);
    await expectCode(c.cli.createBuild({ projectId: "prj_nope" }, bearer(depot.token)), Code.NotFound);
    await expectCode(c.v1.createBuild({ projectId: "prj_nope" }, bearer(depot.token)), Code.NotFound);
    await expectCode(c.cli.listBuilds({ projectId: "prj_nope" }, bearer(depot.token)), Code.NotFound);
  });

  it("never puts a token in an error message or a log line", async () => {
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    const previous = process.env.DEBUG;
    process.env.DEBUG = "buildkit-node:local-depot";
    try {
      // The logger is chosen when the depot starts.
      await using logged = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, token: "org-secret-token-1234" });
      const l = clients(createConnectTransport({ baseUrl: logged.apiUrl, httpVersion: "1.1" }));
      logged.addProject({ name: "logged", projectId: "prj_logged" });
      const b = await l.cli.createBuild({ projectId: "prj_logged" }, bearer(logged.token));
      const errors = await Promise.all([
        expectCode(l.projects.listProjects({}, bearer("org-secret-token-12345")), Code.Unauthenticated),
        expectCode(l.projects.listProjects({}, bearer(b.buildToken)), Code.PermissionDenied),
        expectCode(l.cli.reportBuildHealth({ buildId: b.buildId, platform: AMD64 }, bearer(logged.token)), Code.PermissionDenied),
      ]);
      await l.cli.finishBuild({ buildId: b.buildId, result: { case: "success", value: {} } }, bearer(b.buildToken));
      const text = [...written, ...errors.map((e) => e.message)].join("\n");
      expect(written.join("")).toContain(b.buildId); // logging was on
      for (const secret of [logged.token, "org-secret-token-12345", b.buildToken]) expect(text).not.toContain(secret);
    } finally {
      spy.mockRestore();
      if (previous === undefined) delete process.env.DEBUG;
      else process.env.DEBUG = previous;
    }
  });
});

describe("projects", () => {
  let depot: LocalDepot;
  let projects: Clients["projects"];
  const org = () => bearer(depot.token);
  beforeAll(async () => {
    depot = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, organizationId: "org-acme" });
    projects = clients(createConnectTransport({ baseUrl: depot.apiUrl, httpVersion: "2" })).projects;
  });
  afterAll(() => depot?.stop());

  it("creates a project with Depot's defaults", async () => {
    const before = Date.now();
    const { project } = await projects.createProject({ name: "web", regionId: "us-east-1" }, org());
    expect(project).toMatchObject({ name: "web", regionId: "us-east-1", organizationId: "org-acme", hardware: Hardware.HARDWARE_16X32 });
    expect(project!.projectId).toMatch(/^prj_[a-z0-9]+$/);
    expect(project!.cachePolicy).toMatchObject({ keepGb: 50, keepDays: 14 });
    expect(timestampDate(project!.createdAt!).getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(depot.projects.get(project!.projectId)).toMatchObject({ name: "web", hardware: "HARDWARE_16X32", cachePolicy: { keepGb: 50, keepDays: 14 } });
  });

  it("keeps the hardware and cache policy sent, and reads the deprecated keep_bytes", async () => {
    const { project } = await projects.createProject(
      { name: "big", regionId: "eu-central-1", hardware: Hardware.HARDWARE_8X16, cachePolicy: { keepGb: 120, keepDays: 7 } },
      org(),
    );
    expect(project).toMatchObject({ hardware: Hardware.HARDWARE_8X16, cachePolicy: { keepGb: 120, keepDays: 7 } });
    const old = await projects.createProject({ name: "old client", regionId: "us-east-1", cachePolicy: { keepBytes: 20n * 1024n ** 3n, keepDays: 30 } }, org());
    expect(old.project!.cachePolicy).toMatchObject({ keepGb: 20, keepDays: 30, keepBytes: 20n * 1024n ** 3n });
  });

  it("refuses a project without a name, in an unknown region, or for another organization", async () => {
    await expectCode(projects.createProject({ name: "", regionId: "us-east-1" }, org()), Code.InvalidArgument);
    await expectCode(projects.createProject({ name: "x", regionId: "" }, org()), Code.InvalidArgument);
    await expectCode(projects.createProject({ name: "x", regionId: "mars-1" }, org()), Code.InvalidArgument);
    await expectCode(projects.createProject({ name: "x", regionId: "us-east-1", organizationId: "org-other" }, org()), Code.PermissionDenied);
    const ok = await projects.createProject({ name: "x", regionId: "us-east-1", organizationId: "org-acme" }, org());
    expect(ok.project!.organizationId).toBe("org-acme");
  });

  it("gets, updates, resets and deletes a project, and 404s an unknown one", async () => {
    const { project } = await projects.createProject({ name: "crud", regionId: "us-east-1" }, org());
    const projectId = project!.projectId;
    expect((await projects.getProject({ projectId }, org())).project).toEqual(project);

    const updated = await projects.updateProject({ projectId, name: "crud-2", hardware: Hardware.HARDWARE_32X64 }, org());
    expect(updated.project).toMatchObject({ projectId, name: "crud-2", regionId: "us-east-1", hardware: Hardware.HARDWARE_32X64 });
    await expectCode(projects.updateProject({ projectId, name: "crud-3", regionId: "mars-1" }, org()), Code.InvalidArgument);
    expect(depot.projects.get(projectId)?.name).toBe("crud-2"); // a refused update changes nothing

    await projects.resetProject({ projectId }, org());
    await projects.deleteProject({ projectId }, org());
    expect(depot.projects.has(projectId)).toBe(false);
    for (const call of [
      projects.getProject({ projectId }, org()),
      projects.updateProject({ projectId, name: "ghost" }, org()),
      projects.deleteProject({ projectId }, org()),
      projects.resetProject({ projectId }, org()),
    ]) {
      await expectCode(call, Code.NotFound);
    }
  });

  it("pages through 35 projects in a stable order, and filters by region", async () => {
    await using paged = await startLocalDepot({ buildkit: DOCKER_BUILDKIT });
    const p = clients(createConnectTransport({ baseUrl: paged.apiUrl, httpVersion: "1.1" })).projects;
    const created: string[] = [];
    for (let i = 0; i < 35; i++) {
      const { project } = await p.createProject({ name: `p${i}`, regionId: i % 5 === 0 ? "eu-central-1" : "us-east-1" }, bearer(paged.token));
      created.push(project!.projectId);
    }
    const seen: string[] = [];
    const sizes: number[] = [];
    let pageToken: string | undefined;
    do {
      const page = await p.listProjects({ pageSize: 10, ...(pageToken ? { pageToken } : {}) }, bearer(paged.token));
      sizes.push(page.projects.length);
      seen.push(...page.projects.map((x) => x.projectId));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(sizes).toEqual([10, 10, 10, 5]);
    expect(seen).toEqual(created);

    const firstPage = await p.listProjects({}, bearer(paged.token));
    expect(firstPage.projects).toHaveLength(30); // the default page size
    expect(firstPage.nextPageToken).toBeTruthy();

    const eu = await p.listProjects({ regionId: "eu-central-1" }, bearer(paged.token));
    expect(eu.projects.map((x) => x.projectId)).toEqual(created.filter((_, i) => i % 5 === 0));
    expect(eu.nextPageToken).toBeUndefined();

    // Deleting the last project of a page does not shift the next one.
    const page1 = await p.listProjects({ pageSize: 10 }, bearer(paged.token));
    await p.deleteProject({ projectId: created[9]! }, bearer(paged.token));
    const page2 = await p.listProjects({ pageSize: 10, pageToken: page1.nextPageToken! }, bearer(paged.token));
    expect(page2.projects[0]!.projectId).toBe(created[10]);

    await expectCode(p.listProjects({ pageToken: "not-a-cursor" }, bearer(paged.token)), Code.InvalidArgument);
    for (let i = 0; i < 80; i++) paged.addProject({ name: `bulk${i}` });
    const capped = await p.listProjects({ pageSize: 1000 }, bearer(paged.token));
    expect(capped.projects).toHaveLength(100);
    expect(capped.nextPageToken).toBeTruthy();
  });
});

describe.each(BUILD_DAEMONS)("on %s: a machine in front of it", (daemon) => {
  let depot: LocalDepot;
  let c: Clients;
  const org = () => bearer(depot.token);
  beforeAll(async () => {
    assertDaemon(daemon);
    depot = await startLocalDepot({ ...daemon.backend, savedImageRegistry: false });
    c = clients(createConnectTransport({ baseUrl: depot.apiUrl, httpVersion: "2" }));
    depot.addProject({ name: "builds", projectId: "prj_builds" });
  });
  afterAll(() => depot?.stop());

  it(`on ${daemon.name}: registers a build, answers pending twice, then hands out that BuildKit behind mutual TLS`, async () => {
    const build = await c.cli.createBuild(
      { projectId: "prj_builds", options: [{ tags: ["127.0.0.1:5000/app:1"], push: true, load: false }] },
      org(),
    );
    expect(build.projectId).toBe("prj_builds");
    expect(build.buildUrl).toBe(`${depot.apiUrl}/orgs/org-local/projects/prj_builds/builds/${build.buildId}`);
    const record = depot.builds.get(build.buildId)!;
    expect(record).toMatchObject({ projectId: "prj_builds", status: "running", options: [{ tags: ["127.0.0.1:5000/app:1"], push: true, load: false }] });

    const { pending, active } = await acquire(c.cli, build, AMD64);
    expect(pending).toEqual([100, 100]);
    expect(record.connectionPolls.map((p) => `${p.platform}:${p.answer}`)).toEqual(["amd64:pending", "amd64:pending", "amd64:active"]);
    expect(active.endpoint).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(active.serverName).toBe(`amd64.${build.buildId}.machines.local-depot.test`);
    expect(active.caCert!.cert).toContain("BEGIN CERTIFICATE");
    expect(active.cert!.key).toContain("PRIVATE KEY");
    expect(record.machines).toMatchObject([{ platform: "amd64", endpoint: active.endpoint, serverName: active.serverName }]);

    {
      await using bk = await connect(active.endpoint, { tls: machineTls(active) });
      expect((await bk.listWorkers()).length).toBeGreaterThan(0);
    }
    const wrongName = await connect(active.endpoint, { tls: { ...machineTls(active), serverName: "arm64.other.machines.local-depot.test" } }).then(
      () => expect.unreachable("a wrong server name was accepted"),
      (e: unknown) => e,
    );
    expect(wrongName).toBeInstanceOf(TransportError);
    expect((wrongName as TransportError).code).toBe("TLS");

    // Later polls find the same machine.
    const again = await c.cli.getBuildKitConnection({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken));
    expect(again.connection.case === "active" && again.connection.value.endpoint).toBe(active.endpoint);
    expect(record.machines).toHaveLength(1);

    await c.cli.reportBuildHealth({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken));
    expect(record.healthReports.map((h) => h.platform)).toEqual(["amd64"]);

    await c.cli.finishBuild({ buildId: build.buildId, result: { case: "success", value: {} } }, bearer(build.buildToken));
    expect(record).toMatchObject({ status: "success", finish: { result: "success" }, finishCalls: 1 });
    expect(record.machines[0]).toMatchObject({ stopReason: "finished", stoppedAt: expect.any(Date) });
    const gone = await connect(active.endpoint, { tls: machineTls(active), connectTimeoutMs: 5_000 }).then(
      () => expect.unreachable("the machine still answers after FinishBuild"),
      (e: unknown) => e,
    );
    expect((gone as TransportError).code).toBe("UNAVAILABLE");

    await expectCode(c.cli.finishBuild({ buildId: build.buildId, result: { case: "error", value: { error: "late" } } }, bearer(build.buildToken)), Code.FailedPrecondition);
    expect(record).toMatchObject({ status: "success", finishCalls: 2 });
    await expectCode(c.cli.getBuildKitConnection({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken)), Code.FailedPrecondition);
  });
});

describe("builds and machines", () => {
  let depot: LocalDepot;
  let c: Clients;
  const org = () => bearer(depot.token);
  const newBuild = () => c.cli.createBuild({ projectId: "prj_builds" }, org());
  beforeAll(async () => {
    depot = await startLocalDepot({ buildkit: DOCKER_BUILDKIT });
    c = clients(createConnectTransport({ baseUrl: depot.apiUrl, httpVersion: "2" }));
    depot.addProject({ name: "builds", projectId: "prj_builds" });
  });
  afterEach(() => {
    depot.faults.stayPending = false;
    depot.faults.cancelsAt = undefined;
  });
  afterAll(() => depot?.stop());

  it("gives each platform its own machine, and concurrent polls one machine between them", async () => {
    const build = await newBuild();
    const token = bearer(build.buildToken);
    for (let i = 0; i < 2; i++) await c.cli.getBuildKitConnection({ buildId: build.buildId, platform: ARM64 }, token);
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => c.cli.getBuildKitConnection({ buildId: build.buildId, platform: ARM64 }, token)),
    );
    const endpoints = new Set(answers.map((a) => (a.connection.case === "active" ? a.connection.value.endpoint : a.connection.case)));
    expect(endpoints.size).toBe(1);
    const { active: amd } = await acquire(c.cli, build, AMD64);
    expect(endpoints.has(amd.endpoint)).toBe(false);
    expect(amd.serverName.startsWith("amd64.")).toBe(true);
    const record = depot.builds.get(build.buildId)!;
    expect(record.machines.map((m) => m.platform)).toEqual(["arm64", "amd64"]);
    await c.cli.finishBuild({ buildId: build.buildId, result: { case: "canceled", value: {} } }, token);
    expect(record.status).toBe("canceled");
    expect(record.machines.map((m) => m.stopReason)).toEqual(["finished", "finished"]);
  });

  it("refuses a platform other than amd64 or arm64", async () => {
    const build = await newBuild();
    await expectCode(
      c.cli.getBuildKitConnection({ buildId: build.buildId, platform: BuilderPlatform.UNSPECIFIED }, bearer(build.buildToken)),
      Code.InvalidArgument,
    );
    await expectCode(c.cli.reportBuildHealth({ buildId: build.buildId, platform: 7 as BuilderPlatform }, bearer(build.buildToken)), Code.InvalidArgument);
  });

  it("lists a project's builds newest first, with their status and times", async () => {
    depot.addProject({ name: "history", projectId: "prj_history" });
    const make = () => c.cli.createBuild({ projectId: "prj_history" }, org());
    const failed = await make();
    const canceled = await make();
    const running = await make();
    await c.cli.finishBuild({ buildId: failed.buildId, result: { case: "error", value: { error: "exit 1" } } }, bearer(failed.buildToken));
    await c.cli.finishBuild({ buildId: canceled.buildId, result: { case: "canceled", value: {} } }, bearer(canceled.buildToken));
    const { builds, nextPageToken } = await c.cli.listBuilds({ projectId: "prj_history" }, org());
    expect(builds.map((b) => [b.id, b.status])).toEqual([
      [running.buildId, BuildStatus.RUNNING],
      [canceled.buildId, BuildStatus.CANCELED],
      [failed.buildId, BuildStatus.FAILED],
    ]);
    expect(builds[0]!.finishedAt).toBeUndefined();
    expect(timestampDate(builds[2]!.finishedAt!)).toEqual(depot.builds.get(failed.buildId)!.finish!.at);
    expect(builds.every((b) => b.createdAt)).toBe(true);
    expect(nextPageToken).toBe("");
    const first = await c.cli.listBuilds({ projectId: "prj_history", pageSize: 2 }, org());
    const rest = await c.cli.listBuilds({ projectId: "prj_history", pageSize: 2, pageToken: first.nextPageToken }, org());
    expect([...first.builds, ...rest.builds].map((b) => b.id)).toEqual(builds.map((b) => b.id));
    expect(rest.nextPageToken).toBe("");
  });

  it("requires a result in FinishBuild", async () => {
    const build = await newBuild();
    await expectCode(c.cli.finishBuild({ buildId: build.buildId }, bearer(build.buildToken)), Code.InvalidArgument);
    expect(depot.builds.get(build.buildId)!.status).toBe("running");
  });

  describe("faults", () => {
    it("fails the next calls of a method with the code asked for", async () => {
      depot.faults.failNext("CreateBuild", 2);
      await expectCode(newBuild(), Code.Unavailable);
      await expectCode(c.v1.createBuild({ projectId: "prj_builds" }, org()), Code.Unavailable); // a bare name covers both services
      await newBuild();

      depot.faults.failNext("ListProjects", 1, "internal");
      await expectCode(c.projects.listProjects({}, org()), Code.Internal);
      await c.projects.listProjects({}, org());

      depot.faults.failNext("depot.build.v1.BuildService/CreateBuild", 1, "permission_denied");
      await newBuild(); // cli.v1 is not concerned
      await expectCode(c.v1.createBuild({ projectId: "prj_builds" }, org()), Code.PermissionDenied);

      const build = await newBuild();
      depot.faults.failNext("GetBuildKitConnection", 1, "not_found");
      depot.faults.failNext("ReportBuildHealth", 1, "unauthenticated");
      await expectCode(c.cli.getBuildKitConnection({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken)), Code.NotFound);
      await expectCode(c.cli.reportBuildHealth({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken)), Code.Unauthenticated);
      // A failed call leaves no trace in the records.
      expect(depot.builds.get(build.buildId)).toMatchObject({ connectionPolls: [], healthReports: [] });

      expect(() => depot.faults.failNext("CreateBiuld", 1)).toThrow(/no method CreateBiuld/);
    });

    it("keeps answering pending while stayPending is set", async () => {
      const build = await newBuild();
      depot.faults.stayPending = true;
      for (let i = 0; i < 5; i++) {
        const { connection } = await c.cli.getBuildKitConnection({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken));
        expect(connection.case).toBe("pending");
      }
      depot.faults.stayPending = false;
      const { pending } = await acquire(c.cli, build, AMD64);
      expect(pending).toEqual([]); // its pending answers were already given
      await c.cli.finishBuild({ buildId: build.buildId, result: { case: "success", value: {} } }, bearer(build.buildToken));
    });

    it("answers health reports with cancels_at, and takes the machines of a build past it", async () => {
      const build = await newBuild();
      const token = bearer(build.buildToken);
      const health = { buildId: build.buildId, platform: AMD64 };
      const { active } = await acquire(c.cli, build, AMD64);
      expect((await c.cli.reportBuildHealth(health, token)).cancelsAt).toBeUndefined();

      const later = new Date(Date.now() + 3_600_000);
      depot.faults.cancelsAt = later;
      expect(timestampDate((await c.cli.reportBuildHealth(health, token)).cancelsAt!)).toEqual(later);
      const stillThere = await c.cli.getBuildKitConnection(health, token);
      expect(stillThere.connection.case === "active" && stillThere.connection.value.endpoint).toBe(active.endpoint);

      depot.faults.cancelsAt = new Date(Date.now() - 1_000);
      expect(timestampDate((await c.cli.reportBuildHealth(health, token)).cancelsAt!).getTime()).toBeLessThan(Date.now());
      await expectCode(c.cli.getBuildKitConnection(health, token), Code.FailedPrecondition);
      const record = depot.builds.get(build.buildId)!;
      await vi.waitFor(() => expect(record.machines[0]!.stopReason).toBe("canceled"), { timeout: 5_000, interval: 100 });
      await c.cli.finishBuild({ buildId: build.buildId, result: { case: "canceled", value: {} } }, token);
      expect(record.status).toBe("canceled");
    });
  });
});

describe("idle machines", () => {
  it("reclaims a machine without health reports for the idle time, and keeps one that reports (injected clock)", async () => {
    let now = Date.parse("2030-01-01T00:00:00Z");
    const clock = { now: () => now };
    await using depot = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, pendingPolls: 0, machineIdleTimeoutMs: 60_000, clock });
    depot.addProject({ name: "idle", projectId: "prj_idle" });
    const { cli } = clients(createConnectTransport({ baseUrl: depot.apiUrl, httpVersion: "1.1" }));
    const build = await cli.createBuild({ projectId: "prj_idle" }, bearer(depot.token));
    const record = depot.builds.get(build.buildId)!;
    const { active: quiet } = await acquire(cli, build, AMD64);
    const { pending } = await acquire(cli, build, ARM64);
    expect(pending).toEqual([]); // pendingPolls: 0

    // 60 s exactly is not yet idle; arm64 reports, amd64 does not.
    now += 60_000;
    await cli.reportBuildHealth({ buildId: build.buildId, platform: ARM64 }, bearer(build.buildToken));
    await new Promise((resolve) => setTimeout(resolve, 100)); // several reaper rounds
    expect(record.machines.map((m) => m.stopReason)).toEqual([undefined, undefined]);

    now += 1;
    await vi.waitFor(() => expect(record.machines.map((m) => [m.platform, m.stopReason])).toEqual([
      ["amd64", "idle"],
      ["arm64", undefined],
    ]));
    const refused = await connect(quiet.endpoint, { tls: machineTls(quiet), connectTimeoutMs: 5_000 }).catch((e: unknown) => e);
    expect((refused as TransportError).code).toBe("UNAVAILABLE");

    now += 60_000; // arm64's last report is now 60 s and 1 ms old
    await vi.waitFor(() => expect(record.machines[1]!.stopReason).toBe("idle"));

    // A new poll starts a new machine.
    const { active: fresh } = await acquire(cli, build, AMD64);
    expect(fresh.endpoint).not.toBe(quiet.endpoint);
    expect(record.machines).toHaveLength(3);
  });
});

describe("stop()", () => {
  it("closes the port, its connections and every machine, and leaves no server or timer behind", async () => {
    // Closed servers leave the list a moment after their close callback; every
    // depot of the tests above was stopped, so nothing listens once they are gone.
    await vi.waitFor(() => expect(resourceCount("TCPServerWrap")).toBe(0));
    const servers = 0;
    const timers = resourceCount("Timeout");
    const depot = await startLocalDepot({ buildkit: DOCKER_BUILDKIT });
    depot.addProject({ name: "stop", projectId: "prj_stop" });
    let build: { buildId: string; buildToken: string } | undefined;
    for (const transport of Object.values(transports(depot.apiUrl))) {
      const { cli } = clients(transport);
      build ??= await cli.createBuild({ projectId: "prj_stop" }, bearer(depot.token));
      await cli.getBuildKitConnection({ buildId: build.buildId, platform: AMD64 }, bearer(build.buildToken));
    }
    const { cli } = clients(createConnectTransport({ baseUrl: depot.apiUrl, httpVersion: "2" }));
    const { active } = await acquire(cli, build!, AMD64);
    {
      await using bk = await connect(active.endpoint, { tls: machineTls(active) });
      await bk.listWorkers();
    }
    // The API, the saved-image registry's front, the HTTPS proxy and the machine's front.
    expect(resourceCount("TCPServerWrap")).toBe(4);

    await depot.stop();
    await depot.stop(); // idempotent
    expect(depot.builds.get(build!.buildId)!.machines[0]).toMatchObject({ stopReason: "stopped" });
    const port = Number(new URL(depot.apiUrl).port);
    const refused = await new Promise<unknown>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => resolve(socket.destroy()));
      socket.on("error", resolve);
    });
    expect(refused).toMatchObject({ code: "ECONNREFUSED" });
    await vi.waitFor(() => {
      expect(resourceCount("TCPServerWrap")).toBe(servers);
      expect(resourceCount("Timeout")).toBeLessThanOrEqual(timers);
    });
  });
});
