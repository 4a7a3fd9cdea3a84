// The examples run as a newcomer runs them, each in its own process, from the
// built package: the main job against dockerd's BuildKit, and the Depot ones
// against the local Depot-compatible server they start when DEPOT_TOKEN is unset.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { tempDir } from "./support/build-helpers.js";
import { assertDockerd } from "./support/daemons.js";
import { getManifest, PLAIN_REGISTRY } from "./support/registry.js";

const run = promisify(execFile);
const env = { ...process.env };
for (const name of ["DEPOT_TOKEN", "DEPOT_API_URL", "DEPOT_PROJECT_ID", "BUILDKIT_HOST"]) delete env[name];

async function example(file: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [file, ...args], { env, timeout: 120_000 });
  return stdout;
}

describe("examples", () => {
  assertDockerd();

  it("build.mjs builds fixtures/hello, shows progress and pushes it", async () => {
    const out = await example("examples/build.mjs", "fixtures/hello", `${PLAIN_REGISTRY}/examples-hello:latest`);
    expect(out).toContain("[build 4/4] RUN");
    const digest = /pushed \S+ (sha256:[0-9a-f]{64})/.exec(out)?.[1];
    expect(digest).toBe((await getManifest(PLAIN_REGISTRY, "examples-hello", "latest")).digest);
  });

  it("list-workers.mjs lists dockerd's workers", async () => {
    expect(await example("examples/list-workers.mjs", "docker://")).toMatch(/worker \S+: linux\/amd64/);
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
    const out = await example("examples/depot/build-and-push.mjs", `${PLAIN_REGISTRY}/examples-multi:latest`);
    const digest = /pushed \S+ (sha256:[0-9a-f]{64})/.exec(out)?.[1];
    const index = (await getManifest(PLAIN_REGISTRY, "examples-multi", "latest")) as unknown as { digest: string; manifests: unknown[] };
    expect(index.digest).toBe(digest);
    expect(index.manifests).toHaveLength(2);
  });
});
