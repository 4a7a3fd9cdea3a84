// Counts the results of a test run per daemon, from vitest's JSON report:
// tests under a describe (at any depth) titled "on dockerd…" ran on dockerd's
// BuildKit, "on buildkitd…" on the standalone buildkitd, the rest took no daemon.
//   node scripts/test-counts.mjs [REPORT] [--require-buildkitd]
// With --require-buildkitd it fails when no test passed on buildkitd (CI runs
// every daemon test on both daemons; none there means the daemon was missed).
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
const requireBuildkitd = args.includes("--require-buildkitd");
const report = args.find((a) => !a.startsWith("--")) ?? "test-results/vitest.json";

const results = JSON.parse(readFileSync(report, "utf8"));
const groups = { dockerd: count(), buildkitd: count(), "no daemon": count() };
for (const file of results.testResults) {
  for (const test of file.assertionResults) {
    const on = (daemon) => test.ancestorTitles.some((title) => new RegExp(`^on ${daemon}\\b`).test(title));
    const group = on("dockerd") ? "dockerd" : on("buildkitd") ? "buildkitd" : "no daemon";
    const status = test.status === "passed" || test.status === "failed" ? test.status : "skipped";
    groups[group][status]++;
  }
}

console.log("tests       passed  failed  skipped");
for (const [name, c] of Object.entries(groups)) {
  console.log(`${name.padEnd(10)} ${String(c.passed).padStart(7)} ${String(c.failed).padStart(7)} ${String(c.skipped).padStart(8)}`);
}
if (requireBuildkitd && groups.buildkitd.passed === 0) {
  console.error("no test passed on buildkitd: the standalone BuildKit was not used (is BUILDKIT_HOST set?)");
  process.exit(1);
}

function count() {
  return { passed: 0, failed: 0, skipped: 0 };
}
