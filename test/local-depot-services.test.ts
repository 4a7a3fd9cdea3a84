// The local Depot's newer services through raw Connect clients built from
// our own descriptors: what Depot's CLI reports about a build (status,
// timings), GetBuild, the saved-image registry and its tokens, compression,
// keep_bytes, cancels_at on an injected clock. The BuildKit status batches
// here are written by the test (the one real part that sends BuildKit's own
// status to Depot, the library's reporter, lives on another branch); the
// registry behind the saved-image front is the real one.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type CallOptions, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BuildService as BuildV1Service, GetBuildStepsResponse_BuildStep_CacheState as CacheState } from "../src/gen/depot/build/v1/build_pb.js";
import { BuilderPlatform, BuildService as CliBuildService, Command } from "../src/gen/depot/cli/v1/build_pb.js";
import { ProjectService } from "../src/gen/depot/core/v1/project_pb.js";
import { type StatusResponse, StatusResponseSchema } from "../src/gen/moby/buildkit/v1/control_pb.js";
import { type LocalDepot, startLocalDepot } from "../src/testing/index.js";
import { assertDockerd, DOCKER_BUILDKIT } from "./support/daemons.js";
import { PLAIN_REGISTRY } from "./support/registry.js";

const bearer = (token: string): CallOptions => ({ headers: { Authorization: `Bearer ${token}` } });
const basic = (token: string) => ({ Authorization: `Basic ${Buffer.from(`x-token:${token}`).toString("base64")}` });

let local: LocalDepot;
let projectId: string;
const transport = () => createConnectTransport({ baseUrl: local.apiUrl, httpVersion: "2" });
const cli = () => createClient(CliBuildService, transport());
const v1 = () => createClient(BuildV1Service, transport());

beforeAll(async () => {
  assertDockerd();
  local = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, maxLogBytesPerBuild: 64 });
  projectId = local.addProject({ name: "services" }).projectId;
});

afterAll(async () => {
  await local?.stop();
});

async function newBuild(options: Parameters<ReturnType<typeof cli>["createBuild"]>[0]["options"] = []) {
  return cli().createBuild({ projectId, options }, bearer(local.token));
}

