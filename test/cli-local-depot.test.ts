// `buildkit-node local-depot` as a CI job runs it: in the background, its
// environment read from --export-file, Depot's clients pointed at it, then
// stopped with a signal.
import { existsSync, readFileSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DepotClient } from "../src/depot/index.js";
import { cliEnv, runCli, scratchDir, startCli } from "./cli-harness.js";
import { assertDaemon, BUILD_DAEMONS, STANDALONE_BUILDKIT } from "./support/daemons.js";
import { BASE_IMAGE } from "./support/registry.js";

/** The --buildkit and --tls* flags that reach `daemon`, TLS as file paths from BUILDKIT_TLS_*. */
function daemonFlags(address: string): string[] {
  const env = process.env;
  if (address !== STANDALONE_BUILDKIT || !env.BUILDKIT_TLS_CA) return ["--buildkit", address];
  return [
    "--buildkit",
    address,
    "--tlscacert",
    env.BUILDKIT_TLS_CA,
    ...(env.BUILDKIT_TLS_CERT ? ["--tlscert", env.BUILDKIT_TLS_CERT, "--tlskey", env.BUILDKIT_TLS_KEY!] : []),
    ...(env.BUILDKIT_TLS_SERVER_NAME ? ["--tlsservername", env.BUILDKIT_TLS_SERVER_NAME] : []),
  ];
}

function exports(text: string): Record<string, string> {
  return Object.fromEntries(text.trim().split("\n").map((line) => /^export ([A-Z_]+)=(\S+)$/.exec(line)!.slice(1) as [string, string]));
}

const refused = (port: number) =>
  new Promise<unknown>((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => resolve(socket.destroy()));
    socket.on("error", resolve);
  });

describe("buildkit-node local-depot, its command line", () => {
  it("explains itself with --help", async () => {
    const run = await runCli(["local-depot", "--help"]);
    expect(run.code).toBe(0);
    const help = run.stdout.toString();
    for (const flag of ["--buildkit ADDRESS", "--tlscacert PATH", "--port PORT", "--registry HOST:PORT", "--depot-registry-port PORT", "--project NAME", "--export-file PATH"]) {
      expect(help).toContain(flag);
    }
  });

  it.each([
    [["--port", "http"], /--port must be a port number/],
    [["--compression", "zstd"], /--compression is gzip or identity/],
    [["--depot-registry-port", "eighty"], /--depot-registry-port must be a port number/],
    [["--registry", "none", "--depot-registry-port", "80"], /--depot-registry-port needs a saved-image registry/],
    [["--tlscert", "/nonexistent/cert.pem"], /--tlscert: cannot read \/nonexistent\/cert.pem/],
  ])("refuses %j as bad usage (exit 2)", async (flags, message) => {
    const run = await runCli(["local-depot", "--buildkit", "docker://", ...flags]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  it("ends at once (exit 1) when a port it was given is taken, saying which, before printing any token", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as net.AddressInfo;
    try {
      for (const [flag, what] of [["--port", "the local Depot API"], ["--depot-registry-port", "a registry front"]] as const) {
        const cli = await startCli(["local-depot", "--buildkit", "docker://", flag, String(port)]);
        await expect(cli.waitForStderr(/stop it with Ctrl-C/)).rejects.toThrow(/ended before its stderr matched/);
        const run = await cli.exited;
        expect(run.code, flag).toBe(1);
        expect(run.stderr).toBe(`ERROR: ${what} cannot listen on 127.0.0.1:${port}: the port is in use\n`);
        expect(run.stdout.toString()).toBe("");
      }
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});

describe.each(BUILD_DAEMONS)("on %s: buildkit-node local-depot in front of it", (daemon) => {
  const scratch = scratchDir("local-depot");
  const exportFile = join(scratch.path, "depot.env");
  let cli: Awaited<ReturnType<typeof startCli>>;
  let env: Record<string, string>;

  beforeAll(async () => {
    assertDaemon(daemon);
    cli = await startCli(["local-depot", ...daemonFlags(daemon.address), "--project", "ci", "--export-file", exportFile], { env: cliEnv() });
    await cli.waitForStderr(/stop it with Ctrl-C/);
    env = exports(readFileSync(exportFile, "utf8"));
  });

  afterAll(async () => {
    cli?.child.kill("SIGKILL");
    scratch.remove();
  });

  it(`on ${daemon.name}: prints the environment Depot's clients read, and the same lines to --export-file`, async () => {
    expect(Object.keys(env)).toEqual(["DEPOT_API_URL", "DEPOT_TOKEN", "DEPOT_API_TOKEN", "DEPOT_PROJECT_ID", "HTTPS_PROXY", "SSL_CERT_FILE"]);
    expect(env.DEPOT_API_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(env.DEPOT_API_TOKEN).toBe(env.DEPOT_TOKEN);
    expect(readFileSync(env.SSL_CERT_FILE!, "utf8")).toContain("-----BEGIN CERTIFICATE-----");
  });

  it(`on ${daemon.name}: builds through it with its project, on that BuildKit`, async () => {
    const depot = new DepotClient({ token: env.DEPOT_TOKEN!, apiUrl: env.DEPOT_API_URL! });
    const projects = await depot.projects.list();
    expect(projects.map((p) => [p.projectId, p.name])).toEqual([[env.DEPOT_PROJECT_ID, "ci"]]);
    const result = await depot.build({
      projectId: env.DEPOT_PROJECT_ID!,
      context: { files: {} },
      dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo local-depot-${daemon.name}-${Date.now()}\n`,
    });
    expect(result.buildUrl).toBe(`${env.DEPOT_API_URL}/orgs/org-local/projects/${env.DEPOT_PROJECT_ID}/builds/${result.buildId}`);
    expect(result.platforms).toHaveLength(1);
  });

  it(`on ${daemon.name}: stops cleanly on SIGTERM: exit 0, its port closed, its CA file gone`, async () => {
    cli.child.kill("SIGTERM");
    const run = await cli.exited;
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("local Depot stopping");
    expect(await refused(Number(new URL(env.DEPOT_API_URL!).port))).toMatchObject({ code: "ECONNREFUSED" });
    expect(existsSync(env.SSL_CERT_FILE!)).toBe(false);
  });
});
