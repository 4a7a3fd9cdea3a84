// Depot's own released clients against the local Depot: the `depot` CLI
// 2.102.12 (npm @depot/cli-linux-x64) and @depot/sdk-node 1.4.0, unchanged,
// pointed at it with DEPOT_API_URL. Their builds run on the standalone
// buildkitd: every build the CLI makes exports with the `image` exporter
// (even --load), which dockerd's BuildKit v0.8 does not have, so on dockerd
// only the calls that build nothing run. The SDK's machine flow
// (depot.buildkit.v1) runs on both daemons.
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { connect } from "../src/index.js";
import { type LocalDepot, startLocalDepot, startRegistryFront } from "../src/testing/index.js";
import { tempDir } from "./support/build-helpers.js";
import { announceSkip, assertDaemon, BUILD_DAEMONS, NEWEST_DAEMON } from "./support/daemons.js";
import { DEPOT_BINARY, depotEnvironment, runDepot, startDepot } from "./support/depot-cli.js";
import {
  AUTH_PASSWORD,
  AUTH_REGISTRY,
  AUTH_USER,
  BASE_IMAGE,
  getImageConfig,
  getManifest,
  PLAIN_REGISTRY,
  uniqueRepository,
} from "./support/registry.js";

type Sdk = typeof import("@depot/sdk-node");

const require = createRequire(import.meta.url);
const AMD64 = 1; // depot.buildkit.v1.Platform
const ARM64 = 2;

/**
 * Depot's SDK as a fresh module whose clients speak to `apiUrl`: it reads
 * DEPOT_API_URL once, when it is loaded.
 */
function loadSdk(apiUrl: string): Sdk {
  process.env.DEPOT_API_URL = apiUrl;
  delete require.cache[require.resolve("@depot/sdk-node")];
  return require("@depot/sdk-node") as Sdk;
}

const docker = promisify(execFile);
const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });
const canBuild = !NEWEST_DAEMON.embeddedInDocker;

if (!DEPOT_BINARY) announceSkip("tests with the depot CLI", "@depot/cli-linux-x64 is not installed (it exists for linux/x64 only)");
if (!canBuild) {
  announceSkip("depot CLI builds", "every depot build exports with the image exporter, which dockerd's BuildKit v0.8 lacks; set BUILDKIT_HOST");
}

let local: LocalDepot;
let home: ReturnType<typeof tempDir>;
let projectId: string;
let sdk: Sdk;

beforeAll(async () => {
  assertDaemon(NEWEST_DAEMON);
  local = await startLocalDepot({ ...NEWEST_DAEMON.backend, pendingWaitMs: 50 });
  projectId = local.addProject({ name: "real clients" }).projectId;
  home = tempDir("depot-home");
  sdk = loadSdk(local.apiUrl);
});

afterAll(async () => {
  await local?.stop();
  home?.remove();
});

/** A build context whose RUN step no earlier build has cached. */
function context(run: string): ReturnType<typeof tempDir> {
  const dir = tempDir("depot-context");
  writeFileSync(`${dir.path}/Dockerfile`, `FROM ${BASE_IMAGE}\nRUN echo ${uniqueRepository("run")} > /marker && ${run}\n`);
  return dir;
}

function env(extra: Record<string, string> = {}) {
  return depotEnvironment(local, home.path, { DEPOT_PROJECT_ID: projectId, ...extra });
}