async function codeOf(call: Promise<unknown>): Promise<string> {
  const err = await call.then(
    () => expect.unreachable("it succeeded"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConnectError);
  return Code[(err as ConnectError).code];
}

function status(parts: MessageInitShape<typeof StatusResponseSchema>): StatusResponse {
  return create(StatusResponseSchema, parts);
}

describe("GetBuild", () => {
  it("answers a build's project and URL to its token or the organization's, and not_found otherwise", async () => {
    const build = await newBuild();
    const got = await cli().getBuild({ buildId: build.buildId }, bearer(build.buildToken));
    expect(got).toMatchObject({ buildId: build.buildId, projectId, buildUrl: build.buildUrl });
    expect((await cli().getBuild({ buildId: build.buildId }, bearer(local.token))).projectId).toBe(projectId);
    expect(await codeOf(cli().getBuild({ buildId: "nope" }, bearer(local.token)))).toBe("NotFound");
    const other = await newBuild();
    expect(await codeOf(cli().getBuild({ buildId: build.buildId }, bearer(other.buildToken)))).toBe("PermissionDenied");
  });
});

describe("status reports", () => {
  const started = new Date("2030-01-01T00:00:00Z");
  const vertex = "sha256:" + "a".repeat(64);
  const other = "sha256:" + "b".repeat(64);

  it("folds ReportStatusStream batches into steps and logs, which GetBuildSteps and GetBuildStepLogs page through", async () => {
    const build = await newBuild();
    const batches = [
      [status({ vertexes: [{ digest: vertex, name: "[1/2] RUN make", started: timestampFromDate(started) }] })],
      [
        status({
          logs: [
            { vertex, msg: new TextEncoder().encode("line 1\n"), stream: 1n, timestamp: timestampFromDate(started) },
            { vertex, msg: new TextEncoder().encode("line 2\n"), stream: 2n, timestamp: timestampFromDate(started) },
          ],
        }),
        status({
          vertexes: [
            { digest: vertex, name: "[1/2] RUN make", started: timestampFromDate(started), completed: timestampFromDate(new Date(started.getTime() + 1500)) },
            { digest: other, name: "[2/2] COPY . /", cached: true },
          ],
        }),
      ],
    ];
    async function* requests() {
      for (const statuses of batches) yield { buildId: build.buildId, statuses };
    }
    await cli().reportStatusStream(requests(), bearer(build.buildToken));
    const record = local.builds.get(build.buildId)!;
    expect(record.statusReports).toMatchObject({ streamsOpened: 1, streamsCompleted: 1, requests: 2, statuses: 3 });
    expect(record.steps.map((s) => [s.name, s.cached, s.logs.map((l) => l.message)])).toEqual([
      ["[1/2] RUN make", false, ["line 1\n", "line 2\n"]],
      ["[2/2] COPY . /", true, []],
    ]);

    const first = await v1().getBuildSteps({ projectId, buildId: build.buildId, pageSize: 1 }, bearer(local.token));
    expect(first.buildSteps.map((s) => [s.name, s.digest, s.cacheState, s.hasLogs])).toEqual([["[1/2] RUN make", vertex, CacheState.UNCACHED, true]]);
    expect(timestampDate(first.buildSteps[0]!.completedAt!).getTime() - timestampDate(first.buildSteps[0]!.startedAt!).getTime()).toBe(1500);
    const second = await v1().getBuildSteps({ projectId, buildId: build.buildId, pageSize: 1, pageToken: first.nextPageToken! }, bearer(local.token));
    expect(second.buildSteps.map((s) => [s.name, s.cacheState])).toEqual([["[2/2] COPY . /", CacheState.CACHED]]);
    expect(second.nextPageToken).toBeUndefined();

    const logs = await v1().getBuildStepLogs({ projectId, buildId: build.buildId, buildStepDigest: vertex, pageSize: 1 }, bearer(local.token));
    expect(logs.logs.map((l) => l.message)).toEqual(["line 1\n"]);
    const rest = await v1().getBuildStepLogs(
      { projectId, buildId: build.buildId, buildStepDigest: vertex, pageToken: logs.nextPageToken! },
      bearer(local.token),
    );
    expect(rest.logs.map((l) => l.message)).toEqual(["line 2\n"]);
    expect(await codeOf(v1().getBuildStepLogs({ projectId, buildId: build.buildId, buildStepDigest: "sha256:none" }, bearer(local.token)))).toBe("NotFound");
    expect(await codeOf(v1().getBuildSteps({ projectId: "prj_other", buildId: build.buildId }, bearer(local.token)))).toBe("NotFound");
  });

  it("keeps what arrived when the stream breaks off, and bounds the logs kept per build", async () => {
    const build = await newBuild();
    const controller = new AbortController();
    const big = new Uint8Array(40).fill(65);
    const record = local.builds.get(build.buildId)!;
    async function* requests() {
      yield { buildId: build.buildId, statuses: [status({ logs: [{ vertex, msg: big }, { vertex, msg: big }] })] };
      await vi.waitFor(() => expect(record.statusReports.requests).toBe(1));
      controller.abort(); // the client goes away mid-stream
      await new Promise(() => {});
    }
    const call = cli().reportStatusStream(requests(), { ...bearer(build.buildToken), signal: controller.signal });
    expect(await codeOf(call)).toBe("Canceled");
    expect(record.statusReports).toMatchObject({ streamsOpened: 1, streamsCompleted: 0, droppedLogBytes: 40 });
    expect(record.steps[0]!.logs).toHaveLength(1); // 64 bytes kept at most: the second 40 did not fit
  });

  it("takes the unary ReportStatus, ReportTimings and ReportBuildContext as the CLI sends them", async () => {
    const build = await newBuild();
    await cli().reportStatus({ buildId: build.buildId, statuses: [status({ vertexes: [{ digest: other, name: "load" }] })] }, bearer(build.buildToken));
    await cli().reportTimings(
      { buildId: build.buildId, buildSteps: [{ name: "load", startTime: timestampFromDate(started), durationMs: 42, cached: true, stableDigest: "x" }] },
      bearer(build.buildToken),
    );
    await cli().reportBuildContext({ buildId: build.buildId, dockerfiles: [{ target: "app", filename: "Dockerfile", contents: "FROM x\n" }] }, bearer(build.buildToken));
    const record = local.builds.get(build.buildId)!;
    expect(record.steps.map((s) => s.name)).toEqual(["load"]);
    expect(record.timings).toEqual([{ name: "load", startTime: started, durationMs: 42, cached: true, stableDigest: "x" }]);
    expect(record.dockerfiles).toEqual([{ target: "app", filename: "Dockerfile", contents: "FROM x\n" }]);
    expect(await codeOf(cli().reportTimings({ buildId: build.buildId, buildSteps: [] }, bearer(local.token)))).toBe("PermissionDenied");
  });
});

describe("the saved-image registry", () => {
  it("answers CreateBuild with save with the names and the x-token credentials to push to", async () => {
    const build = await newBuild([{ command: Command.BUILD, save: true, saveTags: ["keep", ""] }]);
    const host = local.savedImageRegistry!;
    expect(build.additionalTags.map((t) => [t.tag, t.push])).toEqual([
      [`${host}/${projectId}:${build.buildId}`, true],
      [`${host}/${projectId}:keep`, true],
    ]);
    expect(build.additionalCredentials.map((c) => [c.host, Buffer.from(c.token, "base64").toString()])).toEqual([[host, `x-token:${build.buildToken}`]]);
    const plain = await newBuild([{ command: Command.BUILD, push: true }]);
    expect(plain.additionalTags).toEqual([]);
  });

  it("lets a build token write its project's repository only, and pull tokens read", async () => {
    const host = local.savedImageRegistry!;
    const build = await newBuild([{ command: Command.BUILD, save: true }]);
    const upload = (token: string, repository = projectId) =>
      fetch(`http://${host}/v2/${repository}/blobs/uploads/`, { method: "POST", headers: basic(token) });

    const anonymous = await fetch(`http://${host}/v2/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Basic realm=/);
    expect((await fetch(`http://${host}/v2/`, { headers: basic(build.buildToken) })).status).toBe(200);
    expect((await upload(build.buildToken)).status).toBe(202); // reached the real registry
    expect((await upload(build.buildToken, "prj_someone_else")).status).toBe(403);

    const info = await cli().getPullInfo({ buildId: build.buildId }, bearer(build.buildToken));
    expect(info).toMatchObject({ reference: `${host}/${projectId}:${build.buildId}`, username: "x-token", registryHost: host });
    expect(info.options.map((o) => [o.command, o.save])).toEqual([[Command.BUILD, true]]);
    expect((await upload(info.password)).status).toBe(403); // a pull token only reads
    const read = await fetch(`http://${host}/v2/${projectId}/tags/list`, { headers: basic(info.password) });
    expect([200, 404]).toContain(read.status); // the registry's own answer: nothing pushed yet

    const projectToken = await cli().getPullToken({ projectId }, bearer(local.token));
    expect(projectToken.registryHost).toBe(host);
    expect((await fetch(`http://${host}/v2/_catalog`, { headers: basic(projectToken.token) })).status).toBe(403);
    expect((await fetch(`http://${host}/v2/_catalog`, { headers: basic(local.token) })).status).toBe(200);
    expect(await codeOf(cli().getPullToken({ projectId: "prj_nope" }, bearer(local.token)))).toBe("NotFound");
    expect((await fetch(`http://${host}/v2/`, { headers: basic("not-a-token") })).status).toBe(401);
  });

  it("is a real registry behind the front: what it holds is in the registry it names", async () => {
    // The front relays to 127.0.0.1:5000 by default: its /v2/ answers carry the registry's own header.
    const answer = await fetch(`http://${local.savedImageRegistry}/v2/`, { headers: basic(local.token) });
    expect(answer.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    expect(PLAIN_REGISTRY).toBe("127.0.0.1:5000");
  });

  it("is off with savedImageRegistry: false, and the pull calls say so", async () => {
    await using bare = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, savedImageRegistry: false });
    bare.addProject({ name: "bare", projectId: "prj_bare" });
    const client = createClient(CliBuildService, createConnectTransport({ baseUrl: bare.apiUrl, httpVersion: "1.1" }));
    const build = await client.createBuild({ projectId: "prj_bare", options: [{ save: true }] }, bearer(bare.token));
    expect(bare.savedImageRegistry).toBeUndefined();
    expect(build.additionalTags).toEqual([]);
    expect(await codeOf(client.getPullInfo({ buildId: build.buildId }, bearer(build.buildToken)))).toBe("FailedPrecondition");
  });
});

describe("what machines and projects answer", () => {
  it("asks for gzip with machineCompression, and leaves the compressor unset otherwise", async () => {
    await using gz = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, pendingPolls: 0, machineCompression: "gzip", savedImageRegistry: false });
    gz.addProject({ name: "gz", projectId: "prj_gz" });
    const client = createClient(CliBuildService, createConnectTransport({ baseUrl: gz.apiUrl, httpVersion: "2" }));
    const build = await client.createBuild({ projectId: "prj_gz" }, bearer(gz.token));
    const { connection } = await client.getBuildKitConnection({ buildId: build.buildId, platform: BuilderPlatform.AMD64 }, bearer(build.buildToken));
    expect(connection.case === "active" && connection.value.compressor.case).toBe("gzip");

    const plain = await newBuild();
    let answer = await cli().getBuildKitConnection({ buildId: plain.buildId, platform: BuilderPlatform.AMD64 }, bearer(plain.buildToken));
    while (answer.connection.case === "pending") {
      answer = await cli().getBuildKitConnection({ buildId: plain.buildId, platform: BuilderPlatform.AMD64 }, bearer(plain.buildToken));
    }
    expect(answer.connection.case === "active" && answer.connection.value.compressor.case).toBeUndefined();
  });

  it("always sends keep_bytes, so Depot's CLI shows the cache size of a project made without it", async () => {
    const projects = createClient(ProjectService, transport());
    const { project } = await projects.createProject({ name: "no bytes", regionId: "us-east-1", cachePolicy: { keepGb: 20, keepDays: 7 } }, bearer(local.token));
    expect(project!.cachePolicy).toMatchObject({ keepGb: 20, keepDays: 7, keepBytes: 20n * 1024n ** 3n });
  });

  it("refuses an engine other than BuildKit", async () => {
    const request = { projectId, requiredEngine: { engine: { case: "dagger" as const, value: { version: "0.9" } } } };
    expect(await codeOf(cli().createBuild(request, bearer(local.token)))).toBe("Unimplemented");
  });

  it("takes a build's machines a grace time after cancels_at, on an injected clock", async () => {
    let now = Date.parse("2030-01-01T00:00:00Z");
    await using timed = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, pendingPolls: 0, clock: { now: () => now }, savedImageRegistry: false });
    timed.addProject({ name: "timed", projectId: "prj_timed" });
    const client = createClient(CliBuildService, createConnectTransport({ baseUrl: timed.apiUrl, httpVersion: "2" }));
    const build = await client.createBuild({ projectId: "prj_timed" }, bearer(timed.token));
    await client.getBuildKitConnection({ buildId: build.buildId, platform: BuilderPlatform.AMD64 }, bearer(build.buildToken));
    timed.faults.cancelsAt = new Date(now + 10_000);
    const answer = await client.reportBuildHealth({ buildId: build.buildId, platform: BuilderPlatform.AMD64 }, bearer(build.buildToken));
    expect(timestampDate(answer.cancelsAt!).getTime()).toBe(now + 10_000);
    const record = timed.builds.get(build.buildId)!;

    now += 10_000; // canceled now: no new machine, but the one running gets its grace time
    expect(await codeOf(client.getBuildKitConnection({ buildId: build.buildId, platform: BuilderPlatform.ARM64 }, bearer(build.buildToken)))).toBe(
      "FailedPrecondition",
    );
    await new Promise((resolve) => setTimeout(resolve, 100)); // several reaper rounds
    expect(record.machines[0]!.stopReason).toBeUndefined();
    now += 2_001;
    await vi.waitFor(() => expect(record.machines[0]!.stopReason).toBe("canceled"));
  });
});
