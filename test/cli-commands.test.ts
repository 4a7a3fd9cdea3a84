// The `buildkit-node` command as users run it (a child process): help,
// version, usage errors, workers, du, builders behind mutual TLS, unreachable
// builders, and Ctrl-C in the middle of a build, on each test daemon.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { startBuildKitFront } from "../src/testing/index.js";
import { assertDaemon, BUILD_DAEMONS, daemonEnv } from "./support/daemons.js";
import { BASE_IMAGE } from "./support/registry.js";
import { builderFlags, cliBinary, cliEnv, ROOT, runCli, scratchDir, startCli } from "./cli-harness.js";

beforeAll(async () => {
  await cliBinary();
});

describe("help and version", () => {
  const commands = ["build", "workers", "du", "projects list", "projects get", "projects create", "projects delete"];

  it.each(commands)("%s --help and -h print the command's usage and flags", async (name) => {
    const command = name.split(" ");
    for (const flag of ["--help", "-h"]) {
      const result = await runCli([...command, flag]);
      expect(result.code).toBe(0);
      const help = result.stdout.toString();
      expect(help).toContain(`Usage: buildkit-node ${command.join(" ")}`);
      expect(help).toMatch(/-h, --help/);
    }
  });

  it("lists the commands with no arguments, and prints the package version", async () => {
    const help = await runCli([]);
    expect(help.code).toBe(0);
    for (const name of ["build", "workers", "du", "projects"]) expect(help.stdout.toString()).toMatch(new RegExp(`^  ${name} `, "m"));
    const version = await runCli(["--version"]);
    const { version: expected } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
    expect(version.stdout.toString()).toBe(`buildkit-node ${expected}\n`);
  });

  it("documents the build flags buildx users expect", async () => {
    const help = (await runCli(["build", "--help"])).stdout.toString();
    for (const flag of ["-f, --file", "--target", "--build-arg", "--label", "--platform", "--no-cache", "--pull", "-t, --tag", "--push", "--load", "-o, --output", "--cache-from", "--cache-to", "--secret", "--ssh", "--provenance", "--progress", "--metadata-file", "--builder", "--tlscacert", "--tlscert", "--tlskey", "--tlsservername", "--docker-engine", "--depot", "--token"]) {
      expect(help).toContain(flag);
    }
  });
});

