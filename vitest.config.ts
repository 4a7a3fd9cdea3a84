import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Tests talk to real daemons (dockerd's BuildKit, registries).
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    globalSetup: ["test/support/global-setup.ts"],
    // The JSON report feeds scripts/test-counts.mjs (passed/failed/skipped per daemon).
    reporters: ["default", ["json", { outputFile: "test-results/vitest.json" }]],
  },
});
