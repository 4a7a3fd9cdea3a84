// moby.sshforward.v1.SSH: CheckAgent and ForwardAgent, called the way the
// daemon calls them (test/support/daemon-side.ts), against a real ssh-agent
// and against the in-process key agent, checked with OpenSSH's own tools
// (ssh-keygen, ssh-add from Debian's openssh-client).
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

// Loggers read DEBUG when their module loads: turn it on first, keep every
// line, and check that no key material is among them.
process.env.DEBUG = "buildkit-node*";
const logged: string[] = [];
const stderrWrite = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
  logged.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
  return true;
});

const { sshAttachable } = await import("../src/session/ssh.js");
const { BuildKitNodeError } = await import("../src/errors.js");
const { GrpcCode } = await import("../src/session/grpc-server.js");
const { startDaemonSide } = await import("./support/daemon-side.js");
const { BytesMessageSchema, CheckAgentRequestSchema } = await import("../src/gen/moby/sshforward/v1/ssh_pb.js");
type Attachable = import("../src/session/attachable.js").Attachable;
type DaemonSide = import("./support/daemon-side.js").DaemonSide;
type DaemonCall = import("./support/daemon-side.js").DaemonCall;

const run = promisify(execFile);
const haveOpenSsh = ["/usr/bin/ssh-keygen", "/usr/bin/ssh-agent", "/usr/bin/ssh-add"].every((p) => existsSync(p));
if (!haveOpenSsh) console.warn("session-ssh: openssh-client is not installed (apt-get install openssh-client); its tests are skipped");

const forwardAgent = "/moby.sshforward.v1.SSH/ForwardAgent";

let dir: string;
/** Key files by name; `<name>.pub` beside each, as ssh-keygen wrote it. */
const keyFiles = {
  ed25519: "",
  rsa: "",
  rsaPem: "",
  ecdsa: "",
  pkcs8: "",
  encrypted: "",
};
/** Every private key file's text: none of its lines may reach a log or an error. */
const privateTexts: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bkn-ssh-"));
  keyFiles.pkcs8 = join(dir, "pkcs8.pem");
  await writeFile(keyFiles.pkcs8, generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }));
  privateTexts.push(await readFile(keyFiles.pkcs8, "utf8"));
  if (!haveOpenSsh) return;
  const keygen = async (name: keyof typeof keyFiles, ...args: string[]) => {
    keyFiles[name] = join(dir, name);
    await run("ssh-keygen", ["-q", "-N", "", "-C", `${name}@test`, "-f", keyFiles[name], ...args]);
  };
  await Promise.all([
    keygen("ed25519", "-t", "ed25519"),
    keygen("rsa", "-t", "rsa", "-b", "2048"),
    keygen("rsaPem", "-t", "rsa", "-b", "2048", "-m", "PEM"),
    keygen("ecdsa", "-t", "ecdsa", "-b", "384"),
  ]);
  keyFiles.encrypted = join(dir, "encrypted");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "a passphrase", "-f", keyFiles.encrypted]);
  for (const file of [keyFiles.ed25519, keyFiles.rsa, keyFiles.rsaPem, keyFiles.ecdsa, keyFiles.encrypted]) {
    privateTexts.push(await readFile(file, "utf8"));
  }
});

let daemon: DaemonSide | undefined;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await daemon?.close();
  daemon = undefined;
});

afterAll(async () => {
  stderrWrite.mockRestore();
  await rm(dir, { recursive: true, force: true });
  const text = logged.join("");
  if (haveOpenSsh) expect(text).toContain("buildkit-node:ssh");
  for (const line of privateTexts.flatMap((t) => t.split("\n")).filter((l) => l.length > 20 && !l.startsWith("-----"))) {
    expect(text).not.toContain(line);
  }
});

async function serve(attachable: Attachable): Promise<DaemonSide> {
  daemon = await startDaemonSide(attachable.routes);
  return daemon;
}

// --- the SSH agent protocol, written independently of src/ for checking ---

function frame(type: number, ...fields: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.of(type), ...fields]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

