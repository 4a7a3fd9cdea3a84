// The connection to the daemon misbehaving mid-build, through a relay the
// test controls (startFaultRelay) in front of the real daemons: cut, reset,
// silent, and a long quiet step on a live connection. Each failure must be
// a TransportError UNAVAILABLE with its cause, whatever the timing; each
// test prints how long the failure took and leaves nothing running.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type BuildEvent, type BuildKitClient, type BuildRun, connect, TransportError } from "../src/index.js";
import { type FaultRelay, startFaultRelay } from "../src/testing/index.js";
import { runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { activeResources, expectNoLeaks } from "./support/faults.js";
import { BASE_IMAGE } from "./support/registry.js";

/** Resolves once the build emits an event matching `match`. */
function eventSeen(run: BuildRun, events: BuildEvent[], match: (e: BuildEvent) => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      if (events.some(match)) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
    run.then(
      () => {
        clearInterval(timer);
        reject(new Error("the build ended before the event"));
      },
      () => {
        clearInterval(timer);
        reject(new Error("the build failed before the event"));
      },
    );
  });
}

/** A build whose RUN step prints a line, then stays quiet for `seconds`. */
function quietStep(seconds: number): { Dockerfile: string } {
  return { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo step-started-${Date.now()} && sleep ${seconds} && echo step-done\n` };
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let relay: FaultRelay;
  let bk: BuildKitClient;
  let before: string[];

  beforeEach(async () => {
    assertDaemon(daemon);
    before = activeResources();
    relay = await startFaultRelay({ target: daemon.address });
  });
  afterEach(async (context) => {
    await bk?.close();
    await relay.stop();
    if (context.task.result?.state !== "fail") await expectNoLeaks(before, context.task.name);
  });

  /** Connects through the relay (TLS, when the daemon has it, stays end to end). */
  async function connectThroughRelay(keepalive?: { intervalMs: number; timeoutMs: number }): Promise<BuildKitClient> {
    bk = await connect(relay.address, { ...daemon.connectOptions, ...(keepalive ? { keepalive } : {}) });
    return bk;
  }

  /** Runs a build with a 60 s quiet step and applies `fault` once the step has printed its first line. */
  async function buildFaultedMidStep(fault: () => void, keepalive?: { intervalMs: number; timeoutMs: number }) {
    await connectThroughRelay(keepalive);
    const run = bk.build({ context: { files: quietStep(60) } });
    const events: BuildEvent[] = [];
    const consumed = (async () => {
      for await (const event of run.events) events.push(event);
    })();
    await eventSeen(run, events, (e) => e.type === "log" && e.line.startsWith("step-started"));
    const faultedAt = Date.now();
    fault();
    const error = await run.then(
      () => new Error("the build succeeded"),
      (err: unknown) => err,
    );
    const tookMs = Date.now() - faultedAt;
    await consumed;
    return { error, tookMs };
  }

  it("a connection cut mid-build fails it with UNAVAILABLE, the cause attached", async () => {
    const { error, tookMs } = await buildFaultedMidStep(() => relay.cut());
    console.log(`[${daemon.name}] cut: failed ${tookMs} ms later: ${(error as Error).message}`);
    expect(error).toBeInstanceOf(TransportError);
    expect(error).toMatchObject({ code: "UNAVAILABLE", address: relay.address });
    expect((error as Error).message).toMatch(/closed by the other side|broke/);
  });

  it("a connection reset mid-build fails it with UNAVAILABLE, the cause attached", async () => {
    const { error, tookMs } = await buildFaultedMidStep(() => relay.reset());
    console.log(`[${daemon.name}] reset: failed ${tookMs} ms later: ${(error as Error).message}`);
    expect(error).toBeInstanceOf(TransportError);
    expect(error).toMatchObject({ code: "UNAVAILABLE", address: relay.address });
    expect((error as Error).cause).toBeInstanceOf(Error);
  });

  it("a connection gone silent mid-build fails it with UNAVAILABLE after keepalive interval + timeout", async () => {
    const keepalive = { intervalMs: 500, timeoutMs: 1000 };
    const { error, tookMs } = await buildFaultedMidStep(() => relay.stall(), keepalive);
    console.log(`[${daemon.name}] stall: failed ${tookMs} ms later (keepalive ${keepalive.intervalMs} + ${keepalive.timeoutMs} ms): ${(error as Error).message}`);
    expect(error).toBeInstanceOf(TransportError);
    expect(error).toMatchObject({ code: "UNAVAILABLE", address: relay.address });
    expect((error as Error).message).toMatch(/did not answer a keepalive ping within 1000 ms/);
  });

  it("close() on the client mid-build is the caller's doing: CANCELED, not UNAVAILABLE", async () => {
    const { error } = await buildFaultedMidStep(() => void bk.close());
    expect(error).toBeInstanceOf(TransportError);
    expect(error).toMatchObject({ code: "CANCELED", address: relay.address });
    expect((error as Error).message).toBe(`the client for ${relay.address} was closed`);
  });

  it("a step quiet for longer than keepalive interval + timeout, on a live connection, is not failed", async () => {
    // BuildKit v0.24 sends nothing while a step sleeps: only our liveness
    // checks cross, and they must stay within gRPC's ping policy (a fourth
    // PING without data in between would be answered with GOAWAY).
    await connectThroughRelay({ intervalMs: 300, timeoutMs: 300 });
    const { events } = await runCollecting(bk.build({ context: { files: quietStep(4) } }));
    expect(events.some((e) => e.type === "log" && e.line === "step-done")).toBe(true);
  });

  it("a slow connection (128 KiB/s each way) is not taken for a dead one: a build with a 1 MiB context succeeds", async () => {
    await connectThroughRelay({ intervalMs: 300, timeoutMs: 1000 });
    relay.slow(128 * 1024);
    const started = Date.now();
    const { events } = await runCollecting(
      bk.build({
        context: { files: { Dockerfile: `FROM ${BASE_IMAGE}\nCOPY data.bin /\nRUN wc -c /data.bin && echo ${Date.now()}\n`, "data.bin": randomBytes(1024 * 1024) } },
      }),
    );
    console.log(`[${daemon.name}] slow: built in ${Date.now() - started} ms at 128 KiB/s`);
    expect(events.some((e) => e.type === "log" && e.line.startsWith("1048576 "))).toBe(true);
  });

  it("after a build lost its connection, the next build on the same client dials again", async () => {
    const { error } = await buildFaultedMidStep(() => relay.cut());
    expect(error).toMatchObject({ code: "UNAVAILABLE" });
    await runCollecting(bk.build({ context: { files: { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo again-${Date.now()}\n` } } }));
    expect(relay.connections).toBe(2);
  });

  it("a connection cut during a local export leaves the destination as it was", async () => {
    const out = tempDir("faults-local");
    try {
      writeFileSync(join(out.path, "previous.txt"), "from the last build");
      mkdirSync(join(out.path, "data"));
      await connectThroughRelay();
      // 40 MiB of output, so the export is still running when the cut comes.
      const dockerfile = `FROM ${BASE_IMAGE} AS build\nRUN mkdir /out && head -c 41943040 /dev/urandom > /out/big.bin && echo ${Date.now()} > /out/stamp\nFROM scratch\nCOPY --from=build /out /\n`;
      const run = bk.build({ context: { files: { Dockerfile: dockerfile } }, outputs: [{ type: "local", dest: join(out.path, "data") }] });
      const events: BuildEvent[] = [];
      const consumed = (async () => {
        for await (const event of run.events) events.push(event);
      })();
      await eventSeen(run, events, (e) => e.type === "vertex.started" && /export|copying files/i.test(e.name));
      relay.cut();
      const error = await run.then(
        () => new Error("the build succeeded"),
        (err: unknown) => err,
      );
      await consumed;
      expect(error).toBeInstanceOf(TransportError);
      expect(readdirSync(out.path).sort()).toEqual(["data", "previous.txt"]); // no staging directory left
      expect(readdirSync(join(out.path, "data"))).toEqual([]);
      expect(existsSync(join(out.path, "data", "big.bin"))).toBe(false);
    } finally {
      out.remove();
    }
  });
});
