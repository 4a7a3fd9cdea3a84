// DepotClient against the local Depot (a real Connect server, its machines
// mTLS fronts for a real BuildKit: dockerd's, and the standalone buildkitd
// when the environment names it): projects, the build lifecycle,
// machines with health reports, retries, timeouts, Depot's cancellation, and
// where tokens and keys must never go. Outages and cancellations come from the
// local Depot's fault switches: no real part here can produce them.
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { AbortError, BuildKitNodeError, DepotClient, DepotError } from "../src/depot/index.js";
import type { DepotClientInternalOptions } from "../src/depot/depot-client.js";
import { BuilderPlatform, BuildService } from "../src/gen/depot/cli/v1/build_pb.js";
import { type LocalDepot, startLocalDepot } from "../src/testing/index.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { ManualClock } from "./support/manual-clock.js";

const HEALTH_INTERVAL_MS = 200;

let local: LocalDepot;
let projectId: string;

afterEach(() => {
  local.faults.stayPending = false;
  local.faults.cancelsAt = undefined;
});

function depot(options: DepotClientInternalOptions = {}): DepotClient {
  const internal: DepotClientInternalOptions = { token: local.token, apiUrl: local.apiUrl, healthIntervalMs: HEALTH_INTERVAL_MS, ...options };
  return new DepotClient(internal);
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => expect.unreachable("it succeeded"),
    (err: unknown) => err as Error,
  );
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

/** Waits (in real time) until the reply to the last health report has come and the next report waits on `clock`. */
async function nextReportScheduled(clock: ManualClock): Promise<void> {
  await vi.waitFor(() => expect(clock.pending()).toBe(1));
}

