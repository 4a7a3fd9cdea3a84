// `buildkit-node` with Depot: the command, run as a child process, talks to
// the local Depot-compatible server started here (a stand-in for Depot's
// cloud API), whose machines front a real BuildKit (dockerd's, and the
// standalone buildkitd when the environment names it).
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DepotClient } from "../src/depot/index.js";
import { type LocalDepot, startLocalDepot } from "../src/testing/index.js";
import { cliEnv, runCli, scratchDir, startCli } from "./cli-harness.js";
import { assertDaemon, assertDockerd, BUILD_DAEMONS, DOCKER_BUILDKIT } from "./support/daemons.js";
import { dockerApi } from "./support/docker-api.js";
import { BASE_IMAGE, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

let local: LocalDepot;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  assertDockerd();
  local = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, pendingWaitMs: 50 });
  env = cliEnv({ DEPOT_TOKEN: local.token, DEPOT_API_URL: local.apiUrl });
});
afterAll(async () => {
  await local?.stop();
});

describe("projects", () => {
  it("create, get, list and delete, as JSON for scripts", async () => {
    const created = await runCli(["projects", "create", "cli-project", "--region", "eu-central-1", "--json"], { env });
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);
    const project = JSON.parse(created.stdout.toString()) as { projectId: string; name: string; regionId: string };
    expect(project).toMatchObject({ name: "cli-project", regionId: "eu-central-1" });
    expect(local.projects.has(project.projectId)).toBe(true);

    const got = await runCli(["projects", "get", project.projectId, "--json"], { env });
    expect(JSON.parse(got.stdout.toString())).toMatchObject({ projectId: project.projectId });
    const listed = await runCli(["projects", "list", "--json"], { env });
    expect((JSON.parse(listed.stdout.toString()) as { projectId: string }[]).map((p) => p.projectId)).toContain(project.projectId);
    const table = await runCli(["projects", "list"], { env });
    expect(table.stdout.toString()).toContain(project.projectId);

    const deleted = await runCli(["projects", "delete", project.projectId], { env });
    expect(deleted.code).toBe(0);
    expect(local.projects.has(project.projectId)).toBe(false);
  });

  it("a wrong token fails with the API's answer and never prints the token", async () => {
    const token = "wrong-token-that-must-not-be-printed";
    const result = await runCli(["projects", "list"], { env: cliEnv({ DEPOT_TOKEN: token, DEPOT_API_URL: local.apiUrl }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/unauthenticated|UNAUTHENTICATED/i);
    expect(`${result.stdout}${result.stderr}`).not.toContain(token);
  });

  it("no token at all is a clear error", async () => {
    const result = await runCli(["projects", "list"], { env: cliEnv({ DEPOT_TOKEN: undefined, DEPOT_API_URL: local.apiUrl }) });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/DEPOT_TOKEN/);
  });
});