function sshString(bytes: Buffer | string): Buffer {
  const body = typeof bytes === "string" ? Buffer.from(bytes) : bytes;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

function uint32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

function readStrings(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; ) {
    const length = bytes.readUInt32BE(at);
    out.push(bytes.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return out;
}

/** Parses IDENTITIES_ANSWER into (blob, comment) pairs. */
function identities(answer: Buffer): { blob: string; comment: string }[] {
  expect(answer[0]).toBe(12);
  const count = answer.readUInt32BE(1);
  const strings = readStrings(answer.subarray(5));
  expect(strings.length).toBe(2 * count);
  const out = [];
  for (let i = 0; i < count; i++) out.push({ blob: strings[2 * i]!.toString("base64"), comment: strings[2 * i + 1]!.toString("utf8") });
  return out;
}

/** The base64 key blob of an OpenSSH `.pub` file. */
async function publicBlob(keyFile: string): Promise<string> {
  return (await readFile(`${keyFile}.pub`, "utf8")).split(" ")[1]!;
}

/**
 * One ForwardAgent call: sends agent requests, reads one reply per request,
 * then half-closes, as a client does (ssh-agent drops unsent replies when
 * its peer half-closes first), and waits for the call to end.
 */
async function askAgent(daemonSide: DaemonSide, requests: Buffer[], id?: string): Promise<{ replies: Buffer[]; status: { code: number; message: string } }> {
  const call = daemonSide.call(forwardAgent, id === undefined ? {} : { "buildkit.ssh.id": id });
  // Split across messages at odd places: message boundaries carry no meaning.
  const bytes = Buffer.concat(requests);
  for (let at = 0; at < bytes.length; at += 7) send(call, bytes.subarray(at, at + 7));
  const replies: Buffer[] = [];
  let received = Buffer.alloc(0);
  let ended = false;
  for await (const message of call.messages) {
    received = Buffer.concat([received, Buffer.from(fromBinary(BytesMessageSchema, message).data)]);
    while (received.length >= 4 && received.length >= 4 + received.readUInt32BE(0)) {
      replies.push(received.subarray(4, 4 + received.readUInt32BE(0)));
      received = received.subarray(4 + received.readUInt32BE(0));
    }
    if (replies.length === requests.length && !ended) {
      ended = true;
      call.end();
    }
  }
  expect(received.length).toBe(0);
  return { replies, status: await call.status };
}

function send(call: DaemonCall, data: Uint8Array): void {
  call.send(toBinary(BytesMessageSchema, create(BytesMessageSchema, { data })));
}

/**
 * Plays the daemon's side of `RUN --mount=type=ssh`: a unix socket whose
 * every connection becomes one ForwardAgent call, so OpenSSH's own clients
 * can talk to the agent behind our attachable.
 */
async function agentBridge(daemonSide: DaemonSide, id: string): Promise<string> {
  const path = join(dir, `bridge-${id}-${Math.random().toString(36).slice(2)}.sock`);
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const call = daemonSide.call(forwardAgent, { "buildkit.ssh.id": id });
    socket.on("data", (data) => send(call, data));
    socket.on("end", () => call.end());
    (async () => {
      for await (const message of call.messages) socket.write(fromBinary(BytesMessageSchema, message).data);
      socket.end();
    })().catch((err: Error) => socket.destroy(err));
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return path;
}

/** A real ssh-agent on a temp socket, holding `keys`. */
async function startSshAgent(...keys: string[]): Promise<string> {
  const socket = join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`);
  const agent: ChildProcess = spawn("ssh-agent", ["-D", "-a", socket], { stdio: "ignore" });
  cleanups.push(async () => {
    if (agent.exitCode === null) {
      const exited = new Promise((resolve) => agent.once("exit", resolve));
      agent.kill("SIGTERM");
      await exited;
    }
  });
  for (let i = 0; !(await stat(socket).catch(() => undefined)); i++) {
    if (i > 100) throw new Error("ssh-agent did not create its socket");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (const key of keys) await run("ssh-add", ["-q", key], { env: { ...process.env, SSH_AUTH_SOCK: socket } });
  return socket;
}

describe("CheckAgent", () => {
  it("answers OK for a configured id (empty means default) and NOT_FOUND otherwise", async () => {
    const daemonSide = await serve(sshAttachable([{ id: "default", keys: [keyFiles.pkcs8] }, { id: "deploy", keys: [keyFiles.pkcs8] }]));
    const check = async (id: string) => {
      const call = daemonSide.call("/moby.sshforward.v1.SSH/CheckAgent");
      call.send(toBinary(CheckAgentRequestSchema, create(CheckAgentRequestSchema, { id })));
      call.end();
      for await (const _ of call.messages);
      return call.status;
    };
    expect((await check("")).code).toBe(GrpcCode.OK);
    expect((await check("default")).code).toBe(GrpcCode.OK);
    expect((await check("deploy")).code).toBe(GrpcCode.OK);
    expect(await check("other")).toEqual({ code: GrpcCode.NOT_FOUND, message: 'no SSH agent with id "other" in this build' });
  });
});

describe.skipIf(!haveOpenSsh)("ForwardAgent to a real ssh-agent", () => {
  it("lists the agent's identities through the call", async () => {
    const agentSocket = await startSshAgent(keyFiles.ed25519, keyFiles.rsa);
    vi.stubEnv("SSH_AUTH_SOCK", agentSocket);
    cleanups.push(() => {
      vi.unstubAllEnvs();
    });
    const daemonSide = await serve(sshAttachable(["default"]));

    const { replies, status } = await askAgent(daemonSide, [frame(11)]);
    expect(status.code).toBe(GrpcCode.OK);
    expect(identities(replies[0]!)).toEqual([
      { blob: await publicBlob(keyFiles.ed25519), comment: "ed25519@test" },
      { blob: await publicBlob(keyFiles.rsa), comment: "rsa@test" },
    ]);
  });

  it("serves OpenSSH's own ssh-add through the bridge, by id", async () => {
    const agentSocket = await startSshAgent(keyFiles.ecdsa);
    const daemonSide = await serve(sshAttachable([`work=${agentSocket}`]));
    const bridge = await agentBridge(daemonSide, "work");
    const { stdout } = await run("ssh-add", ["-L"], { env: { ...process.env, SSH_AUTH_SOCK: bridge } });
    expect(stdout.trim().split(" ").slice(0, 2)).toEqual((await readFile(`${keyFiles.ecdsa}.pub`, "utf8")).trim().split(" ").slice(0, 2));
  });
});

describe.skipIf(!haveOpenSsh)("ForwardAgent to the in-process key agent", () => {
  it("lists OpenSSH and PEM keys with the blobs ssh-keygen wrote", async () => {
    const daemonSide = await serve(sshAttachable([{ id: "keys", keys: [keyFiles.ed25519, keyFiles.rsa, keyFiles.rsaPem, keyFiles.ecdsa] }]));
    const { replies, status } = await askAgent(daemonSide, [frame(11)], "keys");
    expect(status.code).toBe(GrpcCode.OK);
    expect(identities(replies[0]!)).toEqual([
      { blob: await publicBlob(keyFiles.ed25519), comment: "ed25519@test" },
      { blob: await publicBlob(keyFiles.rsa), comment: "rsa@test" },
      { blob: await publicBlob(keyFiles.rsaPem), comment: keyFiles.rsaPem }, // PEM keeps no comment: the path stands in
      { blob: await publicBlob(keyFiles.ecdsa), comment: "ecdsa@test" },
    ]);
  });

  it("signs with each key in the format SSH asks for; node:crypto verifies the signatures", async () => {
    const daemonSide = await serve(sshAttachable([{ id: "default", keys: [keyFiles.ed25519, keyFiles.rsa, keyFiles.ecdsa, keyFiles.pkcs8] }]));
    const data = Buffer.from("session-id and userauth request to sign");
    const signRequest = async (blob: Buffer, flags: number) => {
      const { replies } = await askAgent(daemonSide, [frame(13, sshString(blob), sshString(data), uint32(flags))]);
      expect(replies[0]![0]).toBe(14);
      const [signature] = readStrings(replies[0]!.subarray(1));
      const [algorithm, bytes] = readStrings(signature!);
      return { algorithm: algorithm!.toString(), bytes: bytes! };
    };

    // Ed25519: the public key is the last 32 bytes of the .pub blob.
    const edBlob = Buffer.from(await publicBlob(keyFiles.ed25519), "base64");
    const edKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: edBlob.subarray(-32).toString("base64url") }, format: "jwk" });
    const ed = await signRequest(edBlob, 0);
    expect(ed.algorithm).toBe("ssh-ed25519");
    expect(verify(null, data, edKey, ed.bytes)).toBe(true);

    // RSA, for each hash the flags pick; ssh-keygen converts the public key to SPKI.
    const rsaBlob = Buffer.from(await publicBlob(keyFiles.rsa), "base64");
    const rsaKey = createPublicKey((await run("ssh-keygen", ["-e", "-m", "PKCS8", "-f", `${keyFiles.rsa}.pub`])).stdout);
    for (const [flags, algorithm, hash] of [[4, "rsa-sha2-512", "sha512"], [2, "rsa-sha2-256", "sha256"], [0, "ssh-rsa", "sha1"]] as const) {
      const rsa = await signRequest(rsaBlob, flags);
      expect(rsa.algorithm).toBe(algorithm);
      expect(verify(hash, data, rsaKey, rsa.bytes)).toBe(true);
    }

    // ECDSA P-384: the signature is mpint r, mpint s.
    const ecBlob = Buffer.from(await publicBlob(keyFiles.ecdsa), "base64");
    const ecKey = createPublicKey((await run("ssh-keygen", ["-e", "-m", "PKCS8", "-f", `${keyFiles.ecdsa}.pub`])).stdout);
    const ec = await signRequest(ecBlob, 0);
    expect(ec.algorithm).toBe("ecdsa-sha2-nistp384");
    const rs = readStrings(ec.bytes).map((n) => Buffer.concat([Buffer.alloc(48), n]).subarray(-48));
    expect(verify("sha384", data, { key: ecKey, dsaEncoding: "ieee-p1363" }, Buffer.concat(rs))).toBe(true);

    // A PKCS#8 key node:crypto made: listed, then signs.
    const { replies } = await askAgent(daemonSide, [frame(11)]);
    const pkcs8Blob = Buffer.from(identities(replies[0]!)[3]!.blob, "base64");
    const pkcs8 = await signRequest(pkcs8Blob, 0);
    const pkcs8Key = createPublicKey(await readFile(keyFiles.pkcs8, "utf8"));
    expect(verify(null, data, pkcs8Key, pkcs8.bytes)).toBe(true);
  });

  it("answers FAILURE to other requests and to unknown keys, and keeps serving the connection", async () => {
    const daemonSide = await serve(sshAttachable([{ id: "default", keys: [keyFiles.ed25519] }]));
    const unknownKey = sshString(Buffer.from(await publicBlob(keyFiles.rsa), "base64"));
    const { replies, status } = await askAgent(daemonSide, [
      frame(17, sshString("ssh-ed25519")), // ADD_IDENTITY: not ours to do
      frame(13, unknownKey, sshString("data"), uint32(0)),
      frame(27, sshString("session-bind@openssh.com")), // an extension
      frame(11),
    ]);
    expect(status.code).toBe(GrpcCode.OK);
    expect(replies.map((r) => r[0])).toEqual([5, 5, 5, 12]);
  });

  it("lets OpenSSH's ssh-keygen sign through the bridge, and verifies the result", async () => {
    const daemonSide = await serve(sshAttachable([`signer=${keyFiles.ed25519},${keyFiles.rsa}`]));
    const bridge = await agentBridge(daemonSide, "signer");
    const env = { ...process.env, SSH_AUTH_SOCK: bridge };
    expect((await run("ssh-add", ["-l"], { env })).stdout).toMatch(/ED25519[\s\S]*RSA/);

    // Only the public key beside the message: the signature can come from the agent alone.
    const work = join(dir, "sign");
    await mkdir(work);
    for (const [name, file] of [["ed25519", keyFiles.ed25519], ["rsa", keyFiles.rsa]] as const) {
      const pub = join(work, `${name}.pub`);
      await copyFile(`${file}.pub`, pub);
      const message = join(work, `${name}.txt`);
      await writeFile(message, `signed by the ${name} key`);
      await run("ssh-keygen", ["-Y", "sign", "-n", "file", "-f", pub, message], { env });
      const allowed = join(work, `${name}.allowed`);
      await writeFile(allowed, `signer@test ${await readFile(pub, "utf8")}`);
      const check = spawn("ssh-keygen", ["-Y", "verify", "-f", allowed, "-I", "signer@test", "-n", "file", "-s", `${message}.sig`], { stdio: ["pipe", "pipe", "pipe"] });
      check.stdin.end(await readFile(message));
      let output = "";
      check.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      expect(await new Promise((resolve) => check.on("close", resolve))).toBe(0);
      expect(output).toMatch(/^Good "file" signature for signer@test/);
    }
  });
});

describe("ForwardAgent plumbing", () => {
  /** An agent stand-in that echoes bytes back, to see the pipe itself: order, size, half-close, teardown. */
  async function echoServer(): Promise<{ path: string; connections: net.Socket[] }> {
    const path = join(dir, `echo-${Math.random().toString(36).slice(2)}.sock`);
    const connections: net.Socket[] = [];
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      connections.push(socket);
      socket.pipe(socket); // ends its side after ours ends: a half-close, passed back
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    return { path, connections };
  }

  it("carries 8 MiB both ways intact and ends the call after the agent's EOF", async () => {
    const echo = await echoServer();
    const daemonSide = await serve(sshAttachable([{ id: "echo", socket: echo.path }]));
    const call = daemonSide.call(forwardAgent, { "buildkit.ssh.id": "echo" });
    const payload = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
    for (let at = 0; at < payload.length; at += 32 * 1024) send(call, payload.subarray(at, at + 32 * 1024));
    call.end();
    const chunks: Buffer[] = [];
    for await (const message of call.messages) chunks.push(Buffer.from(fromBinary(BytesMessageSchema, message).data));
    expect(Buffer.concat(chunks).equals(payload)).toBe(true);
    expect((await call.status).code).toBe(GrpcCode.OK);
  });

  it("closes the agent connection when the daemon cancels the call", async () => {
    const echo = await echoServer();
    const daemonSide = await serve(sshAttachable([{ id: "echo", socket: echo.path }]));
    const call = daemonSide.call(forwardAgent, { "buildkit.ssh.id": "echo" });
    send(call, Buffer.from("ping"));
    const iterator = call.messages[Symbol.asyncIterator]();
    expect(Buffer.from(fromBinary(BytesMessageSchema, (await iterator.next()).value as Uint8Array).data).toString()).toBe("ping");
    expect(echo.connections).toHaveLength(1);
    const closed = new Promise((resolve) => echo.connections[0]!.once("close", resolve));
    call.cancel();
    await closed;
  });

  it("closes open connections on close()", async () => {
    const echo = await echoServer();
    const ssh = sshAttachable([{ id: "echo", socket: echo.path }]);
    const daemonSide = await serve(ssh);
    const call = daemonSide.call(forwardAgent, { "buildkit.ssh.id": "echo" });
    send(call, Buffer.from("ping"));
    await call.messages[Symbol.asyncIterator]().next();
    const closed = new Promise((resolve) => echo.connections[0]!.once("close", resolve));
    await ssh.close();
    await closed;
  });

  it("answers NOT_FOUND for an unknown id and UNAVAILABLE when the agent is gone", async () => {
    const echo = await echoServer();
    const daemonSide = await serve(sshAttachable([{ id: "echo", socket: echo.path }]));
    const unknown = daemonSide.call(forwardAgent, { "buildkit.ssh.id": "nope" });
    unknown.end();
    expect(await unknown.status).toEqual({ code: GrpcCode.NOT_FOUND, message: 'no SSH agent with id "nope" in this build' });
    await cleanups.pop()!(); // stop the echo server: its socket no longer answers
    await rm(echo.path, { force: true });
    const gone = daemonSide.call(forwardAgent, { "buildkit.ssh.id": "echo" });
    gone.end();
    expect(await gone.status).toMatchObject({ code: GrpcCode.UNAVAILABLE, message: expect.stringContaining(`SSH agent "echo": cannot connect to ${echo.path}`) });
  });
});

describe("sshAttachable sources", () => {
  function thrown(fn: () => unknown): unknown {
    try {
      fn();
    } catch (err) {
      return err;
    }
    throw new Error("did not throw");
  }

  function expectInvalid(err: unknown, message: RegExp) {
    expect(err).toBeInstanceOf(BuildKitNodeError);
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(message) });
    const text = `${String(err)} ${JSON.stringify(err)}`;
    for (const line of privateTexts.flatMap((t) => t.split("\n")).filter((l) => l.length > 20 && !l.startsWith("-----"))) {
      expect(text).not.toContain(line);
    }
  }

  it("needs SSH_AUTH_SOCK for default, and a socket there", () => {
    vi.stubEnv("SSH_AUTH_SOCK", "");
    try {
      expectInvalid(thrown(() => sshAttachable(["default"])), /^ssh "default": SSH_AUTH_SOCK is not set/);
      vi.stubEnv("SSH_AUTH_SOCK", join(dir, "no-agent.sock"));
      expectInvalid(thrown(() => sshAttachable(["default"])), /^ssh "default": agent socket .*no-agent\.sock cannot be reached \(ENOENT\)$/);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it.skipIf(!haveOpenSsh)("rejects unusable key files naming the id and the path, never the key", async () => {
    expectInvalid(thrown(() => sshAttachable([{ id: "deploy", keys: [keyFiles.encrypted] }])), /^ssh "deploy": key file .*encrypted: passphrase-protected keys are not supported/);
    expectInvalid(thrown(() => sshAttachable([{ id: "deploy", keys: [join(dir, "missing")] }])), /^ssh "deploy": key file .*missing cannot be read \(ENOENT\)$/);
    // A public key where a private key belongs: its text must not be echoed.
    expectInvalid(thrown(() => sshAttachable([{ id: "deploy", keys: [`${keyFiles.rsa}.pub`] }])), /^ssh "deploy": key file .*rsa\.pub: not a private key/);
    // A PEM private key whose body is damaged (from a real key, so a leak would show).
    const damaged = join(dir, "damaged.pem");
    const pem = await readFile(keyFiles.rsaPem, "utf8");
    await writeFile(damaged, pem.replace(/\n[A-Za-z0-9+/]{10}/, "\n!!!!!!!!!!"));
    expectInvalid(thrown(() => sshAttachable([`x=${damaged}`])), /^ssh "x": key file .*damaged\.pem: not a private key/);
    const truncated = join(dir, "truncated");
    await writeFile(truncated, (await readFile(keyFiles.ed25519, "utf8")).split("\n").slice(0, 4).join("\n") + "\n-----END OPENSSH PRIVATE KEY-----\n");
    expectInvalid(thrown(() => sshAttachable([{ id: "t", keys: [truncated] }])), /^ssh "t": key file .*truncated: corrupt OpenSSH private key/);
  });

  it("rejects duplicate ids, empty ids, and socket with keys", () => {
    expectInvalid(thrown(() => sshAttachable([{ id: "a", keys: [keyFiles.pkcs8] }, { id: "a", keys: [keyFiles.pkcs8] }])), /^ssh "a"/);
    expectInvalid(thrown(() => sshAttachable(["=x"])), /the id is empty/);
    expectInvalid(thrown(() => sshAttachable([{ id: "b", socket: "/x", keys: ["/y"] }])), /^ssh "b": give socket or keys, not both$/);
  });
});
