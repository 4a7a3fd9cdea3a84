// Builds dist/ once, afresh, before the tests: the CLI (test/cli-harness.ts),
// the examples and the package's own entry points run as users run them,
// from the built package.
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const root = fileURLToPath(new URL("../..", import.meta.url));
  rmSync(`${root}/dist`, { recursive: true, force: true }); // nothing left from sources since removed
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: root, stdio: "inherit" });
}
