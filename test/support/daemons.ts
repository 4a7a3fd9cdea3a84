// Where the real daemons of the test suite are. `scripts/local-buildkit.sh up`
// starts dockerd (BuildKit v0.8 embedded) and the registries; CI runs it
// before the tests, so their absence is a failure, not a skip.
import { existsSync } from "node:fs";

/** dockerd's embedded BuildKit. */
export const DOCKER_BUILDKIT = process.env.BUILDKIT_NODE_TEST_DOCKER ?? "docker://";

export function assertDockerd(): void {
  const socket = DOCKER_BUILDKIT === "docker://" ? "/var/run/docker.sock" : DOCKER_BUILDKIT.slice("docker://".length);
  if (!existsSync(socket)) {
    throw new Error(`dockerd is not running (no ${socket}): run "sudo scripts/local-buildkit.sh up" first`);
  }
}

/**
 * A standalone buildkitd, when the environment names one. Tests that need it
 * skip loudly otherwise.
 */
export const STANDALONE_BUILDKIT = process.env.BUILDKIT_HOST;

export function announceSkip(what: string, why: string): void {
  process.stderr.write(`\n*** SKIPPED: ${what}: ${why} ***\n\n`);
}

export interface BuildDaemon {
  /** For test names. */
  name: string;
  address: string;
  /** dockerd's BuildKit: moby/tar/local exporters only, pushes through the Engine. */
  embeddedInDocker: boolean;
}

/**
 * The daemons the end-to-end build tests run against: dockerd's BuildKit
 * always, a standalone buildkitd too when BUILDKIT_HOST names one.
 */
export const BUILD_DAEMONS: BuildDaemon[] = [
  { name: "dockerd", address: DOCKER_BUILDKIT, embeddedInDocker: true },
  ...(STANDALONE_BUILDKIT ? [{ name: "buildkitd", address: STANDALONE_BUILDKIT, embeddedInDocker: false }] : []),
];

if (!STANDALONE_BUILDKIT) announceSkip("build tests against a standalone buildkitd", "BUILDKIT_HOST is not set; only dockerd's BuildKit is used");