describe.skipIf(!DEPOT_BINARY)("the depot CLI, calls that build nothing", () => {
  it("lists projects (depot.cli.v1beta1.ProjectsService)", async () => {
    const run = await runDepot(["projects", "list"], { env: env() });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trim().split("\n")).toContain(`${projectId},real clients`);
  });

  it("lists organizations with the login token (depot.core.v1.OrganizationService)", async () => {
    const run = await runDepot(["org", "list"], { env: env() });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trim().split("\n")).toEqual(["Organization ID,Name", `${local.organizationId},Local Depot`]);
  });

  it("resets a project's cache (ResetProjectCache)", async () => {
    const project = local.addProject({ name: "cache reset" });
    const run = await runDepot(["cache", "reset", "--project", project.projectId], { env: env() });
    expect(run.code, run.stderr).toBe(0);
    expect(project.cacheResets).toBe(1);
  });

  it("shows a project the library made with its cache size (keep_bytes always sent)", async () => {
    const project = local.addProject({ name: "cache size" });
    const run = await runDepot(["projects", "get", project.projectId, "--output", "json"], { env: env() });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(String(50 * 1024 ** 3));
  });
});

describe.skipIf(!DEPOT_BINARY || !canBuild)(`the depot CLI building on ${NEWEST_DAEMON.name}`, { timeout: 240_000 }, () => {
  it("on buildkitd: build --push, read back from the registry, with the steps the CLI reported (read back with the SDK)", async () => {
    const ctx = context("echo hello-from-depot-cli");
    const repository = uniqueRepository("depot-cli-push");
    try {
      const run = await runDepot(["build", "--progress", "plain", "--push", "-t", `${PLAIN_REGISTRY}/${repository}:1`, ctx.path], { env: env() });
      expect(run.code, run.stderr).toBe(0);
      const manifest = await getManifest(PLAIN_REGISTRY, repository, "1");
      expect(manifest.digest).toMatch(/^sha256:/);

      const build = [...local.builds.values()].findLast((b) => b.options.some((o) => o.tags.includes(`${PLAIN_REGISTRY}/${repository}:1`)))!;
      expect(build.finish).toMatchObject({ result: "success" });
      expect(build.options[0]).toMatchObject({ command: "BUILD", push: true, save: false });
      expect(build.statusReports.streamsOpened).toBeGreaterThan(0);
      expect(build.statusReports.streamsCompleted).toBe(build.statusReports.streamsOpened);
      // The CLI reports its own steps (the machine's BuildKit reports the solve's on Depot's side).
      const launch = build.steps.find((step) => step.name === "[depot] launching amd64 machine")!;
      const connecting = build.steps.find((step) => step.name === "[depot] connecting to amd64 machine")!;
      for (const step of [launch, connecting]) {
        expect(step.completedAt!.getTime()).toBeGreaterThanOrEqual(step.startedAt!.getTime());
      }

      // depot.build.v1 GetBuildSteps, through Depot's own SDK, shows the same steps in the same order.
      const { buildSteps } = await sdk.depot.build.v1.BuildService.getBuildSteps({ projectId, buildId: build.id }, bearer(local.token));
      expect(buildSteps.map((step) => [step.digest, step.name])).toEqual(build.steps.map((step) => [step.digest, step.name]));
      expect(buildSteps.find((step) => step.digest === launch.digest)!.startedAt!.toDate()).toEqual(launch.startedAt);
    } finally {
      ctx.remove();
    }
  });

  it("on buildkitd: build --save, then pull into dockerd and push to another registry", async () => {
    const ctx = context("echo saved");
    const image = uniqueRepository("depot-pulled");
    const destination = await startRegistryFront({ registry: AUTH_REGISTRY, authority: local.certificateAuthority });
    const pushed = uniqueRepository("depot-pushed");
    try {
      const saved = await runDepot(["build", "--progress", "plain", "--save", "--save-tag", "keep", ctx.path], { env: env() });
      expect(saved.code, saved.stderr).toBe(0);
      const build = [...local.builds.values()].at(-1)!;
      expect(build.options[0]).toMatchObject({ save: true, saveTags: ["keep"] });
      expect(build.saves.map((s) => s.reference).sort()).toEqual(
        [`${local.savedImageRegistry}/${projectId}:${build.id}`, `${local.savedImageRegistry}/${projectId}:keep`].sort(),
      );
      // The saved image is in the real registry behind the front, under the project.
      const savedManifest = await getManifest(PLAIN_REGISTRY, projectId, build.id);
      expect(savedManifest.digest).toBe(build.saves[0]!.digest);

      const pull = await runDepot(["pull", "--progress", "plain", "-t", `${image}:1`, build.id], { env: env() });
      expect(pull.code, pull.stderr).toBe(0);
      const { stdout } = await docker("docker", ["run", "--rm", `${image}:1`, "cat", "/marker"]);
      expect(stdout).toMatch(/^run-/);
      expect(build.pulls.some((p) => p.by === "pull token")).toBe(true);

      const push = await runDepot(["push", "--progress", "plain", "--tag", `${destination.host}/${pushed}:1`, build.id], {
        env: env({ DEPOT_PUSH_REGISTRY_USERNAME: AUTH_USER, DEPOT_PUSH_REGISTRY_PASSWORD: AUTH_PASSWORD }),
      });
      expect(push.code, push.stderr).toBe(0);
      expect(build.pushes).toHaveLength(1);
      expect(build.pushes[0]).toMatchObject({ tag: `${destination.host}/${pushed}:1` });
      expect(build.pushes[0]!.finishedAt).toBeInstanceOf(Date);
      expect(build.pushes[0]!.error).toBeUndefined();
      const auth = { username: AUTH_USER, password: AUTH_PASSWORD };
      const copy = await getManifest(AUTH_REGISTRY, pushed, "1", auth);
      expect(copy.digest).toBe(savedManifest.digest);
      const config = await getImageConfig(AUTH_REGISTRY, pushed, "1", auth).catch(() => undefined);
      // An index has no config of its own; its platform manifest's blobs were copied.
      if (config) expect(config.os).toBe("linux");
      expect(build.pushes[0]!.blobsCopied.length).toBeGreaterThan(0);
    } finally {
      await docker("docker", ["rmi", "-f", `${image}:1`, `${local.savedImageRegistry}/${projectId}:${[...local.builds.values()].at(-1)!.id}`]).catch(() => {});
      await destination.stop();
      ctx.remove();
    }
  });

  it("on buildkitd: the SDK registers, the CLI builds it (DEPOT_BUILD_ID hand-off), with --push and --load", async () => {
    const repository = uniqueRepository("depot-handoff");
    for (const output of [["--push", "--tag", `${PLAIN_REGISTRY}/${repository}:1`], ["--load", "--tag", `${repository}:loaded`]]) {
      const ctx = context("echo handed-off");
      try {
        const { buildId, buildToken } = await sdk.depot.build.v1.BuildService.createBuild({ projectId }, bearer(local.token));
        const run = await runDepot(["build", "--progress", "plain", ...output, "."], {
          cwd: ctx.path,
          env: env({ DEPOT_BUILD_ID: buildId, DEPOT_TOKEN: buildToken }),
        });
        expect(run.code, run.stderr).toBe(0);
        const build = local.builds.get(buildId)!;
        expect(build.finish).toMatchObject({ result: "success" });
        expect(build.machines.length).toBeGreaterThan(0);
      } finally {
        ctx.remove();
      }
    }
    await getManifest(PLAIN_REGISTRY, repository, "1");
    const { stdout } = await docker("docker", ["run", "--rm", `${repository}:loaded`, "cat", "/marker"]);
    expect(stdout).toMatch(/^run-/);
    await docker("docker", ["rmi", "-f", `${repository}:loaded`]).catch(() => {});
  });

  it("on buildkitd: a failing RUN finishes the build with its error", async () => {
    const ctx = context("exit 3");
    try {
      const run = await runDepot(["build", "--progress", "plain", ctx.path], { env: env() });
      expect(run.code).not.toBe(0);
      const build = [...local.builds.values()].at(-1)!;
      expect(build.finish?.result).toBe("error");
      expect(build.finish?.error).toMatch(/exit code: 3/);
    } finally {
      ctx.remove();
    }
  });

  it("on buildkitd: Ctrl-C during the build finishes it as canceled", async () => {
    const ctx = context("sleep 120");
    try {
      const before = local.builds.size;
      const { child, done } = startDepot(["build", "--progress", "plain", ctx.path], { env: env() });
      // Interrupt once the CLI reports it has connected to its machine: the solve is under way.
      await vi.waitFor(
        () => {
          expect(local.builds.size).toBe(before + 1);
          const build = [...local.builds.values()].at(-1)!;
          expect(build.steps.find((s) => s.name === "[depot] connecting to amd64 machine")?.completedAt).toBeInstanceOf(Date);
        },
        { timeout: 120_000, interval: 100 },
      );
      child.kill("SIGINT");
      const run = await done;
      expect(run.code).not.toBe(0);
      expect([...local.builds.values()].at(-1)!.finish).toMatchObject({ result: "canceled" });
    } finally {
      ctx.remove();
    }
  });
});

