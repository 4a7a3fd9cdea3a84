// Depot's seed tutorial for the build API (depot/examples,
// build-api/nodejs/src/create-build.js), run the way a CI job would run it
// offline: `buildkit-node local-depot` as a child process, and our own script
// making the seed's calls (test/support/seed-create-build.mjs) — the real
// @depot/sdk-node registers the build, the real `depot` CLI builds it with
// DEPOT_BUILD_ID and the build token, with --save, --load and --push.
//
// Handed a build it did not create, the CLI saves to
// registry.depot.dev/<project>:<build id> whatever the API, and BuildKit
// pushes there itself: this needs that name as 127.0.0.1, buildkitd told it
// is plain HTTP, and port 80 for the local Depot's `--depot-registry-port`.
// `BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS=1 scripts/local-buildkit.sh up` sets
// it up (CI does), `local-buildkit.sh env` then exports the variable. Only on
// the standalone buildkitd: every build of the depot CLI exports with the
// `image` exporter, which dockerd's BuildKit v0.8 lacks.
import { execFile } from "node:child_process";
import { lookup } from "node:dns/promises";
import { readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, type CliProcess, scratchDir, startCli } from "./cli-harness.js";
import { tempDir } from "./support/build-helpers.js";
import { announceSkip, daemonEnv, NEWEST_DAEMON } from "./support/daemons.js";
import { DEPOT_BINARY, type DepotRun, runDepot } from "./support/depot-cli.js";
import { BASE_IMAGE, getBlobJson, getIndex, getManifest, type ImageConfig, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const SEED_SCRIPT = fileURLToPath(new URL("./support/seed-create-build.mjs", import.meta.url));
const DEPOT_REGISTRY = "registry.depot.dev";
const HOW_TO_ENABLE =
  'run "BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS=1 scripts/local-buildkit.sh up" as root, then eval "$(scripts/local-buildkit.sh env)" (CI does both)';
const docker = promisify(execFile);

/** Why the seed flow cannot run here, or undefined when it can. */
async function unmetNeed(): Promise<string | undefined> {
  if (!DEPOT_BINARY) return "@depot/cli-linux-x64 is not installed (it exists for linux/x64 only)";
  if (NEWEST_DAEMON.embeddedInDocker) {
    return "every depot build exports with the image exporter, which dockerd's BuildKit v0.8 lacks: set BUILDKIT_HOST to a buildkitd";
  }
  if (process.env.BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS !== "1") return `${DEPOT_REGISTRY} is not this machine's: ${HOW_TO_ENABLE}`;
  const resolved = await lookup(DEPOT_REGISTRY, { family: 4 }).catch(() => undefined);
  if (resolved?.address !== "127.0.0.1") return `${DEPOT_REGISTRY} does not resolve to 127.0.0.1 (${resolved?.address ?? "no answer"}): ${HOW_TO_ENABLE}`;
  const refusal = await portRefusal(80);
  if (refusal) return `the local Depot cannot serve ${DEPOT_REGISTRY} on 127.0.0.1:80 (${refusal}): free the port, and run the tests as root`;
  return undefined;
}

/** Why a listener cannot have the port (EADDRINUSE, EACCES), or undefined when it can. */
function portRefusal(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(undefined)));
  });
}

const unmet = await unmetNeed();
if (unmet) announceSkip("the seed tutorial's flow (SDK registers, depot CLI builds with --save/--load/--push)", unmet);

/** The `export NAME=value` lines `local-depot` writes. */
function exportsOf(text: string): Record<string, string> {
  return Object.fromEntries(text.trim().split("\n").map((line) => /^export ([A-Z_]+)=(\S+)$/.exec(line)!.slice(1) as [string, string]));
}

function literally(text: string): RegExp {
  return new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
}

/** The config of the linux image in an index the CLI pushed (next to its attestation manifest). */
async function imageConfigOf(repository: string, reference: string): Promise<ImageConfig> {
  const index = await getIndex(PLAIN_REGISTRY, repository, reference);
  const image = index.manifests.find((m) => m.platform?.os === "linux")!;
  const manifest = await getManifest(PLAIN_REGISTRY, repository, image.digest);
  return getBlobJson<ImageConfig>(PLAIN_REGISTRY, repository, manifest.config.digest);
}

