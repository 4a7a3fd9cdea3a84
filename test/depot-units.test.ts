// The Depot client's pure parts: platform names, which failures are retried
// and how long between tries, what FinishBuild reports for an error, and the
// checks made before any call. No server is involved; everything that talks
// to Depot is tested against the local Depot in depot-client.test.ts.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AbortError, BuildKitNodeError, DepotClient, DepotError } from "../src/depot/index.js";
import { BuildError } from "../src/index.js";
import { finishResult } from "../src/depot/builds.js";
import { isRefusedPush } from "../src/depot/machine-build.js";
import { platformDigest, platformOutputs } from "../src/depot/platform-outputs.js";
import { DEPOT_REGISTRY, savedImage, withDepotCredentials } from "../src/depot/saved-image.js";
import { StepTimings } from "../src/depot/step-timings.js";
import { StatusResponseSchema } from "../src/gen/moby/buildkit/v1/control_pb.js";
import { depotCallError } from "../src/depot/errors.js";
import { normalizePlatform } from "../src/depot/platform.js";
import { backoffMs, isTransient, sleep, withRetry } from "../src/depot/retry.js";

afterEach(() => {
  vi.unstubAllEnvs();
});

describe("normalizePlatform", () => {
  it.each([
    ["amd64", "amd64"],
    ["linux/amd64", "amd64"],
    ["x86_64", "amd64"],
    ["arm64", "arm64"],
    ["linux/arm64", "arm64"],
    ["aarch64", "arm64"],
  ])("%s → %s", (input, expected) => {
    expect(normalizePlatform(input)).toBe(expected);
  });

  it.each(["", "arm", "linux/arm/v7", "windows/amd64", "s390x", "armv7l"])("refuses %j", (input) => {
    expect(() => normalizePlatform(input)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});

describe("retry policy", () => {
  it("retries unavailable, resource_exhausted, deadline_exceeded and aborted", () => {
    for (const code of [Code.Unavailable, Code.ResourceExhausted, Code.DeadlineExceeded, Code.Aborted]) {
      expect(isTransient(new ConnectError("x", code))).toBe(true);
    }
  });

  it("never retries what another try cannot fix", () => {
    for (const code of [Code.Unauthenticated, Code.PermissionDenied, Code.NotFound, Code.InvalidArgument, Code.FailedPrecondition, Code.Canceled]) {
      expect(isTransient(new ConnectError("x", code))).toBe(false);
    }
    expect(isTransient(new Error("not a call"))).toBe(false);
  });

  it("retries internal only when it is a broken connection", () => {
    expect(isTransient(new ConnectError("server bug", Code.Internal))).toBe(false);
    const reset = Object.assign(new Error("write EPIPE"), { code: "EPIPE" });
    expect(isTransient(new ConnectError("write EPIPE", Code.Internal, undefined, undefined, reset))).toBe(true);
  });

  it("sees through a DepotError to its ConnectError", () => {
    expect(isTransient(depotCallError("CreateBuild", new ConnectError("x", Code.Unavailable), []))).toBe(true);
  });

  it("backs off from 200 ms, doubling up to 5 s, with jitter in the upper half", () => {
    expect(backoffMs(0, () => 0)).toBe(100);
    expect(backoffMs(0, () => 1)).toBe(200);
    expect(backoffMs(3, () => 1)).toBe(1600);
    expect(backoffMs(10, () => 0)).toBe(2500);
    expect(backoffMs(30, () => 1)).toBe(5000);
  });

  it("gives up after maxAttempts and stops at once on a permanent error", async () => {
    let calls = 0;
    const unavailable = () => {
      calls++;
      return Promise.reject(new ConnectError("down", Code.Unavailable));
    };
    await expect(withRetry("Test", unavailable, { maxAttempts: 3 })).rejects.toThrow("down");
    expect(calls).toBe(3);

    calls = 0;
    const denied = () => {
      calls++;
      return Promise.reject(new ConnectError("no", Code.PermissionDenied));
    };
    await expect(withRetry("Test", denied, { maxAttempts: 5 })).rejects.toThrow("no");
    expect(calls).toBe(1);
  });

  it("sleep leaves no timer behind when aborted", async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const controller = new AbortController();
    const slept = sleep(60_000, controller.signal);
    expect(timers()).toBe(before + 1);
    controller.abort(new Error("stop"));
    await expect(slept).rejects.toThrow("stop");
    expect(timers()).toBe(before);
  });
});

describe("depotCallError", () => {
  it("names the method, keeps the code and the ConnectError, and masks tokens", () => {
    const cause = new ConnectError("token sekret-123 is not valid", Code.Unauthenticated);
    const err = depotCallError("CreateBuild", cause, ["sekret-123"]);
    expect(err).toBeInstanceOf(DepotError);
    expect(err).toBeInstanceOf(BuildKitNodeError);
    expect((err as DepotError).method).toBe("CreateBuild");
    expect(err.code).toBe("UNAUTHENTICATED");
    expect(err.message).toContain("CreateBuild");
    expect(err.message).not.toContain("sekret-123");
    expect(err.cause).toBe(cause);
  });

  it("is an AbortError when the caller's signal ended the call", () => {
    const controller = new AbortController();
    controller.abort();
    const err = depotCallError("ListProjects", new ConnectError("canceled", Code.Canceled), [], controller.signal);
    expect(err).toBeInstanceOf(AbortError);
  });
});

describe("finishResult", () => {
  it("reports success for no error", () => {
    expect(finishResult(undefined).case).toBe("success");
  });

  it.each([
    ["our AbortError", new AbortError("aborted")],
    ["a CANCELED error", new BuildKitNodeError("CANCELED", "Depot canceled the build")],
    ["a canceled ConnectError", new ConnectError("canceled", Code.Canceled)],
    ["a DOM AbortError", new DOMException("aborted", "AbortError")],
  ])("reports canceled for %s", (_name, error) => {
    expect(finishResult(error).case).toBe("canceled");
  });

  it("reports anything else as an error with its message, tokens masked", () => {
    expect(finishResult(new Error("boom"))).toEqual({ case: "error", value: { error: "boom" } });
    expect(finishResult("plain text")).toEqual({ case: "error", value: { error: "plain text" } });
    expect(finishResult(new Error("push with tok-1 failed"), ["tok-1"])).toEqual({ case: "error", value: { error: "push with *** failed" } });
    expect(finishResult(new BuildKitNodeError("TIMEOUT", "slow")).case).toBe("error");
  });
});

describe("DepotClient before any call", () => {
  it("without a token fails at the first call, saying to set DEPOT_TOKEN", async () => {
    vi.stubEnv("DEPOT_TOKEN", "");
    const depot = new DepotClient({ apiUrl: "http://127.0.0.1:9" });
    for (const call of [() => depot.projects.list(), () => depot.builds.create({ projectId: "p" })]) {
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BuildKitNodeError);
      expect((err as BuildKitNodeError).code).toBe("INVALID_ARGUMENT");
      expect((err as Error).message).toContain("DEPOT_TOKEN");
    }
  });

  it("refuses an API URL that is not http(s) and an unknown HTTP version", () => {
    expect(() => new DepotClient({ token: "t", apiUrl: "api.depot.dev" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => new DepotClient({ token: "t", httpVersion: "3" as "2" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });

  it("checks its input before calling", async () => {
    const depot = new DepotClient({ token: "t", apiUrl: "http://127.0.0.1:9" });
    await expect(depot.projects.get("")).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(depot.projects.create({ name: "x", regionId: "us-east-1", hardware: "HARDWARE_1X1" as "HARDWARE_4X4" })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    await expect(depot.projects.create({ name: "x", regionId: "us-east-1", cachePolicy: { keepGb: -1, keepDays: 7 } })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
    });
  });

  it("depot.build() refuses a platform Depot has no machine for before registering the build", async () => {
    // Nothing listens at the API URL: a CreateBuild would fail UNAVAILABLE, after its retries.
    const depot = new DepotClient({ token: "t", apiUrl: "http://127.0.0.1:9" });
    const err = await Promise.resolve(depot.build({ projectId: "p", platforms: ["linux/amd64", "linux/riscv64"], context: { files: {} }, dockerfileContent: "FROM scratch\n" })).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect((err as Error).message).toContain("linux/riscv64");
  });

  it("depot.build() fails with one of its own errors when an upload breaks while it is spooled for several platforms", async () => {
    const depot = new DepotClient({ token: "t", apiUrl: "http://127.0.0.1:9" });
    // The stream fails before anything is registered: no Depot call is made.
    const upload = new Readable({ read() { this.destroy(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })); } });
    const err = await Promise.resolve(
      depot.build({ projectId: "p", platforms: ["linux/amd64", "linux/arm64"], context: { tar: upload }, outputs: [{ type: "image", name: "127.0.0.1:5000/x:1", push: true }] }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BuildKitNodeError);
    expect(err).toMatchObject({ code: "UNAVAILABLE" });
    expect((err as Error).message).toMatch(/ECONNRESET/);
  });
});

describe("isRefusedPush", () => {
  const buildError = (daemonMessage: string) => new BuildError({ message: `build failed: ${daemonMessage}`, daemonMessage });

  it.each([
    "failed to push 127.0.0.1:5000/app: unknown: provided digest did not match uploaded content",
    "failed to push 127.0.0.1:5000/app: unexpected status from PUT request to http://127.0.0.1:5000/v2/app/manifests/sha256:ab: 500 Internal Server Error",
    "failed to push r.example/app: failed commit on ref \"layer-sha256:ab\": unexpected commit digest sha256:cd, expected sha256:ab",
    "failed to push r.example/app: DIGEST_INVALID: digest invalid",
  ])("retries %j", (message) => {
    expect(isRefusedPush(buildError(message))).toBe(true);
  });

  it("retries an Engine push the registry answered with a 5xx", () => {
    const engine = new BuildKitNodeError("UNKNOWN", "pushing r.example/app:v1-linux-amd64: received unexpected HTTP status: 503 Service Unavailable");
    expect(isRefusedPush(engine)).toBe(true);
  });

  it.each([
    ["a failing RUN", buildError('process "/bin/sh -c exit 1" did not complete successfully: exit code: 1')],
    ["a refused login", buildError("failed to push r.example/app: unexpected status from HEAD request: 401 Unauthorized")],
    ["a 500 with no push", buildError("failed to resolve source metadata: unexpected status: 500 Internal Server Error")],
    ["an unauthenticated Engine push", new BuildKitNodeError("UNAUTHENTICATED", "pushing r.example/app: 500 Internal Server Error")],
    ["not an error of ours", new Error("failed to push: 500 Internal Server Error")],
  ])("does not retry %s", (_, error) => {
    expect(isRefusedPush(error)).toBe(false);
  });
});

describe("savedImage", () => {
  const build = { id: "b1", token: "build-token", projectId: "p1" };

  it("takes the names to push and the credentials Depot answered", () => {
    const saved = savedImage(
      {
        additionalTags: [
          { tag: "registry.example/p1:b1", push: true },
          { tag: "registry.example/p1:latest", push: true },
          { tag: "registry.example/p1:not-pushed", push: false },
        ],
        additionalCredentials: [{ host: "Registry.Example", token: Buffer.from("x-token:secret:with:colons").toString("base64") }],
      },
      build,
      ["latest"],
    );
    expect(saved.tags).toEqual(["registry.example/p1:b1", "registry.example/p1:latest"]);
    expect([...saved.credentials]).toEqual([["registry.example", { username: "x-token", password: "secret:with:colons" }]]);
  });

  it("falls back as the depot CLI does: <registry>/<project>:<build> and the save tags, x-token with the build token", () => {
    const saved = savedImage({ additionalTags: [], additionalCredentials: [] }, build, ["latest", "v1"]);
    expect(saved.tags).toEqual([`${DEPOT_REGISTRY}/p1:b1`, `${DEPOT_REGISTRY}/p1:latest`, `${DEPOT_REGISTRY}/p1:v1`]);
    expect(saved.credentials.get(DEPOT_REGISTRY)).toEqual({ username: "x-token", password: "build-token" });
  });

  it("refuses credentials it cannot read, without echoing them", () => {
    const token = Buffer.from("no-colon-here").toString("base64");
    const read = () => savedImage({ additionalTags: [], additionalCredentials: [{ host: "r.example", token }] }, build, []);
    expect(read).toThrow(expect.objectContaining({ code: "INTERNAL" }));
    expect(() => read()).toThrow(expect.not.objectContaining({ message: expect.stringContaining("no-colon-here") }));
  });

  it("Depot's credentials go first for its registry, the base lookup for every other host", async () => {
    const auth = withDepotCredentials({ "other.example": { username: "me", password: "mine" } }, new Map([["registry.example", { username: "x-token", password: "t" }]]));
    expect(typeof auth).toBe("function");
    const lookup = auth as (host: string) => Promise<unknown>;
    expect(await lookup("registry.example")).toEqual({ username: "x-token", password: "t" });
    expect(await lookup("other.example")).toEqual({ username: "me", password: "mine" });
    expect(await lookup("third.example")).toBeUndefined();
  });
});

describe("per-platform outputs", () => {
  const image = { type: "image" as const, name: "127.0.0.1:5000/app:v1,127.0.0.1:5000/other:v2", push: true };

  it("by digest: the same names, pushed by digest; the digest found by repository", () => {
    expect(platformOutputs([image], "linux/arm64", "by-digest")).toEqual([{ ...image, pushByDigest: true }]);
    const digest = `sha256:${"a".repeat(64)}`;
    const result = { ref: "r", exporterResponse: {}, pushed: [{ name: `127.0.0.1:5000/app@${digest}`, digest }, { name: `127.0.0.1:5000/other@${digest}`, digest }] };
    expect(platformDigest("127.0.0.1:5000/other:v2", "linux/arm64", result, "by-digest")).toBe(digest);
  });

  it("helper tags (dockerd): <tag>-<os>-<arch>, the digest found by that tag; local files in a subdirectory per platform", () => {
    expect(platformOutputs([image, { type: "local", dest: "out" }], "linux/arm64", "helper-tags")).toEqual([
      { ...image, name: "127.0.0.1:5000/app:v1-linux-arm64,127.0.0.1:5000/other:v2-linux-arm64" },
      { type: "local", dest: "out/linux_arm64" },
    ]);
    const result = { ref: "r", exporterResponse: {}, pushed: [{ name: "127.0.0.1:5000/app:v1-linux-arm64", digest: "sha256:bb" }] };
    expect(platformDigest("127.0.0.1:5000/app:v1", "linux/arm64", result, "helper-tags")).toBe("sha256:bb");
    expect(() => platformDigest("127.0.0.1:5000/other:v2", "linux/arm64", result, "helper-tags")).toThrow(expect.objectContaining({ code: "INTERNAL" }));
  });
});

describe("StepTimings", () => {
  const at = (ms: number) => timestampFromMs(ms);

  it("keeps each vertex's last state: times, cache, error, inputs; in the order they started", () => {
    const timings = new StepTimings();
    timings.update(create(StatusResponseSchema, { vertexes: [{ digest: "b", name: "[2/2] RUN make", inputs: ["a"], started: at(2_000) }] }));
    timings.update(create(StatusResponseSchema, { vertexes: [{ digest: "a", name: "[1/2] FROM base", cached: true, started: at(1_000), completed: at(1_000) }] }));
    timings.update(create(StatusResponseSchema, { vertexes: [{ digest: "b", name: "[2/2] RUN make", inputs: ["a"], started: at(2_000), completed: at(3_500), error: "exit code: 2" }] }));
    timings.update(create(StatusResponseSchema, { vertexes: [{ digest: "c", name: "never started" }] }));
    const steps = timings.steps("linux/arm64");
    expect(steps.map((s) => [s.name, s.durationMs, s.cached, s.error, s.inputDigests])).toEqual([
      ["[linux/arm64] [1/2] FROM base", 0, true, undefined, []],
      ["[linux/arm64] [2/2] RUN make", 1_500, false, "exit code: 2", ["a"]],
    ]);
    expect(timestampMs(steps[1]!.startTime!)).toBe(2_000);
  });
});
