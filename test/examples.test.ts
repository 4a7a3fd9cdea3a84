// The examples run as a newcomer runs them, each in its own process, from the
// built package, on each test daemon (named by BUILDKIT_HOST and
// BUILDKIT_TLS_*, as a user's environment would): the main job directly, and
// the Depot ones against the local Depot-compatible server they start when
// DEPOT_TOKEN is unset, its machines fronting that daemon.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS, daemonEnv } from "./support/daemons.js";
import { getIndex, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const run = promisify(execFile);

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  beforeAll(() => assertDaemon(daemon));

  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) if (/^(DEPOT_|BUILDKIT_)/.test(name)) delete env[name];
  Object.assign(env, daemonEnv(daemon));

  async function example(file: string, ...args: string[]): Promise<string> {
    const { stdout } = await run(process.execPath, [file, ...args], { env, timeout: 120_000 });
    return stdout;
  }

  it("build.mjs builds fixtures/hello, shows progress and pushes it", async () => {
    const repository = uniqueRepository("examples-hello");
    const out = await example("examples/build.mjs", "fixtures/hello", `${PLAIN_REGISTRY}/${repository}:latest`);
    expect(out).toContain(`building fixtures/hello on ${daemon.address}`);
    expect(out).toContain("[build 4/4] RUN");
    const digest = /pushed \S+ (sha256:[0-9a-f]{64})/.exec(out)?.[1];
    expect(digest).toBe((await getManifest(PLAIN_REGISTRY, repository, "latest")).digest);
  });

  it("list-workers.mjs lists the daemon's workers and says what it knows of its version", async () => {
    const out = await example("examples/list-workers.mjs");
    expect(out).toContain(`BuildKit at ${daemon.address}`);
    expect(out).toMatch(/worker \S+: linux\/amd64/);
    expect(out).toMatch(daemon.embeddedInDocker ? /^version: unknown \(.*v0\.11/m : /^version: v0\.\d+\.\d+/m);
  });

  it("depot/projects.mjs creates, updates, lists and deletes a project", async () => {
    const out = await example("examples/depot/projects.mjs");
    expect(out).toMatch(/created prj_\w+/);
    expect(out).toContain("updated: keep 20 GB / 7 days");
    expect(out).toMatch(/deleted prj_\w+/);
  });

  it.each(["push", "load", "local"])("depot/build-lifecycle.mjs %s", async (mode) => {
    const dir = tempDir("example-out");
    const out = await example("examples/depot/build-lifecycle.mjs", mode, ...(mode === "local" ? [dir.path] : [])).finally(() => {
      if (mode === "local") expect(existsSync(join(dir.path, "usr/local/bin/greet"))).toBe(true);
      dir.remove();
    });
    expect(out).toMatch(/build \w+/);
    expect(out).toMatch(/machine tcp:\/\/127\.0\.0\.1:\d+ \(server name \S+\)/);
    expect(out).toMatch(/^done: /m);
  });

  it("depot/build-and-push.mjs pushes a two-platform index", async () => {
    const repository = uniqueRepository("examples-multi");
    const out = await example("examples/depot/build-and-push.mjs", `${PLAIN_REGISTRY}/${repository}:latest`);
    const digest = /pushed \S+ (sha256:[0-9a-f]{64})/.exec(out)?.[1];
    const index = await getIndex(PLAIN_REGISTRY, repository, "latest");
    expect(index.digest).toBe(digest);
    expect(index.manifests.map((m) => `${m.platform?.os}/${m.platform?.architecture}`).sort()).toEqual(["linux/amd64", "linux/arm64"]);
  });
});