describe.skipIf(unmet !== undefined)(`on ${NEWEST_DAEMON.name}: the seed tutorial's flow against buildkit-node local-depot`, { timeout: 240_000 }, () => {
  const scratch = scratchDir("seed-flow");
  const home = tempDir("seed-flow-home");
  let localDepot: CliProcess;
  let depotEnv: Record<string, string>;

  beforeAll(async () => {
    // As CI runs it: BUILDKIT_HOST and BUILDKIT_TLS_* name the BuildKit.
    const exportFile = join(scratch.path, "depot.env");
    localDepot = await startCli(["local-depot", "--project", "seed", "--depot-registry-port", "80", "--export-file", exportFile], {
      env: cliEnv(daemonEnv(NEWEST_DAEMON)),
    });
    await localDepot.waitForStderr(/stop it with Ctrl-C/, 60_000);
    depotEnv = exportsOf(readFileSync(exportFile, "utf8"));
  });

  afterAll(async () => {
    if (localDepot) {
      localDepot.child.kill("SIGTERM");
      const stopped = await localDepot.exited;
      expect(stopped.code, stopped.stderr).toBe(0);
    }
    scratch.remove();
    home.remove();
  });

  /** The environment of a CI job that evaluated local-depot's lines: a home of its own, the depot CLI on PATH. */
  function jobEnv(): NodeJS.ProcessEnv {
    return {
      ...depotEnv,
      PATH: `${dirname(DEPOT_BINARY!)}:${process.env.PATH}`,
      HOME: home.path,
      XDG_CONFIG_HOME: join(home.path, ".config"),
      DOCKER_CONFIG: join(home.path, ".docker"),
      DEPOT_NO_UPDATE_NOTIFIER: "1",
      // dockerd 20.10's highest API version, for the CLI's --load.
      DOCKER_API_VERSION: "1.41",
    };
  }

  /** A build context whose image carries `run` as a label and in /marker, so no earlier build's cache stands in. */
  function context(run: string): ReturnType<typeof tempDir> {
    const dir = tempDir("seed-flow-context");
    writeFileSync(`${dir.path}/Dockerfile`, `FROM ${BASE_IMAGE}\nRUN echo ${run} > /marker\nLABEL buildkit-node.seed-run=${run}\n`);
    return dir;
  }

  /** Runs the seed script in `dir`; gives the build id it registered and what the CLI printed. */
  function seed(dir: string, ...args: string[]): Promise<DepotRun & { buildId: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [SEED_SCRIPT, depotEnv.DEPOT_PROJECT_ID!, ...args], { cwd: dir, env: jobEnv(), timeout: 200_000 }, (err, stdout, stderr) => {
        const failure = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        const code = failure ? (typeof failure.code === "number" ? failure.code : null) : 0;
        resolve({ code, signal: failure?.signal ?? null, stdout, stderr, buildId: /^build (\S+)$/m.exec(stdout)?.[1] ?? "" });
      });
    });
  }

  it("--save lands in the local Depot's registry as registry.depot.dev/<project>:<build id>, and depot pull reads it back", async () => {
    const run = uniqueRepository("seed-save");
    const ctx = context(run);
    const pulled = `${uniqueRepository("seed-pulled")}:1`;
    let pulledId = "";
    try {
      const saved = await seed(ctx.path, "save");
      expect(saved.code, saved.stderr).toBe(0);
      const projectId = depotEnv.DEPOT_PROJECT_ID!;
      const reference = `${DEPOT_REGISTRY}/${projectId}:${saved.buildId}`;
      expect(saved.stderr).toContain(`pushing manifest for ${reference}`);

      // In the registry behind the fronts, under the project, with this build's image in it.
      const manifest = await getManifest(PLAIN_REGISTRY, projectId, saved.buildId);
      expect((await imageConfigOf(projectId, saved.buildId)).config.Labels?.["buildkit-node.seed-run"]).toBe(run);
      // In the local Depot's records, as local-depot reports each save.
      await localDepot.waitForStderr(literally(`saved ${reference} ${manifest.digest} (build ${saved.buildId})\n`));

      // GetPullInfo and the pull token work for it as for any save.
      const pull = await runDepot(["pull", "--progress", "plain", "--project", projectId, "-t", pulled, saved.buildId], { env: jobEnv() });
      expect(pull.code, pull.stderr).toBe(0);
      pulledId = (await docker("docker", ["image", "inspect", "--format", "{{.Id}}", pulled])).stdout.trim();
      const { stdout } = await docker("docker", ["run", "--rm", pulled, "cat", "/marker"]);
      expect(stdout.trim()).toBe(run);
    } finally {
      // By id: the pull also tagged it with the local Depot's registry front.
      if (pulledId) await docker("docker", ["rmi", "-f", pulledId]).catch(() => {});
      ctx.remove();
    }
  });

  it("--load puts the image into dockerd (untagged, as the seed asks for none)", async () => {
    const run = uniqueRepository("seed-load");
    const ctx = context(run);
    let imageIds: string[] = [];
    try {
      const loaded = await seed(ctx.path, "load");
      expect(loaded.code, loaded.stderr).toBe(0);
      expect(loaded.buildId).not.toBe("");
      const images = await docker("docker", ["images", "--quiet", "--no-trunc", "--filter", `label=buildkit-node.seed-run=${run}`]);
      imageIds = [...new Set(images.stdout.trim().split("\n").filter(Boolean))];
      expect(imageIds).toHaveLength(1);
      const { stdout } = await docker("docker", ["run", "--rm", imageIds[0]!, "cat", "/marker"]);
      expect(stdout.trim()).toBe(run);
    } finally {
      if (imageIds.length) await docker("docker", ["rmi", "-f", ...imageIds]).catch(() => {});
      ctx.remove();
    }
  });

  it("--push --tag pushes to the registry named, read back from it", async () => {
    const run = uniqueRepository("seed-push");
    const ctx = context(run);
    const repository = uniqueRepository("seed-pushed");
    try {
      const pushed = await seed(ctx.path, "push", `${PLAIN_REGISTRY}/${repository}:1`);
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(pushed.buildId).not.toBe("");
      const config = await imageConfigOf(repository, "1");
      expect(config.config.Labels?.["buildkit-node.seed-run"]).toBe(run);
      expect(config.os).toBe("linux");
    } finally {
      ctx.remove();
    }
  });
});
