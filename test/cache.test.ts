// diskUsage() and prune() against real build cache. The cache is made by the
// docker CLI's own BuildKit build (test tooling only; the library's build()
// arrives with the build work), so the records are BuildKit's real ones.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { connect } from "../src/index.js";
import { assertDockerd, DOCKER_BUILDKIT } from "./support/daemons.js";

const marker = `bkn-cache-${randomBytes(6).toString("hex")}`;
const blobBytes = 512 * 1024;

beforeAll(() => {
  assertDockerd();
  const dockerfile = `FROM 127.0.0.1:5000/busybox\nRUN head -c ${blobBytes} /dev/urandom > /${marker}\n`;
  execFileSync("/usr/bin/docker", ["build", "--no-cache", "-q", "-"], {
    input: dockerfile,
    env: { ...process.env, DOCKER_BUILDKIT: "1" },
    stdio: ["pipe", "ignore", "inherit"],
    timeout: 120_000,
  });
});

describe("build cache", () => {
  it("diskUsage() lists the records of a build with their sizes and times", async () => {
    await using bk = await connect(DOCKER_BUILDKIT);
    const records = await bk.diskUsage();
    const ours = records.find((r) => r.description.includes(marker));
    expect(ours, `no cache record mentions ${marker}`).toBeDefined();
    expect(ours!.id).not.toBe("");
    expect(ours!.size).toBe(blobBytes);
    expect(ours!.createdAt).toBeInstanceOf(Date);
    expect(Date.now() - ours!.createdAt!.getTime()).toBeLessThan(10 * 60_000);
    expect(ours!.parents.length).toBeGreaterThan(0); // it sits on the busybox layer
  });

  it("prune() deletes what the filter selects and reports the bytes reclaimed", async () => {
    await using bk = await connect(DOCKER_BUILDKIT);
    const ours = (await bk.diskUsage()).find((r) => r.description.includes(marker));
    expect(ours).toBeDefined();
    const result = await bk.prune({ all: true, filter: [`id==${ours!.id}`] });
    expect(result.deleted.map((r) => r.id)).toEqual([ours!.id]);
    expect(result.reclaimedBytes).toBe(blobBytes);
    const after = await bk.diskUsage();
    expect(after.some((r) => r.id === ours!.id)).toBe(false);
  });
});
