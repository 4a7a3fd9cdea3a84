// Builds dist/ once before the tests: the CLI (test/cli-harness.ts), the
// examples and the package's own entry points run as users run them, from the
// built package. tsc writes over the previous build in place (no `rm -rf`
// first), so a run started meanwhile never finds dist/ missing.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: root, stdio: "inherit" });
}
