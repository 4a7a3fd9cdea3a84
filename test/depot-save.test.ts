// Saving a Depot build and getting it back, end to end: depot.build() with
// `save` pushes to the local Depot's saved-image registry (a real registry
// behind a front that checks Depot's tokens), depot.pull() loads it into
// dockerd or writes an archive, depot.push() copies it to another registry.
// Also what Depot's UI is told (status, step timings) and builds picked up
// from their id and token. The local Depot stands in for Depot's API (the one
// part no real component here provides); BuildKit, registries and dockerd are
// real, on both daemons.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { createReadStream, existsSync } from "node:fs";
import { join } from "node:path";
import * as tarStream from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DepotClient } from "../src/depot/index.js";
import type { DepotClientInternalOptions } from "../src/depot/depot-client.js";
import { type LocalDepot, startLocalDepot } from "../src/testing/index.js";
import { runCollecting, tempDir } from "./support/build-helpers.js";
import { BUILD_DAEMONS } from "./support/daemons.js";
import { depotOn } from "./support/depot.js";
import { dockerApi } from "./support/docker-api.js";
import { AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, BASE_IMAGE, getImageConfig, getManifest, listTags, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

describe.each(BUILD_DAEMONS)("on %s: saved Depot builds", (daemon) => {
  let local: LocalDepot;
  let depot: DepotClient;
  let projectId: string;

  beforeAll(async () => {
    ({ local, depot, projectId } = await depotOn(daemon, "saves"));
  });
  afterAll(async () => {
    await local?.stop();
  });

  /** Builds a small image with a label saying which test made it, saved under the build id and `saveTags`. */
  async function savedBuild(marker: string, saveTags: string[] = []) {
    const { result } = await runCollecting(
      depot.build({
        projectId,
        context: { files: { "marker.txt": `${marker}\n` } },
        dockerfileContent: `FROM ${BASE_IMAGE}\nCOPY marker.txt /\nLABEL marker=${marker}\nRUN echo "made ${marker}"\n`,
        save: true,
        saveTags,
      }),
    );
    return result;
  }

  it("save → pull into Docker → push to another registry: the same image each time", async () => {
    const marker = uniqueRepository("saved");
    const result = await savedBuild(marker, ["latest"]);
    const record = local.builds.get(result.buildId)!;
    expect(record.options[0]).toMatchObject({ save: true, saveTags: ["latest"] });
    expect(result.saved?.reference).toBe(`${local.savedImageRegistry}/${projectId}:${result.buildId}`);
    expect(result.saved?.tags).toEqual([`${local.savedImageRegistry}/${projectId}:${result.buildId}`, `${local.savedImageRegistry}/${projectId}:latest`]);
    expect(record.saves.map((s) => s.reference).sort()).toEqual([...result.saved!.tags].sort());
    expect(record.finish?.result).toBe("success");

    // Into dockerd, under a name of our choosing.
    const name = `bkn-pulled-${marker}:dev`;
    try {
      const pulled = await depot.pull(result.buildId, { tags: [name], dockerEngine: "unix:///var/run/docker.sock" });
      expect(pulled.reference).toBe(result.saved!.reference);
      expect(pulled.loaded).toContain(name.includes("/") ? name : `${name}`);
      const inspected = JSON.parse((await dockerApi("GET", `/images/${encodeURIComponent(name)}/json`)).body) as { Config: { Labels: Record<string, string> } };
      expect(inspected.Config.Labels.marker).toBe(marker);
    } finally {
      await dockerApi("DELETE", `/images/${encodeURIComponent(name)}?force=true`);
    }
    expect(record.pulls.length).toBeGreaterThan(0);

    // On to another registry, with the user's credentials there.
    const repository = uniqueRepository("bkn-depot-pushed");
    const pushed = await depot.push(result.buildId, { tag: `${PLAIN_REGISTRY}/${repository}:v1` });
    const manifest = await getManifest(PLAIN_REGISTRY, repository, "v1");
    expect(pushed.pushed).toEqual([{ name: `${PLAIN_REGISTRY}/${repository}:v1`, digest: manifest.digest }]);
    expect((await getImageConfig(PLAIN_REGISTRY, repository, "v1")).config.Labels?.marker).toBe(marker);
    expect(await listTags(PLAIN_REGISTRY, repository)).toEqual(["v1"]);
  });

  it("two platforms saved: one index under the saved names, the same that push copies on", async () => {
    const repository = uniqueRepository("bkn-depot-multi-saved");
    const { result } = await runCollecting(
      depot.build({
        projectId,
        platforms: ["linux/amd64", "linux/arm64"],
        context: { files: { "hello.txt": `${repository}\n` } },
        dockerfileContent: "FROM scratch\nCOPY hello.txt /\n",
        outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true }],
        save: true,
      }),
    );
    const record = local.builds.get(result.buildId)!;
    const saved = record.saves.find((s) => s.reference === result.saved!.reference);
    expect(saved?.digest).toBe(result.digest); // the index, under the saved name too
    expect(saved?.mediaType).toMatch(/manifest\.list|image\.index/);

    const copy = uniqueRepository("bkn-depot-multi-pushed");
    const pushed = await depot.push(result.buildId, { tag: `${PLAIN_REGISTRY}/${copy}:v1` });
    expect(pushed.pushed[0]!.digest).toBe(result.digest);
    const index = (await getManifest(PLAIN_REGISTRY, copy, "v1")) as unknown as { manifests: { platform: { architecture: string } }[] };
    expect(index.manifests.map((m) => m.platform.architecture).sort()).toEqual(["amd64", "arm64"]);
  });

  it("step by step: savedTags and registryAuth() save it, machine.build() is seen by Depot, and pull reads it back", async () => {
    const build = await depot.builds.create({ projectId, save: true, saveTags: ["step"] });
    expect(build.savedTags).toEqual([`${local.savedImageRegistry}/${projectId}:${build.id}`, `${local.savedImageRegistry}/${projectId}:step`]);
    const record = local.builds.get(build.id)!;
    const machine = await build.acquireMachine("amd64");
    try {
      await machine.build({
        context: { files: {} },
        dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo step-by-step-${build.id}\n`,
        noCache: true,
        registryAuth: build.registryAuth(),
        outputs: [{ type: "image", name: build.savedTags.join(","), push: true }],
      });
      const run = record.steps.find((step) => step.name.includes(`RUN echo step-by-step-${build.id}`));
      expect(run?.logs.map((l) => l.message).join("")).toContain(`step-by-step-${build.id}`);
      expect(record.timings).toEqual([]); // they go with finish
      await build.finish();
      expect(record.timings.map((t) => t.name)).toContain(run!.name);
    } catch (err) {
      await build.finish(err);
      throw err;
    } finally {
      await machine.release();
    }
    expect(local.builds.get(build.id)!.saves.map((s) => s.reference).sort()).toEqual([...build.savedTags].sort());
    const out = tempDir("depot-step-pull");
    try {
      const pulled = await depot.pull(build.id, { dest: join(out.path, "image.tar") });
      expect(pulled.reference).toBe(build.savedTags[0]);
    } finally {
      out.remove();
    }
  });

  it("pull writes an OCI archive whose index names the saved image", async () => {
    const marker = uniqueRepository("oci");
    const result = await savedBuild(marker);
    const out = tempDir("depot-pull");
    try {
      const dest = join(out.path, "image.tar");
      const pulled = await depot.pull(result.buildId, { dest, format: "oci" });
      expect(existsSync(dest)).toBe(true);
      const entries = await tarEntries(dest);
      expect(entries.has("oci-layout")).toBe(true);
      const index = JSON.parse(entries.get("index.json")!) as { manifests: { digest: string }[] };
      expect(index.manifests.map((m) => m.digest)).toContain(pulled.descriptor.digest);
    } finally {
      out.remove();
    }
  });

  it("a saved-image registry that wants credentials: the local Depot's front signs in to it (savedImageRegistryAuth)", async () => {
    const authed = await startLocalDepot({
      ...daemon.backend,
      pendingWaitMs: 50,
      savedImageRegistry: AUTH_REGISTRY,
      savedImageRegistryAuth: { username: AUTH_USER, password: AUTH_PASSWORD },
    });
    try {
      const client = new DepotClient({ token: authed.token, apiUrl: authed.apiUrl, dockerEngine: authed.dockerEngine } as DepotClientInternalOptions);
      const project = authed.addProject({ name: "saves-behind-auth" }).projectId;
      const marker = uniqueRepository("authed");
      const { result } = await runCollecting(
        client.build({ projectId: project, context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\nLABEL marker=${marker}\n`, save: true }),
      );
      // Written through the front into the registry that wants the credentials, and read back through it.
      const stored = await getManifest(AUTH_REGISTRY, project, result.buildId, { username: AUTH_USER, password: AUTH_PASSWORD });
      const out = tempDir("depot-pull-authed");
      try {
        const pulled = await client.pull(result.buildId, { dest: join(out.path, "image.tar"), format: "oci" });
        expect(pulled.descriptor.digest).toBe(stored.digest);
      } finally {
        out.remove();
      }
    } finally {
      await authed.stop();
    }
  });

  it("a Docker Engine that is not a unix socket is refused before Depot is asked (which would answer not_found)", async () => {
    await expect(depot.pull("no-such-build", { dockerEngine: "tcp://127.0.0.1:2375" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(depot.pull("no-such-build", { dockerEngine: "unix:///var/run/docker.sock" })).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("a build that was not saved cannot be pulled, and says so", async () => {
    const { result } = await runCollecting(depot.build({ projectId, context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\n` }));
    await expect(depot.pull(result.buildId, { dest: "/nonexistent/x.tar" })).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("Depot's UI sees the build: its steps and logs from the status stream, and their timings", async () => {
    const marker = uniqueRepository("status");
    const result = await savedBuild(marker);
    const record = local.builds.get(result.buildId)!;
    expect(record.statusReports.streamsOpened).toBe(1);
    expect(record.statusReports.streamsCompleted).toBe(1);
    expect(record.statusReports.statuses).toBeGreaterThan(0);
    const run = record.steps.find((s) => s.name.includes(`RUN echo "made ${marker}"`));
    expect(run).toBeDefined();
    expect(run!.logs.map((l) => l.message).join("")).toContain(`made ${marker}`);
    expect(run!.completedAt).toBeDefined();
    expect(record.timings.map((t) => t.name)).toContain(run!.name);
  });

  it("a Depot that refuses the status stream never fails the build", async () => {
    local.faults.failNext("ReportStatusStream", 1, "permission_denied");
    const { result } = await runCollecting(depot.build({ projectId, context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo refused-status\n`, noCache: true }));
    const record = local.builds.get(result.buildId)!;
    expect(record.finish?.result).toBe("success");
    expect(record.statusReports.streamsCompleted).toBe(0);
  });

  it("a Depot that stops reading the status stream never fails the build", async () => {
    // A front before the local Depot that takes ReportStatusStream and never
    // reads it nor answers (what no real part does on demand); every other
    // call goes through.
    const front = await startStallingFront(local.apiUrl, (path) => path.endsWith("/ReportStatusStream"));
    try {
      const stalled = new DepotClient({ token: local.token, apiUrl: front.url, healthIntervalMs: 250 } as DepotClientInternalOptions);
      const { result, events } = await runCollecting(
        stalled.build({ projectId, context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo stalled-status && head -c 300000 /dev/zero | tr '\\0' x\n`, noCache: true }),
      );
      const record = local.builds.get(result.buildId)!;
      expect(record.finish?.result).toBe("success");
      expect(front.stalledStreams()).toBe(1);
      expect(record.statusReports.streamsOpened).toBe(0);
      expect(events.some((e) => e.type === "log" && e.line === "stalled-status")).toBe(true);
    } finally {
      await front.close();
    }
  });

  it("a build started elsewhere is picked up from its id and token, built into (and saved) and finished", async () => {
    const started = await depot.builds.create({ projectId }); // as Depot's SDK would, elsewhere
    const picked = await depot.builds.fromEnvironment({ DEPOT_BUILD_ID: started.id, DEPOT_TOKEN: started.token });
    expect(picked).toMatchObject({ id: started.id, projectId });
    const repository = uniqueRepository("bkn-handoff");
    const { result } = await runCollecting(
      depot.build({
        build: picked!,
        context: { files: {} },
        dockerfileContent: `FROM ${BASE_IMAGE}\nLABEL handed=over\n`,
        outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true }],
        save: true, // Depot named no saved names at CreateBuild: it is asked where its registry is
      }),
    );
    expect(result.buildId).toBe(started.id);
    expect(result.saved?.reference).toBe(`${local.savedImageRegistry}/${projectId}:${started.id}`);
    expect(local.builds.get(started.id)!.saves.map((s) => s.reference)).toEqual([result.saved!.reference]);
    expect(local.builds.get(started.id)!.finish?.result).toBe("success");
    expect((await getImageConfig(PLAIN_REGISTRY, repository, "v1")).config.Labels?.handed).toBe("over");
    expect(await depot.builds.fromEnvironment({})).toBeUndefined();
  });
});

/** The small text entries of a tar file (layers are skipped). */
async function tarEntries(path: string): Promise<Map<string, string>> {
  const entries = new Map<string, string>();
  const extract = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on("entry", (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: unknown) => {
        if (chunks.length < 64) chunks.push(chunk as Buffer);
      });
      stream.on("end", () => {
        if (header.size !== undefined && header.size < 65536) entries.set(header.name, Buffer.concat(chunks).toString("utf8"));
        next();
      });
      stream.resume();
    });
    extract.on("finish", resolve);
    extract.on("error", reject);
  });
  createReadStream(path).pipe(extract);
  await done;
  return entries;
}

/** An h2c front for the local Depot that swallows the calls `stall` picks: they are accepted, never read, never answered. */
async function startStallingFront(upstream: string, stall: (path: string) => boolean): Promise<{ url: string; stalledStreams(): number; close(): Promise<void> }> {
  const client = http2.connect(upstream);
  client.on("error", () => {});
  const stalled: http2.ServerHttp2Stream[] = [];
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    const path = String(headers[":path"]);
    if (stall(path)) {
      stalled.push(stream);
      return;
    }
    const forwarded: http2.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) if (!name.startsWith(":") || name === ":method" || name === ":path") forwarded[name] = value;
    const up = client.request(forwarded);
    up.on("error", (err) => stream.destroy(err));
    // The caller may have gone (reset) before the answer's headers arrive.
    up.on("response", (response) => {
      if (stream.destroyed || stream.closed) return up.close();
      stream.respond(response);
    });
    stream.on("close", () => {
      if (!up.destroyed) up.close();
    });
    stream.pipe(up);
    up.pipe(stream);
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stalledStreams: () => stalled.length,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const session of sessions) session.destroy();
        client.destroy();
      }),
  };
}