describe.each(BUILD_DAEMONS)("on %s: build --depot", (daemon) => {
  let local: LocalDepot;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    assertDaemon(daemon);
    local = await startLocalDepot({ ...daemon.backend, pendingWaitMs: 50 });
    env = cliEnv({ DEPOT_TOKEN: local.token, DEPOT_API_URL: local.apiUrl });
  });
  afterAll(async () => {
    await local?.stop();
  });
  /** Machines fronting dockerd push through its Engine: the command is told which. */
  const dockerEngineFlag = () => (local.dockerEngine ? ["--docker-engine", local.dockerEngine] : []);

  it("builds on a Depot machine, pushes, writes the metadata file, and the build finishes as a success", async () => {
    const projectId = local.addProject({ name: "cli-build" }).projectId;
    const repository = uniqueRepository("bkn-cli-depot");
    const out = scratchDir("cli-depot");
    try {
      const metadataFile = join(out.path, "metadata.json");
      const result = await runCli(
        ["build", "--depot", projectId, ...dockerEngineFlag(), "--progress", "plain", "-t", `${PLAIN_REGISTRY}/${repository}:v1`, "--push", "--metadata-file", metadataFile, "fixtures/hello"],
        { env },
      );
      expect(result.code, result.stderr).toBe(0);
      const manifest = await getManifest(PLAIN_REGISTRY, repository, "v1");
      const metadata = JSON.parse(readFileSync(metadataFile, "utf8")) as Record<string, unknown>;
      expect(metadata["containerimage.digest"]).toBe(manifest.digest);
      const builds = [...local.builds.values()].filter((b) => b.projectId === projectId);
      expect(builds).toHaveLength(1);
      expect(builds[0]!.finish?.result).toBe("success");
      expect(result.stderr).toMatch(/\[linux\/amd64\]|#\d+ /);
    } finally {
      out.remove();
    }
  });

  it("--save, then pull and push by the build ID the metadata file names", async () => {
    const projectId = local.addProject({ name: "cli-save" }).projectId;
    const out = scratchDir("cli-save");
    try {
      const metadataFile = join(out.path, "metadata.json");
      // Every log line on, to show that no token reaches one.
      const debugEnv = { ...env, DEBUG: "buildkit-node:*" };
      const built = await runCli(["build", "--depot", projectId, ...dockerEngineFlag(), "--save", "--save-tag", "latest", "--progress", "plain", "--metadata-file", metadataFile, "fixtures/hello"], { env: debugEnv });
      expect(built.code, built.stderr).toBe(0);
      const metadata = JSON.parse(readFileSync(metadataFile, "utf8")) as { "depot.build": { buildID: string; projectID: string; saved: string } };
      const { buildID } = metadata["depot.build"];
      expect(metadata["depot.build"]).toEqual({ buildID, projectID: projectId, saved: `${local.savedImageRegistry}/${projectId}:${buildID}` });
      expect(local.builds.get(buildID)!.options[0]).toMatchObject({ save: true, saveTags: ["latest"] });

      const archive = join(out.path, "image.tar");
      const pulled = await runCli(["pull", "--output", archive, buildID], { env: debugEnv });
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(statSync(archive).size).toBeGreaterThan(0);

      const name = `${uniqueRepository("bkn-cli-pulled")}:dev`;
      try {
        const loaded = await runCli(["pull", "--tag", name, "--docker-engine", "unix:///var/run/docker.sock", "--progress", "quiet", buildID], { env });
        expect(loaded.code, loaded.stderr).toBe(0);
        expect(loaded.stderr).toContain(`loaded ${name}`);
        expect((await dockerApi("GET", `/images/${encodeURIComponent(name)}/json`)).status).toBe(200);
      } finally {
        await dockerApi("DELETE", `/images/${encodeURIComponent(name)}?force=true`);
      }

      const repository = uniqueRepository("bkn-cli-pushed");
      const pushed = await runCli(["push", "--tag", `${PLAIN_REGISTRY}/${repository}:v1`, "--progress", "quiet", buildID], { env: debugEnv });
      expect(pushed.code, pushed.stderr).toBe(0);
      const buildToken = local.builds.get(buildID)!.token;
      for (const output of [built, pulled, pushed]) {
        const text = `${output.stdout}${output.stderr}`;
        expect(text).toContain("buildkit-node:depot"); // the debug log was on
        for (const secret of [buildToken, local.token, Buffer.from(`x-token:${buildToken}`).toString("base64")]) expect(text).not.toContain(secret);
      }
      const manifest = await getManifest(PLAIN_REGISTRY, repository, "v1");
      expect(pushed.stdout.toString()).toBe(`${PLAIN_REGISTRY}/${repository}:v1@${manifest.digest}\n`);
    } finally {
      out.remove();
    }
  });

  it("with DEPOT_BUILD_ID (and its token), builds into that build and finishes it", async () => {
    const projectId = local.addProject({ name: "cli-handoff" }).projectId;
    const started = await new DepotClient({ token: local.token, apiUrl: local.apiUrl }).builds.create({ projectId }); // as Depot's SDK would
    const repository = uniqueRepository("bkn-cli-handoff");
    const result = await runCli(["build", "--depot", projectId, ...dockerEngineFlag(), "--progress", "plain", "-t", `${PLAIN_REGISTRY}/${repository}:v1`, "--push", "fixtures/hello"], {
      env: { ...env, DEPOT_BUILD_ID: started.id, DEPOT_TOKEN: started.token },
    });
    expect(result.code, result.stderr).toBe(0);
    expect(local.builds.get(started.id)!.finish?.result).toBe("success");
    expect([...local.builds.values()].filter((b) => b.projectId === projectId)).toHaveLength(1);
    await getManifest(PLAIN_REGISTRY, repository, "v1");
  });

  it("Ctrl-C cancels the build, which Depot records as canceled, and exits 130", async () => {
    const projectId = local.addProject({ name: "cli-cancel" }).projectId;
    const marker = `depot-sigint-${Date.now().toString(36)}`;
    const ctx = scratchDir("cli-depot-sigint", { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo started-${marker} && sleep 60\n` });
    try {
      const cli = await startCli(["build", "--depot", projectId, ...dockerEngineFlag(), "--progress", "plain", "--no-cache", ctx.path], { env });
      await cli.waitForStderr(new RegExp(`started-${marker}`));
      cli.child.kill("SIGINT");
      const result = await cli.exited;
      expect(result.code).toBe(130);
      const builds = [...local.builds.values()].filter((b) => b.projectId === projectId);
      expect(builds[0]?.finish?.result).toBe("canceled");
      expect(builds[0]?.machines.every((m) => m.stoppedAt)).toBe(true);
    } finally {
      ctx.remove();
    }
  });
});

describe("usage", () => {
  it.each([
    [["build", "--save", "fixtures/hello"], /--save saves in Depot's registry: it needs --depot/],
    [["build", "--depot", "p", "--save-tag", "x", "fixtures/hello"], /--save-tag needs --save/],
    [["push", "BUILD"], /--tag is required/],
    [["push", "--tag", "r.example/app:1"], /a BUILD_ID is required/],
    [["pull", "--format", "oci", "BUILD"], /--format needs --output/],
    [["pull", "--output", "x.tar", "--format", "zip", "BUILD"], /--format must be "docker" or "oci"/],
    [["pull", "--output", "x.tar", "--docker-engine", "unix:///var/run/docker.sock", "BUILD"], /--docker-engine and --output cannot be used together/],
  ])("%j is refused before any call", async (argv, message) => {
    const result = await runCli(argv, { env: cliEnv({ DEPOT_TOKEN: "t", DEPOT_API_URL: "http://127.0.0.1:9" }) });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
  });
});