describe.each(BUILD_DAEMONS)("@depot/sdk-node's machine flow (depot.buildkit.v1)", (daemon) => {
  let own: LocalDepot;
  let ownSdk: Sdk;
  let ownProject: string;

  beforeAll(async () => {
    assertDaemon(daemon);
    own = await startLocalDepot({ ...daemon.backend, pendingPolls: 2, pendingWaitMs: 20 });
    ownProject = own.addProject({ name: "sdk machines" }).projectId;
    ownSdk = loadSdk(own.apiUrl);
  });

  afterAll(async () => {
    await own?.stop();
  });

  it(`on ${daemon.name}: GetEndpoint streams pending then active, whose mTLS material reaches the BuildKit; ReportHealth holds it; ReleaseEndpoint frees one platform`, async () => {
    const { BuildKitService } = ownSdk.depot.buildkit.v1;
    const { buildId, buildToken } = await ownSdk.depot.build.v1.BuildService.createBuild({ projectId: ownProject }, bearer(own.token));
    const build = own.builds.get(buildId)!;

    const answers: string[] = [];
    let tls: { ca: string; cert: string; key: string; serverName: string } | undefined;
    let endpoint = "";
    for await (const answer of BuildKitService.getEndpoint({ buildId, platform: AMD64 }, bearer(buildToken))) {
      answers.push(answer.connection.case ?? "none");
      if (answer.connection.case === "active") {
        const active = answer.connection.value;
        endpoint = active.endpoint;
        tls = { ca: active.caCert!.cert, cert: active.cert!.cert!.cert, key: active.cert!.key!.key, serverName: active.serverName };
      }
    }
    expect(answers).toEqual(["pending", "pending", "active"]);

    async function* health() {
      for (let i = 0; i < 3; i++) yield { buildId, platform: AMD64 };
    }
    await BuildKitService.reportHealth(health(), bearer(buildToken));
    expect(build.healthReports.filter((r) => r.platform === "amd64")).toHaveLength(3);

    {
      await using bk = await connect(endpoint, { tls: tls! });
      expect((await bk.listWorkers()).length).toBeGreaterThan(0);
    }
    // An arm64 machine too; releasing amd64 leaves it running.
    for await (const answer of BuildKitService.getEndpoint({ buildId, platform: ARM64 }, bearer(buildToken))) void answer;
    await BuildKitService.releaseEndpoint({ buildId, platform: AMD64 }, bearer(buildToken));
    expect(build.machines.map((m) => [m.platform, m.stopReason])).toEqual([
      ["amd64", "released"],
      ["arm64", undefined],
    ]);
    const refused = await connect(endpoint, { tls: tls!, connectTimeoutMs: 5_000 }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "UNAVAILABLE" });

    await ownSdk.depot.build.v1.BuildService.finishBuild({ buildId, result: { case: "success", value: {} } }, bearer(buildToken));
    expect(build.machines.map((m) => m.stopReason)).toEqual(["released", "finished"]);
  });
});
