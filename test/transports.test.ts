// The transports, on each test daemon: docker:// (dockerd's own), buildkitd's
// own unix socket, and each daemon behind the byte-level fronts from
// buildkit-node/testing: a unix socket, and TCP with mutual TLS.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type Worker } from "../src/index.js";
import { type BuildKitFront, startBuildKitFront } from "../src/testing/index.js";
import { assertDaemon, assertDockerd, BUILD_DAEMONS, DOCKER_BUILDKIT } from "./support/daemons.js";

/** buildkitd's own (plaintext) unix socket, as `local-buildkit.sh env` names it. */
const BUILDKITD_SOCKET = process.env.BUILDKIT_NODE_BUILDKITD_SOCKET;

function expectRealWorkers(workers: Worker[]): void {
  expect(workers.length).toBeGreaterThan(0);
  for (const worker of workers) {
    expect(worker.id).not.toBe("");
    expect(worker.platforms.length).toBeGreaterThan(0);
    for (const platform of worker.platforms) expect(platform).toMatch(/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/);
  }
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let direct: Worker[];
  let unixFront: BuildKitFront;
  let mtlsFront: BuildKitFront;
  let dir: string;

  beforeAll(async () => {
    assertDaemon(daemon);
    dir = mkdtempSync(join(tmpdir(), "bkn-transports-"));
    unixFront = await startBuildKitFront({ ...daemon.backend, unixSocket: join(dir, "buildkitd.sock") });
    mtlsFront = await startBuildKitFront({ ...daemon.backend, mtls: true });
    await using bk = await connect(daemon.address, daemon.connectOptions);
    direct = await bk.listWorkers();
    expectRealWorkers(direct);
  });

  afterAll(async () => {
    await unixFront?.stop();
    await mtlsFront?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  describe("unix://", () => {
    it("lists the same workers through a unix socket", async () => {
      await using bk = await connect(unixFront.address);
      expect(unixFront.address).toMatch(/^unix:\/\/\//);
      expect(await bk.listWorkers()).toEqual(direct);
    });

    it("lists the same workers on the daemon's own socket (dockerd's Engine socket, buildkitd's unix socket)", async () => {
      if (daemon.embeddedInDocker) {
        await using bk = await connect(DOCKER_BUILDKIT);
        expect(await bk.listWorkers()).toEqual(direct);
        return;
      }
      expect(BUILDKITD_SOCKET, "BUILDKIT_NODE_BUILDKITD_SOCKET (local-buildkit.sh env) names buildkitd's socket").toMatch(/^unix:\/\/\//);
      await using bk = await connect(BUILDKITD_SOCKET!);
      expect(await bk.listWorkers()).toEqual(direct);
    });
  });

  describe("tcp:// with mutual TLS", () => {
    it("lists the same workers, checking the server name rather than the address", async () => {
      const before = mtlsFront.connections;
      await using bk = await connect(mtlsFront.address, { tls: mtlsFront.tls! });
      expect(mtlsFront.tls!.serverName).not.toMatch(/^127\./);
      expect(await bk.listWorkers()).toEqual(direct);
      expect(mtlsFront.connections).toBe(before + 1);
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

  describe("client lifecycle", () => {
    it("refuses calls after close(), and close() is idempotent", async () => {
      const bk = await connect(daemon.address, daemon.connectOptions);
      expect(bk.address).toBe(daemon.address);
      await bk.close();
      await bk.close();
      await expect(bk.listWorkers()).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    });

    it("closes the front's connection when the client is disposed", async () => {
      const front = await startBuildKitFront(daemon.backend);
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
});

describe("on dockerd: docker:// and discovery", () => {
  beforeAll(() => assertDockerd());

  it("docker:// lists the workers of dockerd's BuildKit (its single moby worker)", async () => {
    await using bk = await connect(DOCKER_BUILDKIT);
    const workers = await bk.listWorkers();
    expectRealWorkers(workers);
    expect(workers.map((w) => w.id)).toEqual(["moby"]);
    expect(workers.flatMap((w) => w.platforms)).toContain(`linux/${process.arch === "x64" ? "amd64" : process.arch}`);
  });

  it("connect() falls back to dockerd's socket when BUILDKIT_HOST is unset and there is no buildkitd socket", async ({ skip }) => {
    // Discovery tries /run/buildkit/buildkitd.sock first (the test buildkitd listens elsewhere).
    if (existsSync("/run/buildkit/buildkitd.sock")) skip("a buildkitd socket exists at the default path here; discovery would pick it");
    const saved = { ...process.env };
    delete process.env.BUILDKIT_HOST;
    delete process.env.DOCKER_HOST;
    try {
      await using bk = await connect();
      expect(bk.address).toBe("docker://");
      expect((await bk.listWorkers()).map((w) => w.id)).toEqual(["moby"]);
    } finally {
      process.env = saved;
    }
  });
});
