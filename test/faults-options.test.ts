// Options as a plain-JavaScript caller (or JSON) can get them wrong: every
// entry point refuses them at run time with INVALID_ARGUMENT naming the
// field, before anything reaches the daemon, and never quotes a credential.
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildKitNodeError, type BuildKitClient, connect, TransportError } from "../src/index.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE } from "./support/registry.js";

const dockerfile = { files: { Dockerfile: `FROM ${BASE_IMAGE}\n` } };

/** What `fn` threw, synchronously. */
function thrown(fn: () => unknown): BuildKitNodeError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BuildKitNodeError);
    return err as BuildKitNodeError;
  }
  return expect.unreachable("nothing was thrown") as never;
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
  });

  // [what, options as a JavaScript caller might pass them, the message expected]
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["context: null", { context: null }, /^invalid option context: must be a directory path, \{ tar: Readable \} or \{ files: \{ path: content \} \}, not null$/],
    ["no context at all", {}, /^invalid option context: must be .*, not undefined$/],
    ["context: an empty path", { context: "" }, /^invalid option context: the directory path is empty$/],
    ["context: { tar: a string }", { context: { tar: "a.tar" } }, /^invalid option context\.tar: must be a Readable stream .*, not a string$/],
    ["context: { files: a file that is a number }", { context: { files: { Dockerfile: 42 } } }, /^invalid option context\.files\["Dockerfile"\]: must be a string or bytes, not a number$/],
    ["an image output without name", { context: dockerfile, outputs: [{ type: "image", push: true }] }, /^invalid option outputs\[0\]\.name: an image output needs the image name/],
    ["an output of an unknown type", { context: dockerfile, outputs: [{ type: "zip", dest: "x" }] }, /^invalid option outputs\[0\]\.type: must be one of image, docker, oci, tar, local$/],
    ["a local output without dest", { context: dockerfile, outputs: [{ type: "local" }] }, /^invalid option outputs\[0\]\.dest: must be a directory path$/],
    ["outputs: not an array", { context: dockerfile, outputs: { type: "local", dest: "x" } }, /^invalid option outputs: must be an array, not an object$/],
    ["a build-arg value undefined", { context: dockerfile, buildArgs: { VERSION: undefined } }, /^invalid option buildArgs\["VERSION"\]: must be a string, not undefined$/],
    ["a build-arg value an object", { context: dockerfile, buildArgs: { CONFIG: { debug: true } } }, /^invalid option buildArgs\["CONFIG"\]: must be a string, not an object$/],
    ["a build-arg value a number", { context: dockerfile, buildArgs: { PORT: 8080 } }, /^invalid option buildArgs\["PORT"\]: must be a string, not a number$/],
    ["a build-arg name empty", { context: dockerfile, buildArgs: { "": "x" } }, /^invalid option buildArgs: a name is empty$/],
    ['a build-arg name with "="', { context: dockerfile, buildArgs: { "A=B": "x" } }, /^invalid option buildArgs\["A=B"\]: a name may not contain "=", a newline or another control character$/],
    ["a build-arg name with a newline", { context: dockerfile, buildArgs: { "A\nB": "x" } }, /^invalid option buildArgs\["A\\nB"\]: a name may not contain/],
    ["a label value a number", { context: dockerfile, labels: { version: 2 } }, /^invalid option labels\["version"\]: must be a string, not a number$/],
    ["platforms: a string", { context: dockerfile, platforms: "linux/amd64" }, /^invalid option platforms: must be an array of strings, not a string$/],
    ["network: bridge", { context: dockerfile, network: "bridge" }, /^invalid option network: must be one of default, none, host$/],
    ["signal: true", { context: dockerfile, signal: true }, /^invalid option signal: must be an AbortSignal, not a boolean$/],
    ["tarLimits.maxBytes negative", { context: dockerfile, tarLimits: { maxBytes: -1 } }, /^invalid option tarLimits\.maxBytes: must be a positive number/],
    ["a secret source a string", { context: dockerfile, secrets: { npmrc: "~/.npmrc" } }, /^invalid option secrets\["npmrc"\]: must be \{ file \} \| \{ env \} \| \{ value \}$/],
    ["sharedKey empty", { context: dockerfile, sharedKey: "" }, /^invalid option sharedKey: is empty$/],
    ["onUnreadable: ignore", { context: dockerfile, onUnreadable: "ignore" }, /^invalid option onUnreadable: must be one of error, warn$/],
  ];

  it.each(cases)("build() with %s: INVALID_ARGUMENT naming the field, thrown before anything is sent", (_what, options, message) => {
    const err = thrown(() => bk.build(options as never));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(message);
  });

  it("build() with a password of the wrong type names the field, never the value", () => {
    const err = thrown(() => bk.build({ context: dockerfile, registryAuth: { "ghcr.io": { username: "me", password: ["hunter2"] } } } as never));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toBe('invalid option registryAuth["ghcr.io"].password: must be a string, not an array');
    expect(err.message).not.toContain("hunter2");
  });

  it("build() refuses a stream that was already read to its end", async () => {
    const used = Readable.from([Buffer.from("x")]);
    for await (const _ of used) void _;
    const err = thrown(() => bk.build({ context: { tar: used } }));
    expect(err.message).toMatch(/^invalid option context\.tar: the stream was already read to its end or destroyed$/);
  });

  it("connect() takes a connectTimeoutMs that is not a whole number (a computed deadline)", async () => {
    const client = await connect(daemon.address, { ...daemon.connectOptions, connectTimeoutMs: 30_000.5 });
    await client.close();
  });

  it("calls take a timeoutMs that is not a whole number (a computed deadline)", async () => {
    await expect(bk.listWorkers({ timeoutMs: 20_000.5 })).resolves.not.toHaveLength(0);
  });

  it("calls refuse options of the wrong type", async () => {
    await expect(bk.listWorkers({ timeoutMs: "10s" } as never)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/timeoutMs: must be a positive number/) });
    // gRPC's grpc-timeout header holds 8 digits: a longer deadline could not be sent.
    await expect(bk.diskUsage({ timeoutMs: 100_000_000 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/timeoutMs: must be at most 99999999 milliseconds/) });
    await expect(bk.prune({ filter: "type==regular" } as never)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/filter: must be an array of strings/) });
  });
});

