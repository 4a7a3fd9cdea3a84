// The three transports against the real BuildKit inside dockerd: directly
// (docker://), through a unix socket (unix://) and through TCP with mutual
// TLS (tcp://), the last two via the byte-level front from
// buildkit-node/testing.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type Worker } from "../src/index.js";
import { type BuildKitFront, startBuildKitFront } from "../src/testing/index.js";
import { assertDockerd, DOCKER_BUILDKIT } from "./support/daemons.js";

let direct: Worker[];
let unixFront: BuildKitFront;
let mtlsFront: BuildKitFront;
let dir: string;

beforeAll(async () => {
  assertDockerd();
  dir = mkdtempSync(join(tmpdir(), "bkn-transports-"));
  unixFront = await startBuildKitFront({ buildkit: DOCKER_BUILDKIT, unixSocket: join(dir, "buildkitd.sock") });
  mtlsFront = await startBuildKitFront({ buildkit: DOCKER_BUILDKIT, mtls: true });
  const bk = await connect(DOCKER_BUILDKIT);
  direct = await bk.listWorkers();
  await bk.close();
});

afterAll(async () => {
  await unixFront?.stop();
  await mtlsFront?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function expectRealWorkers(workers: Worker[]): void {
  expect(workers.length).toBeGreaterThan(0);
  for (const worker of workers) {
    expect(worker.id).not.toBe("");
    expect(worker.platforms.length).toBeGreaterThan(0);
    for (const platform of worker.platforms) expect(platform).toMatch(/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/);
  }
}

describe("docker://", () => {
  it("lists the workers of dockerd's BuildKit with os/arch platforms", async () => {
    expectRealWorkers(direct);
    expect(direct.flatMap((w) => w.platforms)).toContain(`linux/${process.arch === "x64" ? "amd64" : process.arch}`);
  });

  it("answers info() with a clear unimplemented result on BuildKit v0.8 (dockerd 20.10)", async () => {
    await using bk = await connect(DOCKER_BUILDKIT);
    const info = await bk.info();
    expect(info.status).toBe("unimplemented");
    if (info.status === "unimplemented") expect(info.message).toContain("v0.11");
  });
});

describe("unix://", () => {
  it("lists the same workers through a unix socket", async () => {
    await using bk = await connect(unixFront.address);
    expect(unixFront.address).toMatch(/^unix:\/\/\//);
    const workers = await bk.listWorkers();
    expectRealWorkers(workers);
    expect(workers).toEqual(direct);
  });
});

describe("tcp:// with mutual TLS", () => {
  it("lists the same workers, checking the server name rather than the address", async () => {
    const before = mtlsFront.connections;
    const bk = await connect(mtlsFront.address, { tls: mtlsFront.tls! });
    expect(mtlsFront.tls!.serverName).not.toMatch(/^127\./);
    const workers = await bk.listWorkers();
    expect(workers).toEqual(direct);
    expect(mtlsFront.connections).toBe(before + 1);
    await bk.close();
  });

  it("takes the address and TLS files from BUILDKIT_HOST and BUILDKIT_TLS_*", async () => {
    const files = { ca: join(dir, "ca.pem"), cert: join(dir, "cert.pem"), key: join(dir, "key.pem") };
    writeFileSync(files.ca, mtlsFront.tls!.ca);
    writeFileSync(files.cert, mtlsFront.tls!.cert);
    writeFileSync(files.key, mtlsFront.tls!.key, { mode: 0o600 });
    const saved = { ...process.env };
    Object.assign(process.env, {
      BUILDKIT_HOST: mtlsFront.address,
      BUILDKIT_TLS_CA: files.ca,
      BUILDKIT_TLS_CERT: files.cert,
      BUILDKIT_TLS_KEY: files.key,
      BUILDKIT_TLS_SERVER_NAME: mtlsFront.tls!.serverName,
    });
    try {
      await using bk = await connect();
      expect(bk.address).toBe(mtlsFront.address);
      expect(await bk.listWorkers()).toEqual(direct);
    } finally {
      process.env = saved;
    }
  });
});

describe("connect() without an address", () => {
  it("falls back to dockerd's socket when BUILDKIT_HOST is unset and there is no buildkitd socket", async ({ skip }) => {
    const { existsSync } = await import("node:fs");
    if (existsSync("/run/buildkit/buildkitd.sock")) skip("a buildkitd socket exists here; discovery would pick it");
    const saved = { ...process.env };
    delete process.env.BUILDKIT_HOST;
    delete process.env.DOCKER_HOST;
    try {
      await using bk = await connect();
      expect(bk.address).toBe("docker://");
      expect(await bk.listWorkers()).toEqual(direct);
    } finally {
      process.env = saved;
    }
  });
});

describe("client lifecycle", () => {
  it("refuses calls after close(), and close() is idempotent", async () => {
    const bk = await connect(DOCKER_BUILDKIT);
    expect(bk.address).toBe(DOCKER_BUILDKIT);
    await bk.close();
    await bk.close();
    await expect(bk.listWorkers()).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
  });

  it("closes the front's connection when the client is disposed", async () => {
    const front = await startBuildKitFront({ buildkit: DOCKER_BUILDKIT });
    try {
      {
        await using bk = await connect(front.address);
        await bk.listWorkers();
        expect(front.active).toBe(1);
      }
      expect(front.connections).toBe(1);
      // Disposing the client closed its socket: the front saw it go.
      await expect.poll(() => front.active).toBe(0);
    } finally {
      await front.stop();
    }
  });
});
