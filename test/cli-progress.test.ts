// The progress modes of `buildkit-node build`, from real builds on each test
// daemon: plain (parsed line by line), rawjson (every line an event), tty
// (rendered on a pseudo-terminal and read back as a screen), auto. The
// renderers are also driven in-process with a real build's events, given a
// platform as a multi-platform Depot build would (no such build runs here).
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildEvent } from "../src/index.js";
import { createRenderer, resolveProgressMode } from "../src/progress/index.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE } from "./support/registry.js";
import { builderFlags, cliBinary, cliEnv, finalScreen, hasScript, runCli, runCliOnTerminal, scratchDir, stripAnsi } from "./cli-harness.js";

const EVENT_TYPES = ["vertex.started", "vertex.completed", "vertex.cached", "vertex.errored", "log", "progress", "warning"];

/**
 * A build whose RUN step logs over two seconds, new to the cache on every
 * test run. The copied file is new too: BuildKit shows a concurrent build's
 * identical cached step in this build's progress as well (under its digest).
 */
function progressContext(label: string) {
  const marker = `${label}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  return scratchDir(label, {
    Dockerfile: `FROM ${BASE_IMAGE}\nCOPY msg.txt /msg.txt\nRUN echo "tick 1 ${marker}" && sleep 1 && echo "tick 2" && sleep 1 && echo "tick 3"\n`,
    "msg.txt": `hello from ${marker}\n`,
  });
}

const contexts: { remove(): void }[] = [];

beforeAll(async () => {
  await cliBinary();
});

afterAll(() => {
  for (const ctx of contexts) ctx.remove();
});

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  beforeAll(() => assertDaemon(daemon));
  const BUILDER = builderFlags(daemon);

  let rawjsonRun: ReturnType<typeof runCli> | undefined;
  /** One real build with --progress=rawjson, shared by the tests that read its events. */
  function rawjsonBuild(): ReturnType<typeof runCli> {
    if (!rawjsonRun) {
      const ctx = progressContext("rawjson");
      contexts.push(ctx);
      rawjsonRun = runCli(["build", ...BUILDER, "--progress=rawjson", ctx.path]);
    }
    return rawjsonRun;
  }

  describe("--progress=plain", () => {
    it("prints one stable line per event: step headers, timed output, DONE with the time, then CACHED on a rebuild", async () => {
      const ctx = progressContext("plain");
      contexts.push(ctx);
      const first = await runCli(["build", ...BUILDER, "--progress=plain", ctx.path]);
      expect(first.code, first.stderr).toBe(0);
      const lines = first.stderr.split("\n");
      expect(first.stderr).not.toContain("\u001b");
      for (const line of lines) expect(line).toMatch(/^$|^#\d+ \S/);

      const run = /^#(\d+) \[3\/3\] RUN echo "tick 1/m.exec(first.stderr);
      expect(run).not.toBeNull();
      const n = run![1]!;
      const stepLines = lines.filter((l) => l.startsWith(`#${n} `));
      expect(stepLines.filter((l) => /^#\d+ \d+\.\d{3} tick \d/.test(l)).map((l) => l.replace(/^#\d+ \d+\.\d{3} /, "").replace(/ .*/, ""))).toEqual(["tick", "tick", "tick"]);
      const offsets = stepLines.flatMap((l) => /^#\d+ (\d+\.\d{3}) tick (\d)/.exec(l)?.slice(1, 2) ?? []).map(Number);
      expect(offsets[2]! - offsets[0]!).toBeGreaterThanOrEqual(1.5); // seconds since the step started
      expect(stepLines.at(-1)).toMatch(/^#\d+ DONE (\d+\.\d)s$/);
      expect(Number(/DONE (\d+\.\d)s/.exec(stepLines.at(-1)!)![1])).toBeGreaterThanOrEqual(1.5);
      // Every step ends one way or the other.
      const headers = new Set(lines.flatMap((l) => /^#(\d+) [[a-z]/.exec(l)?.[1] ?? []));
      for (const step of headers) expect(first.stderr).toMatch(new RegExp(`^#${step} (DONE \\d+\\.\\ds|CACHED)$`, "m"));

      const second = await runCli(["build", ...BUILDER, "--progress=plain", ctx.path]);
      expect(second.code, second.stderr).toBe(0);
      expect(second.stderr).toMatch(/^#(\d+) \[3\/3\] RUN echo "tick 1.*\n#\1 CACHED$/m);
      expect(second.stderr).toMatch(/^#(\d+) \[2\/3\] COPY msg.txt \/msg.txt\n#\1 CACHED$/m);
    });

    it("is what BUILDKIT_PROGRESS=plain and auto (stderr not a terminal) choose", async () => {
      const ctx = progressContext("plain-env");
      contexts.push(ctx);
      for (const [args, env] of [[[], { BUILDKIT_PROGRESS: "plain" }], [["--progress=auto"], {}]] as const) {
        const result = await runCli(["build", ...BUILDER, ...args, ctx.path], { env: cliEnv(env) });
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr).toMatch(/^#1 \[internal\] load build definition from Dockerfile$/m);
        expect(result.stderr).not.toContain("\u001b");
      }
    });
  });

  describe("--progress=rawjson", () => {
    it("prints nothing but the library's events, one JSON object per line", async () => {
      const result = await rawjsonBuild();
      expect(result.code, result.stderr).toBe(0);
      const lines = result.stderr.trimEnd().split("\n");
      const events = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      for (const event of events) expect(EVENT_TYPES).toContain(event.type);
      const types = new Set(events.map((e) => e.type));
      for (const type of ["vertex.started", "vertex.completed", "log", "progress"]) expect(types).toContain(type);
      const started = events.find((e) => e.type === "vertex.started")!;
      expect(started.startedAt).toEqual(new Date(started.startedAt as string).toISOString());
      expect(events.filter((e) => e.type === "log").map((e) => e.line)).toEqual(expect.arrayContaining(["tick 2", "tick 3"]));
    });
  });

  describe.runIf(hasScript())("--progress=tty on a terminal", () => {
    it("redraws in place and leaves every step, its time and a summary on the screen", async () => {
      const ctx = progressContext("tty");
      contexts.push(ctx);
      const result = await runCliOnTerminal(["build", ...BUILDER, "--progress=tty", ctx.path], { columns: 100, rows: 40 });
      expect(result.code, result.stdout.toString()).toBe(0);
      const raw = result.stdout.toString();
      // Live frames: cursor up over the last frame; the RUN step's output shown while it ran.
      expect(raw).toMatch(/\u001b\[\d+A/);
      expect(stripAnsi(raw)).toMatch(/ => => # tick 2/);

      const screen = finalScreen(raw);
      const text = screen.join("\n");
      expect(screen[0]).toMatch(/^\[\+\] Building \d+\.\ds \((\d+)\/\1\) FINISHED$/);
      // The base image's step has no "[1/3]": BuildKit shares it with concurrent builds of the same image,
      // under the name the first of them gave it.
      for (const name of ["[internal] load build definition from Dockerfile", "FROM 127.0.0.1:5000/busybox:latest", "[2/3] COPY msg.txt /msg.txt", '[3/3] RUN echo "tick 1']) {
        // Each step once: frames replaced each other rather than piling up.
        expect(screen.filter((line) => line.includes(name)), `${name} on the final screen:\n${text}`).toHaveLength(1);
      }
      expect(text).toMatch(/^ => \[3\/3\] RUN echo "tick 1.*\s(\d+\.\d)s$/m);
      expect(text).not.toContain(" => => # tick"); // output of finished steps is gone
      expect(screen.at(-1)).toMatch(/^Built in \d+\.\ds: \d+ steps, \d+ cached$/);
      for (const line of screen) expect(line.length).toBeLessThanOrEqual(100);
    });

    it("is what auto chooses on a terminal, unless CI or NO_COLOR is set", async () => {
      const ctx = progressContext("tty-auto");
      contexts.push(ctx);
      const tty = await runCliOnTerminal(["build", ...BUILDER, ctx.path]);
      expect(tty.code).toBe(0);
      expect(stripAnsi(tty.stdout.toString())).toMatch(/\[\+\] Building .* FINISHED/);
      for (const env of [{ CI: "true" }, { NO_COLOR: "1" }]) {
        const plain = await runCliOnTerminal(["build", ...BUILDER, ctx.path], { env: cliEnv(env) });
        expect(plain.code).toBe(0);
        expect(plain.stdout.toString()).not.toContain("[+] Building");
        expect(plain.stdout.toString()).toMatch(/^#\d+ DONE \d+\.\ds\r?$/m);
      }
    });
  });

  describe("the renderers, in-process", () => {
    let rawEvents: BuildEvent[] = [];
    beforeAll(async () => {
      const result = await rawjsonBuild();
      expect(result.code, result.stderr).toBe(0);
      rawEvents = result.stderr.trimEnd().split("\n").map((line) => reviveEvent(JSON.parse(line) as Record<string, unknown>));
    }, 60_000);

    /** A real build's events (from the rawjson test), tagged as a multi-platform build's. */
    function eventsOf(platform: string): BuildEvent[] {
      expect(rawEvents.length).toBeGreaterThan(0);
      return rawEvents.map((e) => ({ ...e, platform }));
    }

    function capture(isTTY = false, columns = 100): PassThrough & { text(): string; isTTY: boolean; columns: number } {
      const out = new PassThrough() as PassThrough & { text(): string; isTTY: boolean; columns: number };
      let text = "";
      out.setEncoding("utf8");
      out.on("data", (chunk: string) => (text += chunk));
      return Object.assign(out, { text: () => text, isTTY, columns });
    }

    it("plain prefixes steps with their platform and numbers each platform's steps apart", () => {
      const out = capture();
      const renderer = createRenderer("plain", out);
      // Two platforms' events interleaved: same digests, different steps.
      const amd = eventsOf("linux/amd64");
      const arm = eventsOf("linux/arm64");
      for (let i = 0; i < amd.length; i++) {
        renderer.event(amd[i]!);
        renderer.event(arm[i]!);
      }
      renderer.done();
      const text = out.text();
      expect(text).toMatch(/^#1 \[linux\/amd64\] \[internal\] load build definition from Dockerfile$/m);
      expect(text).toMatch(/^#2 \[linux\/arm64\] \[internal\] load build definition from Dockerfile$/m);
      const runHeaders = text.split("\n").filter((l) => /^#\d+ \[linux\/(amd64|arm64)\] \[3\/3\] RUN/.test(l));
      expect(new Set(runHeaders.map((l) => l.split(" ")[0])).size).toBe(2);
    });

    it("tty shows the platform of each step and ends with the summary", () => {
      const out = capture(true, 120);
      const renderer = createRenderer("tty", out, { env: {} });
      for (const event of eventsOf("linux/arm64")) renderer.event(event);
      renderer.done();
      const screen = finalScreen(out.text());
      expect(screen).toEqual(expect.arrayContaining([expect.stringMatching(/^ => \[linux\/arm64\] \[3\/3\] RUN echo "tick 1/)]));
      expect(screen.at(-1)).toMatch(/^Built in \d+\.\ds: \d+ steps, \d+ cached$/);
    });

    it("tty marks the step a failed or aborted build left running", () => {
      const out = capture(true);
      const renderer = createRenderer("tty", out, { env: { NO_COLOR: "1" } });
      const started = rawEvents.find((e) => e.type === "vertex.started" && e.name.includes("RUN"))!;
      renderer.event(started);
      renderer.done({ error: Object.assign(new Error("the build was aborted"), { name: "AbortError", code: "CANCELED" }) });
      const screen = finalScreen(out.text());
      expect(out.text()).not.toMatch(/\u001b\[[0-9;]*m/); // NO_COLOR: no colors
      expect(screen[0]).toMatch(/CANCELED$/);
      expect(screen).toEqual(expect.arrayContaining([expect.stringMatching(/^ => CANCELED \[3\/3\] RUN/), expect.stringMatching(/^Canceled after/)]));
    });

    it("rawjson writes the events exactly, quiet writes nothing", () => {
      const raw = capture();
      const quiet = capture();
      const rawRenderer = createRenderer("rawjson", raw);
      const quietRenderer = createRenderer("quiet", quiet);
      for (const event of rawEvents) {
        rawRenderer.event(event);
        quietRenderer.event(event);
      }
      rawRenderer.done();
      quietRenderer.done();
      expect(raw.text()).toBe(rawEvents.map((e) => `${JSON.stringify(e)}\n`).join(""));
      expect(quiet.text()).toBe("");
    });
  });
});

describe("the progress mode", () => {
  it("auto is tty only on a terminal without NO_COLOR, CI or TERM=dumb", () => {
    const tty = { isTTY: true } as unknown as NodeJS.WritableStream;
    const pipe = { isTTY: false } as unknown as NodeJS.WritableStream;
    expect(resolveProgressMode("auto", tty, {})).toBe("tty");
    expect(resolveProgressMode("auto", pipe, {})).toBe("plain");
    expect(resolveProgressMode("auto", tty, { CI: "true" })).toBe("plain");
    expect(resolveProgressMode("auto", tty, { NO_COLOR: "1" })).toBe("plain");
    expect(resolveProgressMode("auto", tty, { TERM: "dumb" })).toBe("plain");
    expect(resolveProgressMode("rawjson", tty, {})).toBe("rawjson");
    expect(resolveProgressMode("tty", pipe, {})).toBe("tty");
  });

  it("an unknown mode from plain JavaScript is INVALID_ARGUMENT, as every error the library throws is one of its own", () => {
    expect(() => createRenderer("fancy" as never, new PassThrough())).toThrow(
      expect.objectContaining({ name: "BuildKitNodeError", code: "INVALID_ARGUMENT", message: expect.stringMatching(/unknown progress mode "fancy"/) }),
    );
  });
});

/** A BuildEvent back from its JSON form: ISO strings become Dates again. */
function reviveEvent(json: Record<string, unknown>): BuildEvent {
  const event: Record<string, unknown> = { ...json };
  for (const key of ["startedAt", "completedAt", "timestamp"]) {
    if (typeof event[key] === "string") event[key] = new Date(event[key] as string);
  }
  return event as unknown as BuildEvent;
}
