// The build cache, on each test daemon: diskUsage() and prune() over the
// records of a real build, and cache exported to a registry (inline with the
// image, or under its own reference) then imported by a build that no longer
// has the steps locally. Only this file's own records are ever pruned.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildKitClient, type BuildOptions, connect } from "../src/index.js";
import { failureOf, runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const blobBytes = 512 * 1024;

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
  });

  const newMarker = () => `bkn-cache-${randomBytes(6).toString("hex")}`;
  /** A RUN step that writes random bytes: run again, it would write others. */
  const randomStep = (marker: string) => `FROM ${BASE_IMAGE}\nRUN head -c ${blobBytes} /dev/urandom > /${marker} && head -c 16 /${marker} | od -An -tx1 > /${marker}.head\n`;
  const recordsOf = async (marker: string) => (await bk.diskUsage()).filter((r) => r.description.includes(marker));
  /** Removes this test's own records of the step, so that only an imported cache can spare it. */
  async function pruneRecordsOf(marker: string): Promise<void> {
    for (const record of await recordsOf(marker)) await bk.prune({ all: true, filter: [`id==${record.id}`] });
    expect(await recordsOf(marker)).toEqual([]);
  }

  describe("diskUsage() and prune()", () => {
    const marker = newMarker();
    beforeAll(async () => {
      await runCollecting(bk.build({ context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\nRUN head -c ${blobBytes} /dev/urandom > /${marker}\n` }));
    });

    it("diskUsage() lists the records of a build with their sizes and times", async () => {
      const [ours, ...more] = await recordsOf(marker);
      expect(ours, `no cache record mentions ${marker}`).toBeDefined();
      expect(more).toEqual([]);
      expect(ours!.id).not.toBe("");
      // dockerd counts the layer's bytes; buildkitd its overlay directory, metadata blocks included.
      if (daemon.embeddedInDocker) expect(ours!.size).toBe(blobBytes);
      else expect(ours!.size).toBeGreaterThanOrEqual(blobBytes);
      expect(ours!.size).toBeLessThan(blobBytes + 64 * 1024);
      expect(ours!.createdAt).toBeInstanceOf(Date);
      expect(Date.now() - ours!.createdAt!.getTime()).toBeLessThan(10 * 60_000);
      expect(ours!.parents.length).toBeGreaterThan(0); // it sits on the busybox layer
    });

    it("prune() deletes what the filter selects and reports the bytes reclaimed", async () => {
      const [ours] = await recordsOf(marker);
      expect(ours).toBeDefined();
      const result = await bk.prune({ all: true, filter: [`id==${ours!.id}`] });
      expect(result.deleted.map((r) => r.id)).toEqual([ours!.id]);
      expect(result.reclaimedBytes).toBe(ours!.size);
      const after = await bk.diskUsage();
      expect(after.some((r) => r.id === ours!.id)).toBe(false);
    });
  });

  describe("cache in a registry", () => {
    /** Builds the random step with these cache options; returns the step's head bytes and whether the step came from cache. */
    async function build(marker: string, options: Pick<BuildOptions, "cacheFrom" | "cacheTo" | "outputs">): Promise<{ head: string; cached: boolean }> {
      const out = tempDir("cache-out");
      try {
        const { events } = await runCollecting(
          bk.build({
            context: { files: {} },
            // The step is the last: nothing after it could be taken from the cache in its place.
            dockerfileContent: randomStep(marker),
            ...options,
            // dockerd's BuildKit takes one output: the image; the files are read back from a second build there.
            outputs: [...(options.outputs ?? []), ...(daemon.embeddedInDocker && options.outputs ? [] : [{ type: "local" as const, dest: out.path }])],
          }),
        );
        const step = (e: (typeof events)[number]) => "name" in e && e.name.includes(`> /${marker} &&`);
        return {
          head: daemon.embeddedInDocker && options.outputs ? "" : readFileSync(join(out.path, `${marker}.head`), "utf8"),
          cached: events.some((e) => e.type === "vertex.cached" && step(e)) && !events.some((e) => e.type === "log" && step(e)),
        };
      } finally {
        out.remove();
      }
    }

    it("inline: the pushed image carries the cache, and a build that imports it reuses the step", async () => {
      const marker = newMarker();
      const image = `${PLAIN_REGISTRY}/${uniqueRepository("bkn-inline-cache")}:v1`;
      const first = await build(marker, { cacheTo: [{ type: "inline" }], outputs: [{ type: "image", name: image, push: true, insecure: true }] });
      expect(first.cached).toBe(false);
      // dockerd's BuildKit keeps the step's layer in the image it stored in dockerd: remove that too.
      if (daemon.embeddedInDocker) execFileSync("/usr/bin/docker", ["rmi", "-f", image], { stdio: "ignore" });
      await pruneRecordsOf(marker);
      const second = await build(marker, { cacheFrom: [{ type: "registry", ref: image }] });
      expect(second.cached).toBe(true);
      if (!daemon.embeddedInDocker) expect(second.head).toBe(first.head); // the very bytes of the first run
    });

    it("registry (mode=max): exported under its own reference and imported", async () => {
      const marker = newMarker();
      const ref = `${PLAIN_REGISTRY}/${uniqueRepository("bkn-registry-cache")}:cache`;
      if (daemon.embeddedInDocker) {
        // dockerd's BuildKit exports cache only inline: refused before anything runs.
        const { error, events } = await failureOf(
          bk.build({ context: { files: {} }, dockerfileContent: randomStep(marker), cacheTo: [`type=registry,ref=${ref},mode=max`] }),
        );
        expect(error).toMatchObject({ code: "UNIMPLEMENTED" });
        expect((error as Error).message).toMatch(/exports cache only inline/);
        expect(events).toEqual([]);
        return;
      }
      const first = await build(marker, { cacheTo: [`type=registry,ref=${ref},mode=max,registry.insecure=true`] });
      expect(first.cached).toBe(false);
      const [repository, tag] = ref.slice(PLAIN_REGISTRY.length + 1).split(":") as [string, string];
      // The cache's own manifest: its config is BuildKit's cache config, not an image's.
      expect((await getManifest(PLAIN_REGISTRY, repository, tag)).config.mediaType).toBe("application/vnd.buildkit.cacheconfig.v0");
      await pruneRecordsOf(marker);
      const second = await build(marker, { cacheFrom: [`type=registry,ref=${ref},registry.insecure=true`] });
      expect(second.cached).toBe(true);
      expect(second.head).toBe(first.head);
    });

    it("local: refused with what to use instead (it needs a content store the client would serve)", async () => {
      const { error, events } = await failureOf(
        bk.build({ context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\n`, cacheTo: [{ type: "local", dest: "/tmp/never-written" }] }),
      );
      expect(error).toMatchObject({ code: "UNIMPLEMENTED" });
      expect((error as Error).message).toMatch(/cacheTo: type "local" .* use type "registry"/);
      expect(events).toEqual([]);
    });
  });
});
