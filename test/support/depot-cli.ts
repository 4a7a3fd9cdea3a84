// Runs Depot's released CLI (npm @depot/cli-linux-x64) against a local
// Depot, in a home of its own so no user's login or config is read.
import { execFile, spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { rootCertificates } from "node:tls";
import type { LocalDepot } from "../../src/testing/index.js";

const require = createRequire(import.meta.url);

/** The `depot` binary, or undefined on a machine the package does not install for (not linux/x64). */
export const DEPOT_BINARY: string | undefined = (() => {
  try {
    const binary = join(dirname(require.resolve("@depot/cli-linux-x64/package.json")), "bin", "depot");
    return existsSync(binary) ? binary : undefined;
  } catch {
    return undefined;
  }
})();

export interface DepotRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment the CLI needs against `local`: its API and organization
 * token (also as the `depot login` token), the proxy and CA `depot push`
 * needs, no update check, and dockerd 20.10's highest API version.
 */
export function depotEnvironment(local: LocalDepot, home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const caFile = join(home, "ca-bundle.pem");
  if (!existsSync(caFile)) writeFileSync(caFile, [local.caCertificate, ...rootCertificates].join("\n"));
  return {
    PATH: process.env.PATH,
    HOME: home,
    XDG_CONFIG_HOME: join(home, ".config"),
    DOCKER_CONFIG: join(home, ".docker"),
    DEPOT_API_URL: local.apiUrl,
    DEPOT_TOKEN: local.token,
    DEPOT_API_TOKEN: local.token,
    DEPOT_NO_UPDATE_NOTIFIER: "1",
    DOCKER_API_VERSION: "1.41",
    HTTPS_PROXY: local.httpsProxy,
    SSL_CERT_FILE: caFile,
    ...extra,
  };
}

/** Runs `depot ARGS…` to its end (never synchronously: the local Depot answers from this process). */
export function runDepot(args: string[], options: { env: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number }): Promise<DepotRun> {
  return new Promise((resolve) => {
    execFile(
      DEPOT_BINARY!,
      args,
      { env: options.env, cwd: options.cwd, timeout: options.timeoutMs ?? 240_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const failure = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        resolve({
          code: failure ? (typeof failure.code === "number" ? failure.code : null) : 0,
          signal: failure?.signal ?? null,
          stdout,
          stderr,
        });
      },
    );
  });
}

/** Starts `depot ARGS…` for a test to signal; `done` resolves when it exits. */
export function startDepot(args: string[], options: { env: NodeJS.ProcessEnv; cwd?: string }) {
  const child = spawn(DEPOT_BINARY!, args, { env: options.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<DepotRun>((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}
