// The Depot examples that are this client's own, run as a newcomer runs
// them, each in its own process from the built package, against the local
// Depot they start when DEPOT_TOKEN is unset.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { assertDockerd } from "./support/daemons.js";
import { getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const run = promisify(execFile);
const env = { ...process.env };
for (const name of ["DEPOT_TOKEN", "DEPOT_API_URL", "DEPOT_PROJECT_ID"]) delete env[name];

describe("Depot examples", () => {
  it("depot/save-pull-push.mjs saves a build, pulls it as an archive and pushes it on", async () => {
    assertDockerd();
    const repository = uniqueRepository("examples-saved");
    const { stdout } = await run(process.execPath, ["examples/depot/save-pull-push.mjs", `${PLAIN_REGISTRY}/${repository}:v1`], { env, timeout: 120_000 });
    expect(stdout).toMatch(/^saved \S+:\S+ \(build \S+\)$/m);
    expect(stdout).toMatch(/^pulled sha256:[0-9a-f]{64} into an OCI archive$/m);
    const digest = /^pushed \S+ (sha256:[0-9a-f]{64})$/m.exec(stdout)?.[1];
    expect(digest).toBe((await getManifest(PLAIN_REGISTRY, repository, "v1")).digest);
  });
});
