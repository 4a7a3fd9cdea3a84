// Where the real daemons of the test suite are. `scripts/local-buildkit.sh up`
// starts dockerd (BuildKit v0.8 embedded) and the registries, and a standalone
// buildkitd (v0.24, mutual TLS) when its binary is at hand; CI runs it before
// the tests and exports what `local-buildkit.sh env` prints, so there the
// absence of either is a failure, not a skip.
import { existsSync, readFileSync } from "node:fs";
import type { ConnectOptions } from "../../src/index.js";
import type { TlsOptions } from "../../src/transport/tls-options.js";

/** dockerd's embedded BuildKit. */
export const DOCKER_BUILDKIT = process.env.BUILDKIT_NODE_TEST_DOCKER ?? "docker://";

/** The Engine API socket of that dockerd. */
export const DOCKER_SOCKET = DOCKER_BUILDKIT === "docker://" ? "/var/run/docker.sock" : DOCKER_BUILDKIT.slice("docker://".length);

export function assertDockerd(): void {
  if (!existsSync(DOCKER_SOCKET)) {
    throw new Error(`dockerd is not running (no ${DOCKER_SOCKET}): run "bash scripts/local-buildkit.sh up" (as root) first`);
  }
}

/**
 * A standalone buildkitd, when the environment names one (`BUILDKIT_HOST`,
 * with `BUILDKIT_TLS_*` for mutual TLS, as `local-buildkit.sh env` prints).
 * Tests that need it skip loudly otherwise.
 */
export const STANDALONE_BUILDKIT = process.env.BUILDKIT_HOST || undefined;

/** The TLS material `BUILDKIT_TLS_*` names, read as buildctl reads it. */
export const STANDALONE_TLS: TlsOptions | undefined = standaloneTls();

function standaloneTls(): TlsOptions | undefined {
  const env = process.env;
  if (!STANDALONE_BUILDKIT?.startsWith("tcp://") || !env.BUILDKIT_TLS_CA) return undefined;
  const read = (name: string) => (env[name] ? readFileSync(env[name]!, "utf8") : undefined);
  return {
    ca: read("BUILDKIT_TLS_CA")!,
    ...(env.BUILDKIT_TLS_CERT ? { cert: read("BUILDKIT_TLS_CERT")!, key: read("BUILDKIT_TLS_KEY")! } : {}),
    ...(env.BUILDKIT_TLS_SERVER_NAME ? { serverName: env.BUILDKIT_TLS_SERVER_NAME } : {}),
  };
}

export function announceSkip(what: string, why: string): void {
  process.stderr.write(`\n*** SKIPPED: ${what}: ${why} ***\n\n`);
}

export interface BuildDaemon {
  /**
   * For test names: "dockerd" or "buildkitd". `toString()` gives it too, so
   * that `describe.each(BUILD_DAEMONS)("on %s", …)` titles read "on dockerd"
   * (vitest's "$name" would quote it); scripts/test-counts.mjs counts by them.
   */
  name: string;
  address: string;
  /** What `connect(address, …)` needs (TLS for the standalone daemon). */
  connectOptions: ConnectOptions;
  /** What `startLocalDepot`/`startBuildKitFront` take to reach it. */
  backend: { buildkit: string; buildkitTls?: TlsOptions };
  /** dockerd's BuildKit: moby/tar/local exporters only, pushes through the Engine. */
  embeddedInDocker: boolean;
  /**
   * dockerd's Engine socket: what a client reaching its BuildKit through a
   * front must be given as `dockerEngine` to push or save.
   */
  dockerEngine?: string;
  toString(): string;
}

const dockerd: BuildDaemon = {
  name: "dockerd",
  address: DOCKER_BUILDKIT,
  connectOptions: {},
  backend: { buildkit: DOCKER_BUILDKIT },
  embeddedInDocker: true,
  dockerEngine: DOCKER_SOCKET,
  toString: () => "dockerd",
};

const standalone: BuildDaemon | undefined = STANDALONE_BUILDKIT
  ? {
      name: "buildkitd",
      address: STANDALONE_BUILDKIT,
      connectOptions: STANDALONE_TLS ? { tls: STANDALONE_TLS } : {},
      backend: { buildkit: STANDALONE_BUILDKIT, ...(STANDALONE_TLS ? { buildkitTls: STANDALONE_TLS } : {}) },
      embeddedInDocker: false,
      toString: () => "buildkitd",
    }
  : undefined;

/**
 * The daemons every test that takes a daemon runs against: dockerd's BuildKit
 * always, the standalone buildkitd too when BUILDKIT_HOST names one.
 */
export const BUILD_DAEMONS: BuildDaemon[] = [dockerd, ...(standalone ? [standalone] : [])];

/** The standalone daemon when there is one (current BuildKit), else dockerd's. */
export const NEWEST_DAEMON: BuildDaemon = standalone ?? dockerd;

/** The environment naming a test daemon as users' environments do: BUILDKIT_HOST (+ the BUILDKIT_TLS_* files). */
export function daemonEnv(daemon: BuildDaemon): Record<string, string> {
  const tls = daemon.embeddedInDocker ? [] : Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith("BUILDKIT_TLS_") && e[1] !== undefined);
  return { BUILDKIT_HOST: daemon.address, ...Object.fromEntries(tls) };
}

/** Readies a daemon for a test file: dockerd must be running. */
export function assertDaemon(daemon: BuildDaemon): void {
  if (daemon.embeddedInDocker) assertDockerd();
}

if (!STANDALONE_BUILDKIT) {
  announceSkip(
    "tests against a standalone buildkitd (BuildKit v0.24)",
    'BUILDKIT_HOST is not set; only dockerd\'s BuildKit v0.8 is used. Run eval "$(scripts/local-buildkit.sh env)" after "local-buildkit.sh up" with a buildkitd binary at hand',
  );
}