describe("connect() with options of the wrong type", () => {
  it.each([
    ["an address that is not a string", [42, {}], /the address must be a string/],
    ["options that are not an object", ["docker://", "fast"], /options must be an object, not a string/],
    ["connectTimeoutMs negative", ["docker://", { connectTimeoutMs: -5 }], /connectTimeoutMs: must be a positive number of milliseconds, not a number/],
    ["keepalive.intervalMs a string", ["docker://", { keepalive: { intervalMs: "30s" } }], /keepalive\.intervalMs: must be a positive number of milliseconds, not a string/],
    ["tls a string", ["tcp://127.0.0.1:1234", { tls: "ca.pem" }], /tls: must be \{ ca, cert, key, serverName \}, not a string/],
    // A timer past 2^31-1 ms fires at once: a ping "unanswered" after 1 ms would kill every connection.
    ["keepalive.timeoutMs past what a timer takes", ["docker://", { keepalive: { timeoutMs: 3e9 } }], /keepalive\.timeoutMs: must be at most 2147483647 milliseconds/],
    ["connectTimeoutMs Infinity", ["docker://", { connectTimeoutMs: Infinity }], /connectTimeoutMs: must be at most 2147483647 milliseconds/],
    ["compression brotli", ["docker://", { compression: "br" }], /compression: must be one of gzip, identity/],
  ])("%s: TransportError INVALID_ARGUMENT", async (_what, args, message) => {
    const err = await (connect as (...a: unknown[]) => Promise<unknown>)(...args).then(
      () => expect.unreachable("connected"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TransportError);
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect((err as Error).message).toMatch(message);
  });
});
