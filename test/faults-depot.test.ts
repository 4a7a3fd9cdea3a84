// The Depot API misbehaving, against the local Depot (a real Connect server)
// with a relay the test controls in front of it: CreateBuild, which is not
// idempotent, is never tried twice once its request may have reached Depot;
// reads keep their retries; a silent API connection fails within the
// keepalive's bounds. Server-side answers (deadline_exceeded, aborted) come
// from the local Depot's fault switches: no real part can produce them.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import * as tarStream from "tar-stream";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DepotClient, DepotError } from "../src/depot/index.js";
import { type FaultRelay, type LocalDepot, startFaultRelay, startLocalDepot } from "../src/testing/index.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { tempDir } from "./support/build-helpers.js";
import { activeResources, expectNoLeaks } from "./support/faults.js";
import { BASE_IMAGE } from "./support/registry.js";

async function failure(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => expect.unreachable("it succeeded"),
    (err: unknown) => err as Error,
  );
}

/** A Writable for a tar output, and the names of the entries that went through it. */
function tarListing(): { archive: PassThrough; names: string[]; listing: Promise<void> } {
  const archive = new PassThrough();
  const names: string[] = [];
  const listing = (async () => {
    const extract = tarStream.extract();
    archive.pipe(extract);
    for await (const entry of extract) {
      names.push(entry.header.name.replace(/^\.\//, ""));
      entry.resume();
    }
  })();
  return { archive, names, listing };
}

/** Resolves once `check()` holds; the relay's counters move with real traffic. */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let local: LocalDepot;
  let projectId: string;
  let relay: FaultRelay;
  let before: string[];

  beforeAll(async () => {
    assertDaemon(daemon);
    local = await startLocalDepot({ ...daemon.backend, pendingPolls: 1, pendingWaitMs: 20 });
    projectId = local.addProject({ name: "faults" }).projectId;
  });
  afterAll(async () => {
    await local?.stop();
  });
  beforeEach(async () => {
    before = activeResources();
    relay = await startFaultRelay({ target: local.apiUrl });
  });
  afterEach(async (context) => {
    await relay.stop();
    if (context.task.result?.state !== "fail") await expectNoLeaks(before, context.task.name);
  });

  const depot = (options: { keepalive?: { intervalMs: number; timeoutMs: number } } = {}) =>
    new DepotClient({ token: local.token, apiUrl: relay.url, ...options });

  it.each([
    ["deadline_exceeded", "TIMEOUT"],
    ["aborted", "UNAVAILABLE"],
  ] as const)("CreateBuild answered %s is not tried again", async (fault, code) => {
    const builds = local.builds.size;
    local.faults.failNext("CreateBuild", 1, fault);
    const err = await failure(depot().builds.create({ projectId }));
    expect(err).toBeInstanceOf(DepotError);
    expect(err).toMatchObject({ code, method: "CreateBuild" });
    expect(local.builds.size).toBe(builds);
    // The fault was queued once: a second try would have registered a build.
    const build = await depot().builds.create({ projectId });
    expect(local.builds.size).toBe(builds + 1);
    await build.finish();
  });

  it("CreateBuild whose connection is reset after its request went out is not tried again", async () => {
    const client = depot();
    await client.projects.list(); // the connection is up
    const builds = local.builds.size;
    relay.stall();
    const sentBefore = relay.bytesFromClients;
    const creating = failure(client.builds.create({ projectId }));
    await until(() => relay.bytesFromClients > sentBefore); // the request left the client
    const started = Date.now();
    relay.reset();
    relay.heal(); // a second try would now get through
    const err = await creating;
    console.log(`[${daemon.name}] CreateBuild reset after sending: failed ${Date.now() - started} ms later: ${err.message}`);
    expect(err).toBeInstanceOf(DepotError);
    expect(err).toMatchObject({ code: "UNAVAILABLE", method: "CreateBuild" });
    expect(relay.connections).toBe(1); // never dialed again
    expect(local.builds.size).toBe(builds);
  });

  it("CreateBuild whose connections are refused is tried again (nothing reached Depot) and goes through once they are not", async () => {
    const builds = local.builds.size;
    relay.refuse();
    const creating = depot().builds.create({ projectId });
    await until(() => relay.connections >= 2); // a second try, after the backoff
    relay.heal();
    const build = await creating;
    expect(local.builds.size).toBe(builds + 1);
    await build.finish();
  });

  it("a read cut mid-call keeps its retries and succeeds once the API answers again", async () => {
    const client = depot();
    await client.projects.list();
    relay.stall();
    const sentBefore = relay.bytesFromClients;
    const listing = client.projects.list();
    await until(() => relay.bytesFromClients > sentBefore);
    relay.cut();
    relay.heal();
    expect((await listing).map((p) => p.projectId)).toContain(projectId);
    expect(relay.connections).toBe(2);
  });

  it("depot.build() takes a child's stdout as { tar } in hand before registering the build: every file arrives", async () => {
    const project = tempDir("faults-depot-tar");
    try {
      writeFileSync(join(project.path, "Dockerfile"), `FROM ${BASE_IMAGE}\nCOPY . /ctx\n`);
      writeFileSync(join(project.path, "hello.txt"), "hello through Depot\n");
      const child = spawn("tar", ["-cf", "-", "."], { cwd: project.path, stdio: ["ignore", "pipe", "inherit"] });
      const { archive, names, listing } = tarListing();
      // Through the relay, whose stop() closes the API connection the client keeps for later calls.
      const run = depot().build({ projectId, context: { tar: child.stdout }, outputs: [{ type: "tar", dest: archive }] });
      await run;
      await listing;
      expect(names).toContain("ctx/hello.txt");
    } finally {
      project.remove();
    }
  });

  it("machine.build() takes a child's stdout as { tar } in hand before it connects to the machine: every file arrives", async () => {
    const project = tempDir("faults-machine-tar");
    const build = await depot().builds.create({ projectId });
    try {
      writeFileSync(join(project.path, "Dockerfile"), `FROM ${BASE_IMAGE}\nCOPY . /ctx\n`);
      writeFileSync(join(project.path, "hello.txt"), "hello through a Depot machine\n");
      const machine = await build.acquireMachine("amd64");
      const child = spawn("tar", ["-cf", "-", "."], { cwd: project.path, stdio: ["ignore", "pipe", "inherit"] });
      const { archive, names, listing } = tarListing();
      // Not connected yet: the build first dials the machine, proves it ready, then reads the context.
      await machine.build({ context: { tar: child.stdout }, outputs: [{ type: "tar", dest: archive }] });
      await listing;
      expect(names).toContain("ctx/hello.txt");
      await build.finish();
    } catch (err) {
      await build.finish(err);
      throw err;
    } finally {
      project.remove();
    }
  });

  it("depot.build() refuses invalid options at once, before any Depot call", () => {
    const builds = local.builds.size;
    expect(() => depot().build({ projectId, context: null } as never)).toThrow(
      /^invalid option context: must be/,
    );
    expect(local.builds.size).toBe(builds);
  });

  it("a silent API connection fails a call with UNAVAILABLE after keepalive interval + timeout, not the call timeout", async () => {
    const client = depot({ keepalive: { intervalMs: 300, timeoutMs: 500 } });
    await client.projects.get(projectId);
    relay.stall();
    const started = Date.now();
    // Not a read with retries: one call, to see its own failure.
    const err = await failure(client.projects.create({ name: "never", regionId: "us-east-1" }));
    console.log(`[${daemon.name}] Depot API silent: failed ${Date.now() - started} ms later: ${err.message}`);
    expect(err).toBeInstanceOf(DepotError);
    expect(err).toMatchObject({ code: "UNAVAILABLE", method: "CreateProject" });
    expect(err.message).toMatch(/did not answer a keepalive ping within 500 ms/);
  });
});
