// depot.build() end to end: the local Depot-compatible server (a stand-in
// for Depot's cloud API, the one part no real component here provides) hands
// out mTLS machines fronting a real BuildKit (dockerd's, and the standalone
// buildkitd v0.24 when the environment names it); images go to the real
// local registry.
import { Readable } from "node:stream";
import * as tarStream from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, BuildError, connect } from "../src/index.js";
import { DepotClient } from "../src/depot/index.js";
import type { DepotClientInternalOptions } from "../src/depot/depot-client.js";
import { type LocalDepot, startLocalDepot } from "../src/testing/index.js";
import { failureOf, logLines, runCollecting } from "./support/build-helpers.js";
import { BUILD_DAEMONS } from "./support/daemons.js";
import { depotOn } from "./support/depot.js";
import { ManualClock } from "./support/manual-clock.js";
import { startRecordingFront } from "./support/recording-front.js";
import { BASE_IMAGE, getBlobJson, getImageConfig, getManifest, listTags, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

describe.each(BUILD_DAEMONS)("on %s: depot.build()", (daemon) => {
  let local: LocalDepot;
  let depot: DepotClient;
  let projectId: string;

  beforeAll(async () => {
    ({ local, depot, projectId } = await depotOn(daemon, "depot-build-tests"));
  });
  afterAll(async () => {
    await local?.stop();
  });

  function onlyBuild(before: Set<string>) {
    const created = [...local.builds.values()].filter((b) => !before.has(b.id));
    expect(created).toHaveLength(1);
    return created[0]!;
  }

  it("registers the build, builds on a machine, pushes, and finishes with success", async () => {
    const before = new Set(local.builds.keys());
    const repository = uniqueRepository("bkn-depot");
    const name = `${PLAIN_REGISTRY}/${repository}:v1`;
    const { result, events } = await runCollecting(
      depot.build({
        projectId,
        context: "fixtures/hello",
        buildArgs: { GREETING: "hi from depot" },
        noCache: true,
        outputs: [{ type: "image", name, push: true }],
      }),
    );
    const record = onlyBuild(before);
    expect(result.buildId).toBe(record.id);
    expect(record.finish?.result).toBe("success");
    expect(record.finishCalls).toBe(1);
    expect(record.machines.map((m) => m.platform)).toEqual(["amd64"]);
    expect(record.machines.every((m) => m.stoppedAt)).toBe(true);
    expect(record.healthReports.length).toBeGreaterThan(0);
    expect(record.options[0]?.tags).toEqual([name]);
    expect(result.digest).toBe((await getManifest(PLAIN_REGISTRY, repository, "v1")).digest);
    expect(logLines(events)).toContain("building with greeting: hi from depot");
    expect(events.every((e) => e.platform === "linux/amd64")).toBe(true);
  });

  it("reports a failing Dockerfile as an error with its message", async () => {
    const before = new Set(local.builds.keys());
    const { error } = await failureOf(
      depot.build({ projectId, context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\nRUN exit 7\n`, noCache: true }),
    );
    expect(error).toBeInstanceOf(BuildError);
    const record = onlyBuild(before);
    expect(record.finish?.result).toBe("error");
    expect(record.finish?.error).toMatch(/exit code: 7/);
    expect(record.machines.every((m) => m.stoppedAt)).toBe(true);
  });

  it("reports an abort as canceled and releases the machine", async () => {
    const before = new Set(local.builds.keys());
    const clock = new ManualClock(); // health reports and status batches wait on it
    const client = new DepotClient({ token: local.token, apiUrl: local.apiUrl, clock } as DepotClientInternalOptions);
    const controller = new AbortController();
    const run = client.build({
      projectId,
      context: { files: {} },
      dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo started && sleep 120\n`,
      noCache: true,
      signal: controller.signal,
    });
    for await (const event of run.events) {
      if (event.type === "log" && event.line === "started") controller.abort(new Error("stop"));
    }
    await expect(run).rejects.toBeInstanceOf(AbortError);
    const record = onlyBuild(before);
    expect(record.finish?.result).toBe("canceled");
    expect(clock.pending()).toBe(0); // released: no health report or status batch waits any more
    const reports = record.healthReports.length;
    await clock.advance(60_000);
    expect(record.healthReports.length).toBe(reports);
  });

  it("ends the build when Depot's cancels_at passes", async () => {
    const before = new Set(local.builds.keys());
    const run = depot.build({
      projectId,
      context: { files: {} },
      dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo started && sleep 120\n`,
      noCache: true,
    });
    try {
      for await (const event of run.events) {
        if (event.type === "log" && event.line === "started") local.faults.cancelsAt = new Date(Date.now() - 1000);
      }
      const error = await run.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ code: "CANCELED" });
      expect((error as Error).message).toMatch(/ended by Depot/);
      const record = onlyBuild(before);
      expect(record.finish?.result).toBe("canceled");
    } finally {
      local.faults.cancelsAt = undefined;
    }
  });

  it("builds two platforms on two machines and pushes one index with both, leaving only the requested tag where BuildKit pushes by digest", async () => {
    const before = new Set(local.builds.keys());
    const repository = uniqueRepository("bkn-multi-platform");
    const { result, events } = await runCollecting(
      depot.build({
        projectId,
        platforms: ["linux/amd64", "linux/arm64"],
        context: { files: { "hello.txt": "no RUN: nothing to emulate\n" } },
        dockerfileContent: "FROM scratch\nCOPY hello.txt /\n",
        outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true }],
      }),
    );
    const record = onlyBuild(before);
    expect(record.machines.map((m) => m.platform).sort()).toEqual(["amd64", "arm64"]);
    expect(record.finish?.result).toBe("success");
    expect(new Set(events.map((e) => e.platform))).toEqual(new Set(["linux/amd64", "linux/arm64"]));

    const index = (await getManifest(PLAIN_REGISTRY, repository, "v1")) as unknown as {
      digest: string;
      mediaType: string;
      manifests: { digest: string; platform: { os: string; architecture: string } }[];
    };
    expect(index.mediaType).toMatch(/manifest\.list|image\.index/);
    expect(index.digest).toBe(result.digest);
    expect(index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`).sort()).toEqual(["linux/amd64", "linux/arm64"]);
    for (const child of index.manifests) {
      const manifest = await getManifest(PLAIN_REGISTRY, repository, child.digest);
      const config = await getBlobJson<{ architecture: string }>(PLAIN_REGISTRY, repository, manifest.config.digest);
      expect(config.architecture).toBe(child.platform.architecture);
    }
    // dockerd pushes through its Engine API, which pushes tags only: the
    // platforms' helper tags stay there. buildkitd pushes by digest.
    const tags = await listTags(PLAIN_REGISTRY, repository);
    expect(tags).toEqual(daemon.embeddedInDocker ? ["v1", "v1-linux-amd64", "v1-linux-arm64"] : ["v1"]);
    expect(result.platforms.map((p) => p.result.pushed[0]?.name)).toEqual(
      daemon.embeddedInDocker
        ? [`${PLAIN_REGISTRY}/${repository}:v1-linux-amd64`, `${PLAIN_REGISTRY}/${repository}:v1-linux-arm64`]
        : index.manifests.map((m) => `${PLAIN_REGISTRY}/${repository}@${m.digest}`),
    );
  });

  it("pushes a platform again when the registry refused its push (a digest mismatch, a 5xx)", async () => {
    // The registry is real; the front before it refuses the first blob upload
    // (digest mismatch) and the first manifest PUT (500), as a registry can
    // when two platforms push one blob into one repository at once. BuildKit
    // retries a 5xx itself and dockerd a blob upload; the rest is ours.
    const refused = { blob: 0, manifest: 0 };
    const front = await startRecordingFront(PLAIN_REGISTRY);
    front.locationHost = front.host; // upload locations name the registry itself: keep the client on the front
    const registryError = (status: number, code: string, message: string) => ({ status, body: JSON.stringify({ errors: [{ code, message }] }) });
    front.fault = ({ method, path }) => {
      if (method !== "PUT") return undefined;
      if (path.includes("/blobs/uploads/") && refused.blob++ === 0) return registryError(400, "DIGEST_INVALID", "provided digest did not match uploaded content");
      if (path.includes("/manifests/") && refused.manifest++ === 0) return registryError(500, "UNKNOWN", "refused by the test front");
      return undefined;
    };
    try {
      const repository = uniqueRepository("bkn-multi-refused");
      const { result, events } = await runCollecting(
        depot.build({
          projectId,
          platforms: ["linux/amd64", "linux/arm64"],
          // An upload: each push again reads it afresh from its spooled copy.
          context: { tar: tarOf({ Dockerfile: "FROM scratch\nCOPY hello.txt /\n", "hello.txt": "refused, then pushed\n" }) },
          outputs: [{ type: "image", name: `${front.host}/${repository}:v1`, push: true }],
        }),
      );
      expect(refused.blob).toBeGreaterThan(1);
      expect(refused.manifest).toBeGreaterThan(1);
      const warnings = events.flatMap((e) => (e.type === "warning" ? [e.message] : []));
      expect(warnings.length).toBeGreaterThan(0);
      for (const warning of warnings) expect(warning).toMatch(/^the registry refused the linux\/(amd64|arm64) image's push; pushing it again$/);
      const index = (await getManifest(PLAIN_REGISTRY, repository, "v1")) as unknown as { digest: string; manifests: unknown[] };
      expect(index.digest).toBe(result.digest);
      expect(index.manifests).toHaveLength(2);
    } finally {
      await front.close();
    }
  });

  it("pushByDigest pushes with no tag where BuildKit has the image exporter; dockerd (Engine pushes are by tag) refuses it", async () => {
    const bk = await connect(daemon.address, daemon.connectOptions);
    try {
      const repository = uniqueRepository("bkn-by-digest");
      const run = bk.build({
        context: { files: { "a.txt": `${repository}\n` } },
        dockerfileContent: "FROM scratch\nCOPY a.txt /\n",
        outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:not-pushed`, push: true, pushByDigest: true }],
      });
      expect(await bk.features()).toEqual({ imageExporter: !daemon.embeddedInDocker });
      if (daemon.embeddedInDocker) {
        await expect(run).rejects.toMatchObject({ code: "UNIMPLEMENTED" });
        return;
      }
      const result = await run;
      const digest = result.exporterResponse["containerimage.digest"]!;
      expect(result.pushed).toEqual([{ name: `${PLAIN_REGISTRY}/${repository}@${digest}`, digest }]);
      expect((await getManifest(PLAIN_REGISTRY, repository, digest)).digest).toBe(digest);
      expect(await listTags(PLAIN_REGISTRY, repository)).toEqual([]);
    } finally {
      await bk.close();
    }
  });

  it("builds when Depot asks for gzip'd traffic to the machine (sent plain to a BuildKit that cannot read gzip)", async () => {
    const gzipDepot = await startLocalDepot({ ...daemon.backend, pendingWaitMs: 50, machineCompression: "gzip" });
    try {
      const client = new DepotClient({ token: gzipDepot.token, apiUrl: gzipDepot.apiUrl });
      const project = gzipDepot.addProject({ name: "gzip" }).projectId;
      const { result, events } = await runCollecting(
        client.build({ projectId: project, context: { files: { "big.txt": "compressible ".repeat(50_000) } }, dockerfileContent: `FROM ${BASE_IMAGE}\nCOPY big.txt /\nRUN wc -c < /big.txt\n`, noCache: true }),
      );
      expect(gzipDepot.builds.get(result.buildId)!.finish?.result).toBe("success");
      expect(logLines(events)).toContain("650000");
    } finally {
      await gzipDepot.stop();
    }
    // The option really compresses: dockerd's v0.8 refuses gzip'd requests outright.
    if (daemon.embeddedInDocker) {
      const refused = await connect(daemon.address, { ...daemon.connectOptions, compression: "gzip" }).then(
        (bk) => bk.close().then(() => expect.unreachable("dockerd took gzip")),
        (err: unknown) => err as Error,
      );
      expect(String((refused.cause as Error | undefined)?.message)).toMatch(/Decompressor is not installed for grpc-encoding "gzip"/);
    }
  });

  it("gives every platform the whole of an uploaded tar context", async () => {
    const repository = uniqueRepository("bkn-multi-tar");
    const pack = tarStream.pack();
    pack.entry({ name: "Dockerfile" }, "FROM scratch\nCOPY hello.txt /\n");
    pack.entry({ name: "hello.txt" }, "uploaded once, built twice\n");
    pack.finalize();
    const { result } = await runCollecting(
      depot.build({
        projectId,
        platforms: ["linux/amd64", "linux/arm64"],
        context: { tar: Readable.from(pack as AsyncIterable<Buffer>, { objectMode: false }) },
        outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true }],
      }),
    );
    expect(result.platforms.map((p) => p.platform)).toEqual(["linux/amd64", "linux/arm64"]);
    const index = (await getManifest(PLAIN_REGISTRY, repository, "v1")) as unknown as { manifests: unknown[] };
    expect(index.manifests).toHaveLength(2);
  });

  it("refuses several platforms into a single archive before registering anything", async () => {
    const before = local.builds.size;
    const { error } = await failureOf(
      depot.build({ projectId, platforms: ["linux/amd64", "linux/arm64"], context: { files: {} }, dockerfileContent: "FROM scratch\n", outputs: [{ type: "tar", dest: "/tmp/x.tar" }] }),
    );
    expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(local.builds.size).toBe(before);
  });

  it("labels and build args reach the image built on a Depot machine", async () => {
    const repository = uniqueRepository("bkn-depot-labels");
    await runCollecting(
      depot.build({
        projectId,
        context: { files: {} },
        dockerfileContent: `FROM ${BASE_IMAGE}\nARG V\nLABEL v=$V\n`,
        buildArgs: { V: "42" },
        labels: { team: "builds" },
        outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true }],
      }),
    );
    const config = await getImageConfig(PLAIN_REGISTRY, repository, "v1");
    expect(config.config.Labels).toMatchObject({ v: "42", team: "builds" });
  });
});

/** A tar stream of `files`, as a user's upload arrives. */
function tarOf(files: Record<string, string>): Readable {
  const pack = tarStream.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name }, content);
  pack.finalize();
  return Readable.from(pack as AsyncIterable<Buffer>, { objectMode: false });
}
