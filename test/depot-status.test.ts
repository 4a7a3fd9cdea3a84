// The status relay to Depot (ReportStatusStream) on its own, against a small
// Connect server of the test's own: the failure modes asserted here (a Depot
// that refuses the stream, one that stops reading it) are what no real part
// here produces on demand. Batching runs on a manual clock, so "one batch per
// interval" is exact. The relay in a real build, against the local Depot, is
// in depot-build.test.ts.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it, vi } from "vitest";
import { StatusReporter } from "../src/depot/status-reporter.js";
import { createDepotApi } from "../src/depot/transport.js";
import { BuildService, type ReportStatusStreamRequest } from "../src/gen/depot/cli/v1/build_pb.js";
import { type StatusResponse, StatusResponseSchema } from "../src/gen/moby/buildkit/v1/control_pb.js";
import { ManualClock } from "./support/manual-clock.js";

type Behaviour = "record" | "refuse" | "stall";

interface FakeDepot {
  url: string;
  requests: ReportStatusStreamRequest[];
  tokens: string[];
  /** Resolves a stalled stream (it then reads everything and answers). */
  release(): void;
  close(): Promise<void>;
}

const servers: FakeDepot[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function fakeDepot(behaviour: Behaviour): Promise<FakeDepot> {
  const requests: ReportStatusStreamRequest[] = [];
  const tokens: string[] = [];
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.rpc(BuildService.method.reportStatusStream, async (stream, context) => {
        tokens.push(context.requestHeader.get("authorization") ?? "");
        if (behaviour === "refuse") throw new ConnectError("not for this build", Code.PermissionDenied);
        if (behaviour === "stall") await released; // reads nothing until told
        for await (const request of stream) requests.push(request);
        return {};
      }),
  });
  const server = http2.createServer(handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const fake: FakeDepot = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    tokens,
    release,
    close: () =>
      new Promise<void>((resolve) => {
        release();
        server.close(() => resolve());
        for (const session of sessions) session.destroy();
      }),
  };
  servers.push(fake);
  return fake;
}

const INTERVAL_MS = 1_000;

function reporter(depot: FakeDepot, clock: ManualClock, options: { maxPendingBytes?: number; flushTimeoutMs?: number } = {}): StatusReporter {
  return new StatusReporter({ api: createDepotApi(depot.url, "2"), buildId: "build-1", token: "build-token-secret", platform: "amd64", intervalMs: INTERVAL_MS, clock, ...options });
}

function log(text: string): StatusResponse {
  return create(StatusResponseSchema, { logs: [{ vertex: "sha256:v", stream: 1n, msg: new TextEncoder().encode(text) }] });
}

describe("StatusReporter", () => {
  it("sends one batch per interval with everything queued, with the build token, and ends the stream on close", async () => {
    const depot = await fakeDepot("record");
    const clock = new ManualClock();
    const relay = reporter(depot, clock);
    relay.push(log("one"));
    relay.push(log("two"));
    relay.push(log("three"));
    await clock.advance(INTERVAL_MS - 1);
    expect(depot.requests).toHaveLength(0);
    await clock.advance(1);
    await vi.waitFor(() => expect(depot.requests).toHaveLength(1));
    relay.push(log("four"));
    await clock.advance(INTERVAL_MS);
    await vi.waitFor(() => expect(depot.requests).toHaveLength(2));

    relay.push(log("five"));
    const summary = await relay.close(); // sends what is left at once
    expect(summary).toEqual({ sent: 5, dropped: 0 });
    expect(depot.requests.map((r) => r.statuses.length)).toEqual([3, 1, 1]);
    expect(depot.requests.every((r) => r.buildId === "build-1")).toBe(true);
    const texts = depot.requests.flatMap((r) => r.statuses.flatMap((s) => s.logs.map((l) => new TextDecoder().decode(l.msg))));
    expect(texts).toEqual(["one", "two", "three", "four", "five"]);
    expect(depot.tokens).toEqual(["Bearer build-token-secret"]);
    expect(clock.pending()).toBe(0);
  });

  it("a Depot that refuses the stream costs nothing but the updates: no throw, the rest dropped and counted", async () => {
    const depot = await fakeDepot("refuse");
    const clock = new ManualClock();
    const relay = reporter(depot, clock);
    relay.push(log("one"));
    await clock.advance(INTERVAL_MS);
    await vi.waitFor(async () => expect(depot.tokens).toHaveLength(1));
    for (let i = 0; i < 10; i++) relay.push(log(`after ${i}`));
    const summary = await relay.close();
    expect(summary.failure).toBe("PermissionDenied");
    expect(summary.sent + summary.dropped).toBe(11);
    expect(summary.dropped).toBeGreaterThanOrEqual(10);
  });

  it("a Depot that stops reading: the queue stays within its bound (drops counted) and close gives up after its flush timeout", async () => {
    const depot = await fakeDepot("stall");
    const clock = new ManualClock();
    const maxPendingBytes = 64 * 1024;
    const relay = reporter(depot, clock, { maxPendingBytes, flushTimeoutMs: 2_000 });
    const chunk = "x".repeat(16 * 1024);
    // Far more than HTTP/2's window and the bound together: Depot reads nothing.
    for (let i = 0; i < 100; i++) {
      relay.push(log(chunk));
      if (i % 4 === 3) await clock.advance(INTERVAL_MS);
    }
    const closing = relay.close();
    await clock.advance(2_000);
    const summary = await closing;
    expect(summary.failure).toBe("flush timeout");
    expect(summary.dropped).toBeGreaterThan(0);
    expect(summary.sent + summary.dropped).toBe(100);
    // What was handed to the stream and what waited never exceeded the window plus the bound.
    expect(summary.sent * chunk.length).toBeLessThan(1024 * 1024 + maxPendingBytes);
    expect(clock.pending()).toBe(0);
    expect(depot.requests).toHaveLength(0);
  });
});
