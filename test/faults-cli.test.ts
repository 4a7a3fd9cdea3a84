// The command facing the same faults: tar ceilings as flags for a context on
// stdin, and a builder address that is not BuildKit (which once killed the
// process with an unhandled HTTP/2 error).
import * as http from "node:http";
import type * as net from "node:net";
import { describe, expect, it } from "vitest";
import { runCli, scratchDir } from "./cli-harness.js";
import { assertDaemon, BUILD_DAEMONS, type BuildDaemon } from "./support/daemons.js";
import { gzipBomb } from "./support/faults.js";
import { BASE_IMAGE } from "./support/registry.js";

/** `--builder` and the `--tls*` flags reaching `daemon` (its TLS material is in BUILDKIT_TLS_* files). */
function builderFlags(daemon: BuildDaemon): string[] {
  const flags = ["--builder", daemon.address];
  const env = process.env;
  if (daemon.connectOptions.tls) {
    flags.push("--tlscacert", env.BUILDKIT_TLS_CA!, "--tlscert", env.BUILDKIT_TLS_CERT!, "--tlskey", env.BUILDKIT_TLS_KEY!);
    if (env.BUILDKIT_TLS_SERVER_NAME) flags.push("--tlsservername", env.BUILDKIT_TLS_SERVER_NAME);
  }
  return flags;
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  // 128 MiB of zeros in about 130 KB of gzip: 1000 times.
  const zeros = Buffer.concat(gzipBomb(`FROM ${BASE_IMAGE}\n`, 128 * 1024 ** 2));

  it("a gzip archive on stdin past --max-compression-ratio is refused (exit 1, RESOURCE_EXHAUSTED's message); raised, it builds", async () => {
    assertDaemon(daemon);
    const refused = await runCli(["build", ...builderFlags(daemon), "--progress=plain", "--max-compression-ratio", "50", "-"], { input: zeros });
    expect(refused.code, refused.stderr).toBe(1);
    expect(refused.stderr).toMatch(/ERROR: tar upload: .* over 50× \(tarLimits\.maxCompressionRatio\); a compression bomb\?/);
    expect(refused.stderr).not.toMatch(/\n\s+at /); // a message, not a stack

    const built = await runCli(["build", ...builderFlags(daemon), "--progress=plain", "--max-compression-ratio", "2000", "-"], { input: zeros });
    expect(built.code, built.stderr).toBe(0);
  });

  it("a tar archive on stdin past --max-context-size is refused", async () => {
    assertDaemon(daemon);
    const result = await runCli(["build", ...builderFlags(daemon), "--progress=plain", "--max-context-size", "64MiB", "-"], { input: zeros });
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toMatch(/ERROR: tar upload: larger than 64 MiB once decompressed \(tarLimits\.maxBytes\)/);
  });
});

describe("tar ceiling flags", () => {
  it.each([
    [["--max-context-size", "1k", "."], /--max-context-size applies to a tar archive on stdin \(CONTEXT "-"\), not to a directory/],
    [["--max-context-size", "12zz", "-"], /--max-context-size "12zz" is not a size like 8GiB, 500MB or 1048576/],
    [["--max-compression-ratio", "0", "-"], /--max-compression-ratio "0" must be a positive number/],
    [["--max-context-entries", "lots", "-"], /--max-context-entries "lots" must be a positive number/],
  ])("%j: usage error (exit 2) naming the flag", async (args, message) => {
    const dir = scratchDir("tar-flags", { Dockerfile: `FROM ${BASE_IMAGE}\n` });
    try {
      const result = await runCli(["build", ...args], { cwd: dir.path, input: "" });
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toMatch(message);
    } finally {
      dir.remove();
    }
  });
});

describe("a --builder that is not BuildKit", () => {
  it("dockerd's Engine API socket: exit 1 naming what answered, not a crash", async () => {
    assertDaemon(BUILD_DAEMONS[0]!);
    const result = await runCli(["workers", "--builder", "unix:///var/run/docker.sock"]);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toMatch(/^ERROR: unix:\/\/\/var\/run\/docker\.sock is not a BuildKit daemon: an HTTP\/1\.1 server answered \("HTTP\/1\.1 \d{3} [^"]*"\), not HTTP\/2\n$/);
  });

  it("an HTTP/1.1 port: exit 1 naming what answered, not a crash", async () => {
    const server = http.createServer((_req, res) => res.end("hi"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const address = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
      const result = await runCli(["workers", "--builder", address]);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toBe(`ERROR: ${address} is not a BuildKit daemon: an HTTP/1.1 server answered ("HTTP/1.1 400 Bad Request"), not HTTP/2\n`);
    } finally {
      server.close();
    }
  });
});
