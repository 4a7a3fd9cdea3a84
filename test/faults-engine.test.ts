// The Docker Engine API calls (push, load, save next to dockerd's BuildKit)
// when the Engine misbehaves. A real dockerd cannot be made to go silent or
// to drop a push halfway, so these run against stand-in Engines on a unix
// socket, each saying what it plays. The real Engine's refusals (no
// credentials, a registry that refuses connections) are rows of
// faults-codes.test.ts, on dockerd.
import * as http from "node:http";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DockerEngine } from "../src/buildkit/docker-engine.js";
import { BuildKitNodeError, TransportError } from "../src/index.js";
import { tempDir } from "./support/build-helpers.js";
import { activeResources, expectNoLeaks } from "./support/faults.js";

let dir: { path: string; remove(): void };
let server: http.Server | undefined;
let before: string[];

beforeEach(() => {
  before = activeResources();
  dir = tempDir("fake-engine");
});
afterEach(async (context) => {
  server?.closeAllConnections();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = undefined;
  dir.remove();
  if (context.task.result?.state !== "fail") await expectNoLeaks(before, context.task.name);
});

/** An Engine stand-in on a unix socket, answering with `handler`. */
async function engine(handler: http.RequestListener): Promise<string> {
  const socket = join(dir.path, "engine.sock");
  server = http.createServer(handler);
  await new Promise<void>((resolve) => server!.listen(socket, resolve));
  return socket;
}

async function failure(attempt: Promise<unknown>): Promise<BuildKitNodeError> {
  const err = await attempt.then(
    () => expect.unreachable("it succeeded"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BuildKitNodeError);
  return err as BuildKitNodeError;
}

describe("the Docker Engine API", () => {
  it("an Engine that accepts a push and then says nothing: TIMEOUT after the idle timeout", async () => {
    // Plays an Engine whose registry stopped answering: headers, one progress line, then silence.
    const socket = await engine((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write(`${JSON.stringify({ status: "The push refers to repository [127.0.0.1:5000/x]" })}\n`);
    });
    const started = Date.now();
    const err = await failure(new DockerEngine(socket, { idleTimeoutMs: 300 }).push("127.0.0.1:5000/x:1", undefined));
    console.log(`silent Engine: failed ${Date.now() - started} ms after the push started`);
    expect(err.code).toBe("TIMEOUT");
    expect(err.message).toBe(`pushing 127.0.0.1:5000/x:1: the Docker Engine at ${socket} was silent for 0.3 s`);
  });

  it("an Engine whose connection drops mid-push: TransportError UNAVAILABLE, never a bare Error", async () => {
    // Plays an Engine that crashes halfway through a push.
    const socket = await engine((req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write(`${JSON.stringify({ status: "Pushing", progressDetail: { current: 1, total: 2 } })}\n`, () => req.socket.destroy());
    });
    const err = await failure(new DockerEngine(socket).push("127.0.0.1:5000/x:1", undefined));
    expect(err).toBeInstanceOf(TransportError);
    expect(err).toMatchObject({ code: "UNAVAILABLE", address: `unix://${socket}` });
  });

  it("an Engine's error whose characters arrive split between chunks reads whole", async () => {
    // Plays an Engine whose registry refused the push with a message in UTF-8, cut inside
    // a character: the rest is sent only once the client has read the first part (its
    // progress line), so the two parts arrive apart.
    const progress = `${JSON.stringify({ status: "Preparing", id: "abc" })}\n`;
    const line = Buffer.from(`${progress}${JSON.stringify({ errorDetail: { message: "denied: dépôt verrouillé" }, error: "denied" })}\n`);
    const cut = line.indexOf(Buffer.from("é")) + 1; // inside the two bytes of "é"
    let firstPartRead!: () => void;
    const read = new Promise<void>((resolve) => (firstPartRead = resolve));
    const socket = await engine((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write(line.subarray(0, cut));
      void read.then(() => res.end(line.subarray(cut)));
    });
    const err = await failure(new DockerEngine(socket).push("127.0.0.1:5000/x:1", undefined, { onProgress: () => firstPartRead() }));
    expect(err.code).toBe("PERMISSION_DENIED");
    expect(err.message).toBe("pushing 127.0.0.1:5000/x:1: denied: dépôt verrouillé");
  });

  it("no Engine at the socket: TransportError UNAVAILABLE, and a load's body is released", async () => {
    const socket = join(dir.path, "nothing-here.sock");
    const body = new PassThrough();
    const err = await failure(new DockerEngine(socket).load(body));
    expect(err).toMatchObject({ code: "UNAVAILABLE", address: `unix://${socket}` });
    expect(body.destroyed).toBe(true);
  });

  it("a load waiting for its archive (a build still running) is not timed out before the first byte", async () => {
    // Plays an Engine that reads the whole archive, then answers.
    const socket = await engine((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(`${JSON.stringify({ stream: "Loaded image: x:1\n" })}\n`);
      });
    });
    const archive = new PassThrough();
    const loading = new DockerEngine(socket, { idleTimeoutMs: 200 }).load(archive);
    await new Promise((resolve) => setTimeout(resolve, 500)); // longer than the idle timeout, before any byte
    archive.end(Buffer.alloc(1024));
    await expect(loading).resolves.toEqual(["x:1"]);
  });
});
