// A standalone buildkitd named by BUILDKIT_HOST (with BUILDKIT_TLS_* when it
// uses TLS). CI has only dockerd's BuildKit, so these skip there, loudly.
import { describe, expect, it } from "vitest";
import { connect } from "../src/index.js";
import { announceSkip, STANDALONE_BUILDKIT } from "./support/daemons.js";

if (!STANDALONE_BUILDKIT) announceSkip("standalone buildkitd tests", "BUILDKIT_HOST is not set");

describe.skipIf(!STANDALONE_BUILDKIT)(`standalone buildkitd (${STANDALONE_BUILDKIT ?? "BUILDKIT_HOST unset"})`, () => {
  it("connects from the environment and lists workers", async () => {
    await using bk = await connect();
    expect(bk.address).toBe(STANDALONE_BUILDKIT);
    const workers = await bk.listWorkers();
    expect(workers.length).toBeGreaterThan(0);
    expect(workers[0]!.platforms.length).toBeGreaterThan(0);
  });

  it("reports its version through info() (BuildKit v0.11+)", async () => {
    await using bk = await connect();
    const info = await bk.info();
    if (info.status === "unimplemented") {
      announceSkip("info() version check", `${STANDALONE_BUILDKIT} is older than v0.11`);
      return;
    }
    expect(info.buildkitVersion.version).toMatch(/^v?\d+\.\d+/);
  });

  it("answers diskUsage()", async () => {
    await using bk = await connect();
    const records = await bk.diskUsage();
    for (const record of records) expect(record.size).toBeGreaterThanOrEqual(0);
  });
});
