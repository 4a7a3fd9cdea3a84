// What a daemon says about itself, on each test daemon: its workers, its
// version through info() (BuildKit v0.11+; dockerd 20.10's v0.8 has no Info
// call, a normal answer), its cache, and connect() finding it from the
// environment as buildctl does (BUILDKIT_HOST, BUILDKIT_TLS_*).
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildKitClient, connect } from "../src/index.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
  });

  it("lists its workers with os/arch platforms", async () => {
    const workers = await bk.listWorkers();
    expect(workers.length).toBeGreaterThan(0);
    for (const worker of workers) {
      expect(worker.id).not.toBe("");
      for (const platform of worker.platforms) expect(platform).toMatch(/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/);
    }
    expect(workers.flatMap((w) => w.platforms)).toContain(`linux/${process.arch === "x64" ? "amd64" : process.arch}`);
  });

  it("reports its version through info(), or that it predates the call", async () => {
    const info = await bk.info();
    if (daemon.embeddedInDocker) {
      // dockerd 20.10 embeds BuildKit v0.8, from before Info (v0.11).
      expect(info).toEqual({ status: "unimplemented", message: expect.stringContaining("v0.11") });
      expect((await bk.listWorkers())[0]!.buildkitVersion).toBeUndefined();
      return;
    }
    expect(info.status).toBe("ok");
    if (info.status !== "ok") return;
    expect(info.buildkitVersion).toMatchObject({ package: "github.com/moby/buildkit", version: expect.stringMatching(/^v0\.(1[1-9]|[2-9]\d)\./) });
    expect(info.buildkitVersion.revision).toMatch(/^[0-9a-f]{40}$/);
    // Workers tell the same version from v0.11 on.
    expect((await bk.listWorkers())[0]!.buildkitVersion).toEqual(info.buildkitVersion);
  });

  it("answers diskUsage() with records of plausible sizes", async () => {
    const records = await bk.diskUsage();
    for (const record of records) {
      expect(record.size).toBeGreaterThanOrEqual(0);
      expect(record.id).not.toBe("");
    }
  });

  it("is found by connect() with no address, from BUILDKIT_HOST and BUILDKIT_TLS_*", async () => {
    const saved = { ...process.env };
    for (const name of Object.keys(process.env)) if (name.startsWith("BUILDKIT_TLS_")) delete process.env[name];
    process.env.BUILDKIT_HOST = daemon.address;
    if (daemon.connectOptions.tls) {
      // The TLS files the environment names (local-buildkit.sh env prints them).
      for (const name of ["BUILDKIT_TLS_CA", "BUILDKIT_TLS_CERT", "BUILDKIT_TLS_KEY", "BUILDKIT_TLS_SERVER_NAME"]) process.env[name] = saved[name];
      expect(readFileSync(process.env.BUILDKIT_TLS_CA!, "utf8")).toBe(daemon.connectOptions.tls.ca);
    }
    try {
      await using found = await connect();
      expect(found.address).toBe(daemon.address);
      expect(await found.listWorkers()).toEqual(await bk.listWorkers());
    } finally {
      process.env = saved;
    }
  });
});