describe("bad usage", () => {
  const cases: [string, string[], RegExp][] = [
    ["an unknown flag", ["build", "--bogus", "."], /unknown flag: --bogus/],
    ["a flag without its value", ["build", "-t"], /-t\/--tag needs a value/],
    ["an unknown progress mode", ["build", "--progress=fancy", "fixtures/hello"], /--progress "fancy"/],
    ["an unknown output type", ["build", "-o", "type=nope,dest=x", "fixtures/hello"], /-o\/--output "type=nope,dest=x": unknown type "nope"/],
    ["an output key the type does not take", ["build", "-o", "type=local,dest=x,compression=zstd", "fixtures/hello"], /type=local takes dest, not "compression"/],
    ["--push without a tag", ["build", "--push", "fixtures/hello"], /--push needs at least one -t\/--tag/],
    ["an image name Docker would refuse", ["build", "-t", "127.0.0.1:5000/App:v1", "fixtures/hello"], /-t\/--tag: invalid image reference "127.0.0.1:5000\/App:v1": the repository name "App" must be lowercase/],
    ["a secret file that does not exist", ["build", "--secret", "id=npmrc,src=/nonexistent/npmrc", "fixtures/hello"], /--secret id=npmrc: cannot read \/nonexistent\/npmrc \(ENOENT\)/],
    ["a malformed platform", ["build", "--platform", "linux", "fixtures/hello"], /--platform "linux"/],
    ["a context that is not a directory", ["build", "no/such/dir"], /CONTEXT "no\/such\/dir" is not a directory/],
    ["a missing Dockerfile", ["build", "-f", "nope/Dockerfile", "fixtures/hello"], /-f\/--file: no file at nope\/Dockerfile/],
    ["a boolean flag given a value", ["build", "--no-cache=maybe", "fixtures/hello"], /--no-cache takes no value, or true\/false/],
    ["an unknown command", ["bild"], /unknown command "bild" \(did you mean "build"\?\)/],
    ["an extra argument", ["workers", "extra"], /"workers" takes no arguments/],
    ["a TLS file that cannot be read", ["workers", "--builder", "tcp://127.0.0.1:1", "--tlscacert", "/nonexistent/ca.pem"], /--tlscacert: cannot read \/nonexistent\/ca.pem/],
  ];

  it.each(cases)("%s exits 2, names the flag and points to --help", async (_what, args, message) => {
    const result = await runCli(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).toMatch(/Run 'buildkit-node( [a-z]+)* --help' for usage\./);
    expect(result.stdout.length).toBe(0);
  });
});

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  beforeAll(() => assertDaemon(daemon));

  describe("workers and du", () => {
    it("workers --json prints the daemon's workers as JSON", async () => {
      const result = await runCli(["workers", "--json", ...builderFlags(daemon)]);
      expect(result.code, result.stderr).toBe(0);
      const workers = JSON.parse(result.stdout.toString()) as { id: string; platforms: string[]; labels: Record<string, string> }[];
      expect(workers.length).toBeGreaterThan(0);
      expect(workers[0]!.platforms).toContain("linux/amd64");
      expect(typeof workers[0]!.labels).toBe("object");
      // dockerd's single worker is "moby"; buildkitd's OCI worker has an id of its own and says what it is.
      if (daemon.embeddedInDocker) expect(workers.map((w) => w.id)).toEqual(["moby"]);
      else expect(workers[0]!.labels).toMatchObject({ "org.mobyproject.buildkit.worker.executor": "oci" });
    });

    it("workers prints a table, on the builder BUILDKIT_HOST (and BUILDKIT_TLS_*) name", async () => {
      const result = await runCli(["workers"], { env: cliEnv(daemonEnv(daemon)) });
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout.toString()).toMatch(/^ID\s+PLATFORMS/m);
      expect(result.stdout.toString()).toMatch(/linux\/amd64/);
    });

    it("du prints the cache records with sizes and totals, and --json for scripts", async () => {
      const table = await runCli(["du", ...builderFlags(daemon)]);
      expect(table.code, table.stderr).toBe(0);
      const text = table.stdout.toString();
      expect(text).toMatch(/^Total:\s+\d+(\.\d+)?[kMGT]?B$/m);
      expect(text).toMatch(/^Reclaimable:\s+\d/m);
      const json = await runCli(["du", "--json", ...builderFlags(daemon)]);
      expect(json.code).toBe(0);
      const records = JSON.parse(json.stdout.toString()) as { id: string; size: number }[];
      // Both daemons hold the cache of the suite's own builds.
      expect(records.length).toBeGreaterThan(0);
      expect(text).toMatch(/^ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED\s+DESCRIPTION/m);
      expect(text).toContain(records[0]!.id);
      expect(typeof records[0]!.size).toBe("number");
    });
  });

  describe("a builder behind mutual TLS", () => {
    it("reads --tlscacert, --tlscert, --tlskey from files and checks --tlsservername", async () => {
      await using front = await startBuildKitFront({ ...daemon.backend, mtls: { serverName: "builder.cli.test" } });
      const dir = scratchDir("mtls", { "ca.pem": String(front.tls!.ca), "cert.pem": String(front.tls!.cert), "key.pem": String(front.tls!.key) });
      try {
        const tlsFlags = ["--tlscacert", join(dir.path, "ca.pem"), "--tlscert", join(dir.path, "cert.pem"), "--tlskey", join(dir.path, "key.pem")];
        const ok = await runCli(["workers", "--json", "--builder", front.address, ...tlsFlags, "--tlsservername", "builder.cli.test"]);
        expect(ok.code, ok.stderr).toBe(0);
        expect((JSON.parse(ok.stdout.toString()) as unknown[]).length).toBeGreaterThan(0);

        const wrongName = await runCli(["workers", "--builder", front.address, ...tlsFlags, "--tlsservername", "someone-else.test"]);
        expect(wrongName.code).toBe(1);
        expect(wrongName.stderr).toMatch(/^ERROR: TLS .*failed: .*someone-else\.test/m);
        expect(wrongName.stderr).toContain(front.address);
        expect(wrongName.stderr).not.toContain(String(front.tls!.key).split("\n")[1]);
      } finally {
        dir.remove();
      }
    });
  });

  describe("Ctrl-C", () => {
    it("SIGINT aborts a running build, waits for it to settle and exits 130 without waiting for the step", async () => {
      const marker = `bkn-sigint-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
      // The `&& echo` keeps the shell alive with the marker in its command line.
      const ctx = scratchDir("sigint", { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo started-${marker} && sleep 60 && echo ${marker}-done\n` });
      try {
        const cli = await startCli(["build", "--no-cache", "--progress=plain", ...builderFlags(daemon), ctx.path]);
        await cli.waitForStderr(new RegExp(`^#\\d+ \\d+\\.\\d{3} started-${marker}$`, "m"));
        expect(buildProcesses(marker).length).toBeGreaterThan(0);
        cli.child.kill("SIGINT");
        const result = await cli.exited;
        expect(result.signal).toBeNull();
        expect(result.code).toBe(130);
        expect(result.stderr).not.toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} ${marker}-done$`, "m")); // stopped, not waited for
        expect(result.stderr).toMatch(/^#\d+ CANCELED$/m);
        expect(result.stderr).toMatch(/^ERROR: build canceled \(SIGINT\)$/m);
        // Nothing of ours lives on: no child of the command, and BuildKit stopped the step.
        expect(childrenOf(cli.child.pid!)).toEqual([]);
        await expect.poll(() => buildProcesses(marker), { timeout: 10_000, interval: 250 }).toEqual([]);
      } finally {
        ctx.remove();
      }
    });
  });
});

describe("errors a person can act on", () => {
  it("an unreachable builder names the address and exits 1", async () => {
    const port = await closedPort();
    const result = await runCli(["workers", "--builder", `tcp://127.0.0.1:${port}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(new RegExp(`^ERROR: .*tcp://127\\.0\\.0\\.1:${port}.*connection refused`, "m"));
  });

  it("a builder found by discovery says what was tried", async () => {
    const result = await runCli(["build", "fixtures/hello"], { env: cliEnv({ BUILDKIT_HOST: "unix:///nonexistent/buildkitd.sock" }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("unix:///nonexistent/buildkitd.sock");
  });

  it("never prints a token or key material", async () => {
    const dir = scratchDir("tls");
    try {
      const keyMarker = "PRIVATE-KEY-MATERIAL-MARKER";
      writeFileSync(join(dir.path, "key.pem"), `-----BEGIN PRIVATE KEY-----\n${keyMarker}\n-----END PRIVATE KEY-----\n`);
      writeFileSync(join(dir.path, "cert.pem"), "-----BEGIN CERTIFICATE-----\nCERT-MARKER\n-----END CERTIFICATE-----\n");
      const tls = await runCli(["workers", "--builder", `tcp://127.0.0.1:${await closedPort()}`, "--tlscert", join(dir.path, "cert.pem"), "--tlskey", join(dir.path, "key.pem")]);
      expect(tls.code).not.toBe(0);
      expect(tls.stderr).not.toContain(keyMarker);
      const token = "depot-token-that-must-not-leak";
      const depot = await runCli(["projects", "list", "--token", token], { env: cliEnv({ DEPOT_API_URL: `http://127.0.0.1:${await closedPort()}` }) });
      expect(`${depot.stdout}${depot.stderr}`).not.toContain(token);
    } finally {
      dir.remove();
    }
  });
});

/** Processes whose command line carries `marker` (the build step's shell). */
function buildProcesses(marker: string): string[] {
  return execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" })
    .split("\n")
    .filter((line) => line.includes(`started-${marker}`) && !line.includes("buildkit-node"));
}

function childrenOf(pid: number): string[] {
  return execFileSync("ps", ["-eo", "pid=,ppid=,args="], { encoding: "utf8" })
    .split("\n")
    .filter((line) => line.trim().split(/\s+/)[1] === String(pid));
}

/** A local port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