describe.each(BUILD_DAEMONS)("on %s: DepotClient against the local Depot", (daemon) => {
  beforeAll(async () => {
    assertDaemon(daemon);
    local = await startLocalDepot({ ...daemon.backend, pendingPolls: 2, pendingWaitMs: 20 });
    projectId = local.addProject({ name: "builds" }).projectId;
  });

  afterAll(async () => {
    await local?.stop();
  });

  describe("projects", () => {
    it.each(["2", "1.1"] as const)("create, get, update, list, reset and delete over HTTP/%s", async (httpVersion) => {
      const projects = depot({ httpVersion }).projects;
      const created = await projects.create({
        name: `crud-${httpVersion}`,
        regionId: "eu-central-1",
        cachePolicy: { keepGb: 60, keepDays: 7 },
        hardware: "HARDWARE_8X16",
      });
      expect(created).toEqual({
        projectId: expect.any(String),
        organizationId: local.organizationId,
        name: `crud-${httpVersion}`,
        regionId: "eu-central-1",
        createdAt: expect.any(Date),
        cachePolicy: { keepGb: 60, keepDays: 7 },
        hardware: "HARDWARE_8X16",
      });
      expect(Math.abs(created.createdAt.getTime() - Date.now())).toBeLessThan(60_000);
      expect(Object.getPrototypeOf(created)).toBe(Object.prototype); // a plain object, not a message

      expect(await projects.get(created.projectId)).toEqual(created);

      const updated = await projects.update(created.projectId, { name: `renamed-${httpVersion}`, cachePolicy: { keepGb: 10, keepDays: 0 } });
      expect(updated).toEqual({ ...created, name: `renamed-${httpVersion}`, cachePolicy: { keepGb: 10, keepDays: 0 } });
      expect((await projects.update(created.projectId, { hardware: "HARDWARE_32X64" })).hardware).toBe("HARDWARE_32X64");

      expect((await projects.list()).map((p) => p.projectId)).toContain(created.projectId);
      await projects.reset(created.projectId);
      await projects.delete(created.projectId);

      const err = await failure(projects.get(created.projectId));
      expect(err).toBeInstanceOf(DepotError);
      expect(err).toMatchObject({ code: "NOT_FOUND", method: "GetProject" });
      expect(err.message).toContain("GetProject");
      expect((await projects.list()).map((p) => p.projectId)).not.toContain(created.projectId);
    });

    it("lists every page (35 projects with the default page size) and filters by region", async () => {
      const mine = new Set<string>();
      for (let i = 0; i < 35; i++) mine.add(local.addProject({ name: `paged-${i}`, regionId: "eu-central-1" }).projectId);
      const all = await depot().projects.list();
      expect(all.length).toBe(local.projects.size);
      expect(new Set(all.map((p) => p.projectId)).size).toBe(all.length); // no page twice
      for (const id of mine) expect(all.some((p) => p.projectId === id)).toBe(true);

      const eu = await depot().projects.list({ regionId: "eu-central-1" });
      expect(eu.every((p) => p.regionId === "eu-central-1")).toBe(true);
      expect(eu.length).toBeGreaterThanOrEqual(35);
      expect((await depot().projects.list({ regionId: "us-east-1" })).some((p) => mine.has(p.projectId))).toBe(false);
    });

    it("a build token cannot list projects, an unknown token is unauthenticated, and neither token is in the error", async () => {
      const build = await depot().builds.create({ projectId });
      try {
        const denied = await failure(depot({ token: build.token }).projects.list());
        expect(denied).toBeInstanceOf(DepotError);
        expect(denied).toMatchObject({ code: "PERMISSION_DENIED", method: "ListProjects" });
        expect(denied.message).not.toContain(build.token);

        const unknown = await failure(depot({ token: "not-a-depot-token" }).projects.get(projectId));
        expect(unknown).toMatchObject({ code: "UNAUTHENTICATED", method: "GetProject" });
        expect(unknown.message).not.toContain("not-a-depot-token");
      } finally {
        await build.finish();
      }
    });

    it("a missing project is NOT_FOUND from CreateBuild, not retried", async () => {
      const err = await failure(depot().builds.create({ projectId: "no-such-project" }));
      expect(err).toMatchObject({ code: "NOT_FOUND", method: "CreateBuild" });
    });
  });

  describe("the build lifecycle", () => {
    it.each(["2", "1.1"] as const)("create → acquire arm64 and linux/amd64 → connect → listWorkers → release → finish (HTTP/%s)", async (httpVersion) => {
      const build = await depot({ httpVersion }).builds.create({ projectId, tags: ["127.0.0.1:5000/x:1"], push: true });
      const record = local.builds.get(build.id)!;
      expect(record).toBeDefined();
      expect(build.token).toBe(record.token);
      expect(build.projectId).toBe(projectId);
      expect(build.url).toContain(build.id);
      expect(record.options).toEqual([{ command: "BUILD", tags: ["127.0.0.1:5000/x:1"], push: true, load: false, save: false, saveTags: [] }]);
      expect(JSON.stringify(build)).not.toContain(build.token); // the token is not an own property

      const [arm, amd] = await Promise.all([build.acquireMachine("arm64"), build.acquireMachine("linux/amd64")]);
      expect(arm.platform).toBe("arm64");
      expect(amd.platform).toBe("amd64");
      for (const machine of [arm, amd]) {
        const served = record.machines.find((m) => m.platform === machine.platform)!;
        expect(machine.endpoint).toBe(served.endpoint);
        expect(machine.serverName).toBe(served.serverName);
        expect(machine.endpoint).not.toContain(machine.serverName); // a name, not the address
        expect(machine.signal.aborted).toBe(false);
      }
      expect(record.connectionPolls.filter((p) => p.answer === "pending").length).toBeGreaterThanOrEqual(4); // 2 per platform

      const bk = await arm.connect();
      expect(await arm.connect()).toBe(bk); // cached
      expect((await bk.listWorkers()).length).toBeGreaterThan(0);
      const bkAmd = await amd.connect({ readinessTimeoutMs: 30_000 });
      expect((await bkAmd.listWorkers()).length).toBeGreaterThan(0);

      await arm.release();
      await arm.release(); // idempotent
      expect(arm.signal.aborted).toBe(true);
      await expect(bk.listWorkers()).rejects.toThrow(); // closed
      await expect(arm.connect()).rejects.toMatchObject({ code: "CANCELED" });
      await amd[Symbol.asyncDispose]();
      expect(amd.signal.aborted).toBe(true);

      await build.finish();
      expect(record.finish?.result).toBe("success");
      expect(record.finishCalls).toBe(1);
    });

    it("reports health at once, then once per interval while held, with the platform it acquired, and none after release", async () => {
      const clock = new ManualClock();
      const build = await depot({ clock }).builds.create({ projectId });
      const record = local.builds.get(build.id)!;
      try {
        const machine = await build.acquireMachine("aarch64");
        // The first report went out before the first poll for a machine.
        expect(record.healthReports[0]!.at.getTime()).toBeLessThanOrEqual(record.connectionPolls[0]!.at.getTime());
        await nextReportScheduled(clock);
        // The clock has not moved: only the first report went out.
        expect(record.healthReports).toHaveLength(1);
        for (let report = 2; report <= 6; report++) {
          await clock.advance(HEALTH_INTERVAL_MS - 1);
          expect(record.healthReports).toHaveLength(report - 1);
          await clock.advance(1);
          await vi.waitFor(() => expect(record.healthReports).toHaveLength(report));
          await nextReportScheduled(clock);
        }
        expect(record.healthReports.every((r) => r.platform === "arm64")).toBe(true);

        await machine.release();
        expect(clock.pending()).toBe(0);
        await clock.advance(10 * HEALTH_INTERVAL_MS);
        expect(record.healthReports).toHaveLength(6);
      } finally {
        await build.finish();
      }
    });

    it("health reports keep going when the caller's signal aborts after acquiring; finish stops them", async () => {
      const clock = new ManualClock();
      const build = await depot({ clock }).builds.create({ projectId });
      const record = local.builds.get(build.id)!;
      const controller = new AbortController();
      await build.acquireMachine("amd64", { signal: controller.signal });
      await nextReportScheduled(clock);
      controller.abort();
      const before = record.healthReports.length;
      await clock.advance(HEALTH_INTERVAL_MS);
      await vi.waitFor(() => expect(record.healthReports).toHaveLength(before + 1));
      await nextReportScheduled(clock);

      await build.finish();
      expect(clock.pending()).toBe(0);
      await clock.advance(3 * HEALTH_INTERVAL_MS);
      expect(record.healthReports).toHaveLength(before + 1);
    });
  });

  describe("retries", () => {
    it("CreateBuild is retried through transient failures", async () => {
      const before = local.builds.size;
      local.faults.failNext("CreateBuild", 2);
      const build = await depot().builds.create({ projectId });
      expect(local.builds.size).toBe(before + 1);
      await build.finish();
    });

    it("CreateBuild fails at once when unauthenticated", async () => {
      const before = local.builds.size;
      local.faults.failNext("CreateBuild", 1, "unauthenticated");
      const err = await failure(depot().builds.create({ projectId }));
      expect(err).toBeInstanceOf(DepotError);
      expect(err).toMatchObject({ code: "UNAUTHENTICATED", method: "CreateBuild" });
      expect(err.message).not.toContain(local.token);
      expect(local.builds.size).toBe(before);
      // The one queued fault was used by that one call: a retry would have succeeded.
      const build = await depot().builds.create({ projectId });
      expect(local.builds.size).toBe(before + 1);
      await build.finish();
    });

    it("GetBuildKitConnection is retried through transient failures", async () => {
      const build = await depot().builds.create({ projectId });
      try {
        local.faults.failNext("GetBuildKitConnection", 2);
        const machine = await build.acquireMachine("amd64", { timeoutMs: 20_000 });
        await machine.release();
      } finally {
        await build.finish();
      }
    });
  });

  describe("acquire failures", () => {
    it("refuses an unknown platform before any call", async () => {
      const build = await depot().builds.create({ projectId });
      try {
        await expect(build.acquireMachine("linux/riscv64")).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
        expect(local.builds.get(build.id)!.healthReports).toEqual([]);
      } finally {
        await build.finish();
      }
    });

    it("times out naming the build and platform, stops health and leaves no timer behind", async () => {
      const clock = new ManualClock();
      const build = await depot({ clock }).builds.create({ projectId });
      const record = local.builds.get(build.id)!;
      local.faults.stayPending = true;
      await delay(150); // vitest's own throttled progress timer (100 ms) has fired
      const baseline = timers();
      const err = await failure(build.acquireMachine("arm64", { timeoutMs: 500 }));
      expect(err).toBeInstanceOf(BuildKitNodeError);
      expect(err).toMatchObject({ code: "TIMEOUT" });
      expect(err.message).toContain(build.id);
      expect(err.message).toContain("arm64");
      expect(timers()).toBe(baseline);
      const reports = record.healthReports.length;
      expect(reports).toBe(1); // the clock of health reports did not move
      expect(clock.pending()).toBe(0);
      await clock.advance(3 * HEALTH_INTERVAL_MS);
      expect(record.healthReports.length).toBe(reports);
      await build.finish(err);
      expect(record.finish).toMatchObject({ result: "error" });
    });

    it("the caller's signal aborts it with an AbortError and stops health", async () => {
      const clock = new ManualClock();
      const build = await depot({ clock }).builds.create({ projectId });
      const record = local.builds.get(build.id)!;
      local.faults.stayPending = true;
      const controller = new AbortController();
      const acquiring = failure(build.acquireMachine("amd64", { signal: controller.signal }));
      await vi.waitFor(() => expect(record.connectionPolls.length).toBeGreaterThan(0));
      controller.abort();
      const err = await acquiring;
      expect(err).toBeInstanceOf(AbortError);
      expect(clock.pending()).toBe(0);
      const reports = record.healthReports.length;
      await clock.advance(3 * HEALTH_INTERVAL_MS);
      expect(record.healthReports.length).toBe(reports);
      await build.finish(err);
      expect(record.finish).toMatchObject({ result: "canceled" });
    });

    it("finishing the build ends an acquisition in progress", async () => {
      const build = await depot().builds.create({ projectId });
      const record = local.builds.get(build.id)!;
      local.faults.stayPending = true;
      const acquiring = failure(build.acquireMachine("amd64"));
      await vi.waitFor(() => expect(record.connectionPolls.length).toBeGreaterThan(0)); // it is waiting for a machine
      await build.finish();
      expect(await acquiring).toMatchObject({ code: "FAILED_PRECONDITION" });
      await expect(build.acquireMachine("amd64")).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    });
  });

  describe("Depot's cancels_at", () => {
    it("a time in the past ends the machine: signal aborted, client closed, health stopped", async () => {
      const clock = new ManualClock();
      const build = await depot({ clock }).builds.create({ projectId });
      const record = local.builds.get(build.id)!;
      const machine = await build.acquireMachine("amd64");
      const bk = await machine.connect();
      expect((await bk.listWorkers()).length).toBeGreaterThan(0);

      await nextReportScheduled(clock);
      local.faults.cancelsAt = new Date(clock.now() - 1_000);
      await clock.advance(HEALTH_INTERVAL_MS); // the next report brings cancels_at back
      await new Promise((resolve) => machine.signal.addEventListener("abort", resolve, { once: true }));
      expect(machine.signal.reason).toBeInstanceOf(BuildKitNodeError);
      expect(String((machine.signal.reason as Error).message)).toMatch(/Depot canceled build/);
      expect(String((machine.signal.reason as Error).message)).toContain(build.id);
      await machine.release(); // resolves once the client is closed
      await expect(bk.listWorkers()).rejects.toThrow();
      expect(clock.pending()).toBe(0);
      const reports = record.healthReports.length;
      await clock.advance(3 * HEALTH_INTERVAL_MS);
      expect(record.healthReports.length).toBe(reports);

      await build.finish(machine.signal.reason);
      expect(record.finish).toMatchObject({ result: "canceled" });
    });

    it("a canceled build cannot acquire a machine", async () => {
      const clock = new ManualClock();
      const build = await depot({ clock }).builds.create({ projectId });
      local.faults.cancelsAt = new Date(clock.now() - 1_000);
      const record = local.builds.get(build.id)!;
      const err = await failure(build.acquireMachine("arm64", { timeoutMs: 10_000 }));
      // Health goes out first and brings cancels_at back; should the first poll
      // be answered after the server noted the cancellation, Depot refuses it.
      expect(["CANCELED", "FAILED_PRECONDITION"]).toContain((err as BuildKitNodeError).code);
      expect(err.message).toContain(build.id);
      expect(clock.pending()).toBe(0);
      const reports = record.healthReports.length;
      await clock.advance(3 * HEALTH_INTERVAL_MS);
      expect(record.healthReports.length).toBe(reports);
      await build.finish(err);
    });
  });

  describe("finish", () => {
    it("reports an AbortError as canceled", async () => {
      const build = await depot().builds.create({ projectId });
      await build.finish(new AbortError("the user stopped it"));
      expect(local.builds.get(build.id)!.finish).toMatchObject({ result: "canceled" });
    });

    it("reports once, however often it is called", async () => {
      const build = await depot().builds.create({ projectId });
      const first = build.finish();
      expect(build.finish(new Error("later"))).toBe(first);
      await first;
      await build.finish();
      const record = local.builds.get(build.id)!;
      expect(record.finishCalls).toBe(1);
      expect(record.finish).toMatchObject({ result: "success" });
    });

    it("reports an error with its message", async () => {
      const build = await depot().builds.create({ projectId });
      await build.finish(new Error("boom"));
      expect(local.builds.get(build.id)!.finish).toMatchObject({ result: "error", error: "boom" });
    });

    it("releases the build's machines first", async () => {
      const build = await depot().builds.create({ projectId });
      const machine = await build.acquireMachine("arm64");
      const bk = await machine.connect();
      await build.finish();
      expect(machine.signal.aborted).toBe(true);
      await expect(bk.listWorkers()).rejects.toThrow();
    });
  });

  describe("the machine's private key", () => {
    it("is never written to disk nor put in an error message", async () => {
      const build = await depot().builds.create({ projectId });
      const machine = await build.acquireMachine("amd64");
      const bk = await machine.connect();
      expect((await bk.listWorkers()).length).toBeGreaterThan(0);

      // The key Depot handed out, asked for again with the build token.
      const raw = createClient(BuildService, createConnectTransport({ baseUrl: local.apiUrl, httpVersion: "1.1" }));
      const reply = await raw.getBuildKitConnection(
        { buildId: build.id, platform: BuilderPlatform.AMD64 },
        { headers: { authorization: `Bearer ${build.token}` } },
      );
      expect(reply.connection.case).toBe("active");
      const key = reply.connection.case === "active" ? reply.connection.value.cert!.key : "";
      const body = key.split("\n").filter((line) => line && !line.startsWith("-----")).join("");
      expect(body.length).toBeGreaterThan(40);
      const firstLine = key.split("\n")[1]!;

      const errors: Error[] = [];
      await machine.release();
      errors.push(await failure(machine.connect()));
      errors.push(await failure(bk.listWorkers()));
      local.faults.stayPending = true;
      errors.push(await failure(build.acquireMachine("arm64", { timeoutMs: 300 })));
      local.faults.stayPending = false;
      await build.finish();
      errors.push(await failure(build.acquireMachine("amd64")));
      for (const err of errors) {
        for (let e: unknown = err; e instanceof Error; e = e.cause) {
          expect(e.message).not.toContain(firstLine);
          expect(e.message).not.toContain(build.token);
        }
      }

      const found = filesContaining(os.tmpdir(), [firstLine, body.slice(0, 64)]);
      expect(found).toEqual([]);
    });
  });

  /** Files (up to 4 levels down, under 1 MiB) holding any of `needles`. */
  function filesContaining(dir: string, needles: string[], depth = 0): string[] {
    if (depth > 4) return [];
    const out: string[] = [];
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return out;
    }
    for (const entry of entries) {
      const file = path.join(dir, entry);
      try {
        const stat = statSync(file);
        if (stat.isDirectory()) out.push(...filesContaining(file, needles, depth + 1));
        else if (stat.isFile() && stat.size < 1024 * 1024) {
          const text = readFileSync(file, "latin1");
          if (needles.some((n) => text.includes(n))) out.push(file);
        }
      } catch {
        // unreadable or gone: not ours
      }
    }
    return out;
  }
});
