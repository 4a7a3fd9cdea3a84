// Failures to connect are typed, name the address and what answered, never
// hang, and never crash the process.
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { connect, TransportError } from "../src/index.js";
import { createCertificateAuthority, startBuildKitFront } from "../src/testing/index.js";
import { tempDir } from "./support/build-helpers.js";
import { announceSkip, assertDaemon, BUILD_DAEMONS, STANDALONE_BUILDKIT, STANDALONE_TLS } from "./support/daemons.js";

const servers: net.Server[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

/** A server that accepts connections and never says a word. */
async function silentServer(): Promise<{ address: string; sockets: net.Socket[] }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => sockets.push(socket));
  servers.push(server);
  server.on("close", () => sockets.forEach((s) => s.destroy()));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { address: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`, sockets };
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function failure(attempt: Promise<unknown>): Promise<TransportError> {
  const err = await attempt.then(
    () => expect.unreachable("connect() succeeded"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TransportError);
  return err as TransportError;
}

describe("connect() failures", () => {
  it("a missing unix socket: UNAVAILABLE, naming the address", async () => {
    const address = "unix:///run/buildkit-node-test/missing.sock";
    const err = await failure(connect(address));
    expect(err).toMatchObject({ code: "UNAVAILABLE", address });
    expect(err.message).toContain(address);
    expect(err.message).toMatch(/no socket/);
  });

  it("a missing docker socket: UNAVAILABLE, naming the address", async () => {
    const address = "docker:///run/buildkit-node-test/docker.sock";
    const err = await failure(connect(address));
    expect(err).toMatchObject({ code: "UNAVAILABLE", address });
    expect(err.message).toContain(address);
  });

  it("a closed port: UNAVAILABLE, naming the address", async () => {
    const address = `tcp://127.0.0.1:${await closedPort()}`;
    const err = await failure(connect(address));
    expect(err).toMatchObject({ code: "UNAVAILABLE", address });
    expect(err.message).toMatch(/refused/);
  });

  it.each([
    ["no scheme", "127.0.0.1:1234"],
    ["no port", "tcp://127.0.0.1"],
    ["a port out of range", "tcp://127.0.0.1:70000"],
    ["a relative unix path", "unix://buildkitd.sock"],
    ["an unsupported scheme", "ssh://builder"],
    ["a remote docker host", "docker://10.0.0.1:2375"],
    ["garbage", "::::"],
  ])("a malformed address (%s): INVALID_ARGUMENT, naming the address", async (_why, address) => {
    const err = await failure(connect(address));
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", address });
    expect(err.message).toContain(address);
  });

  it("a server that never answers: TIMEOUT after connectTimeoutMs", async () => {
    const { address, sockets } = await silentServer();
    const err = await failure(connect(address, { connectTimeoutMs: 300 }));
    expect(err).toMatchObject({ code: "TIMEOUT", address });
    expect(sockets.length).toBe(1); // it did connect; the silence is what timed out
  });

  it("a server that never finishes the TLS handshake: TIMEOUT", async () => {
    const { address } = await silentServer();
    const err = await failure(connect(address, { connectTimeoutMs: 300, tls: { serverName: "buildkit.test" } }));
    expect(err).toMatchObject({ code: "TIMEOUT", address });
  });

  it("a docker socket whose refusal of the upgrade never ends: TIMEOUT after connectTimeoutMs, not a hang", async () => {
    // Not dockerd: an HTTP server on a unix socket that answers 200 and never finishes the body.
    const dir = tempDir("endless-refusal");
    const socketPath = join(dir.path, "docker.sock");
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("no BuildKit here, and this answer goes on");
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    try {
      const address = `docker://${socketPath}`;
      const err = await failure(connect(address, { connectTimeoutMs: 300 }));
      expect(err).toMatchObject({ code: "TIMEOUT", address });
    } finally {
      server.closeAllConnections();
      dir.remove();
    }
  });

  it("an aborted signal: CANCELED, with the reason kept", async () => {
    const { address } = await silentServer();
    const controller = new AbortController();
    const attempt = connect(address, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("user gave up")), 50);
    const err = await failure(attempt);
    expect(err).toMatchObject({ code: "CANCELED", address });
  });
});

/**
 * Connects from a child process (the built package, as a user runs it) and
 * keeps it alive for a while: a peer's fault must reject the call, not kill
 * the process a moment later. Returns what the child printed.
 */
async function connectInChild(address: string, options: object = {}): Promise<{ code: string; message: string; survived: boolean }> {
  const script = `
    import { connect } from ${JSON.stringify(new URL("../dist/index.js", import.meta.url).href)};
    let result;
    try { await connect(${JSON.stringify(address)}, ${JSON.stringify(options)}); result = { code: "connected", message: "" }; }
    catch (err) { result = { code: err.code, message: err.message }; }
    setTimeout(() => { console.log(JSON.stringify({ ...result, survived: true })); process.exit(0); }, 1000);
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script]).catch((err: { stdout?: string; stderr?: string; code?: number }) => {
    throw new Error(`the child process died (exit ${err.code}): ${err.stderr ?? ""}`);
  });
  return JSON.parse(stdout.trim().split("\n").pop()!) as { code: string; message: string; survived: boolean };
}

describe("a server that is not BuildKit", () => {
  it("dockerd's Engine API socket (HTTP/1.1) as unix://: UNAVAILABLE naming what answered, and the process lives on", async () => {
    assertDaemon(BUILD_DAEMONS[0]!);
    const address = "unix:///var/run/docker.sock";
    const result = await connectInChild(address);
    expect(result).toMatchObject({ code: "UNAVAILABLE", survived: true });
    expect(result.message).toContain(address);
    expect(result.message).toMatch(/an HTTP\/1\.1 server answered \("HTTP\/1\.1 \d{3} [^"]*"\), not HTTP\/2/);
  });

  it("an HTTP/1.1 port: UNAVAILABLE naming what answered, and the process lives on", async () => {
    const server = http.createServer((_req, res) => res.end("hello"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    try {
      const result = await connectInChild(address);
      expect(result).toMatchObject({ code: "UNAVAILABLE", survived: true });
      expect(result.message).toBe(`${address} is not a BuildKit daemon: an HTTP/1.1 server answered ("HTTP/1.1 400 Bad Request"), not HTTP/2`);
    } finally {
      server.close();
    }
  });

  it("a server that hangs up at once: UNAVAILABLE, saying it closed without speaking HTTP/2", async () => {
    const server = net.createServer((socket) => socket.destroy());
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const err = await failure(connect(address));
    expect(err).toMatchObject({ code: "UNAVAILABLE", address });
    expect(err.message).toMatch(/closed the connection without speaking HTTP\/2/);
  });
});

describe.each(BUILD_DAEMONS)("on %s, a TLS port dialed without tls", (daemon) => {
  it("(the mutual-TLS front before it): TLS, saying the server wants TLS, and the process lives on", async () => {
    assertDaemon(daemon);
    await using front = await startBuildKitFront({ ...daemon.backend, mtls: true });
    const result = await connectInChild(front.address);
    expect(result).toMatchObject({ code: "TLS", survived: true });
    expect(result.message).toMatch(/wants TLS: it dropped our plaintext HTTP\/2 connection and answers a TLS handshake; pass the tls option/);
  });
});

describe("buildkitd's own TLS port dialed without tls", () => {
  // Only the standalone buildkitd listens with TLS; dockerd has no such port.
  it.runIf(STANDALONE_BUILDKIT?.startsWith("tcp://") && STANDALONE_TLS)("TLS, saying the server wants TLS (not CANCELED: nobody aborted)", async () => {
    const result = await connectInChild(STANDALONE_BUILDKIT!);
    expect(result).toMatchObject({ code: "TLS", survived: true });
    expect(result.message).toContain(`${STANDALONE_BUILDKIT} wants TLS`);
  });
  if (!STANDALONE_BUILDKIT) announceSkip("buildkitd's TLS port without tls", "BUILDKIT_HOST is not set");
});

describe("TLS material that cannot work: INVALID_ARGUMENT naming the field and the address, never the key", () => {
  const authority = createCertificateAuthority({ commonName: "material test CA" });
  const client = authority.issue({ commonName: "client", usage: "client" });
  const other = authority.issue({ commonName: "other", usage: "client" });
  const address = "tcp://127.0.0.1:1"; // never dialed: the material is checked first
  const keyBody = client.key.split("\n")[1]!;

  it.each([
    ["a key that is not PEM", { ca: authority.cert, cert: client.cert, key: "not a key" }, /tls\.key is not a usable PEM private key/],
    ["a PEM key with garbage inside", { ca: authority.cert, cert: client.cert, key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" }, /tls\.key is not a usable PEM private key/],
    ["a key that is not the certificate's", { ca: authority.cert, cert: client.cert, key: other.key }, /tls\.key is not the private key of tls\.cert/],
    ["a certificate that is not PEM", { ca: authority.cert, cert: "garbage", key: client.key }, /tls\.cert holds no PEM certificate/],
    ["a CA that holds no certificate", { ca: "garbage" }, /tls\.ca holds no PEM certificate/],
    ["a key without its certificate", { ca: authority.cert, key: client.key }, /tls\.key was given without tls\.cert/],
    ["a certificate of the wrong type", { ca: authority.cert, cert: 42, key: client.key }, /tls\.cert must be PEM text \(a string\) or its bytes, not a number/],
  ])("%s", async (_what, tls, message) => {
    const err = await failure(connect(address, { tls: tls as never }));
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", address });
    expect(err.message).toMatch(message);
    expect(err.message).toContain(address);
    for (let e: unknown = err; e instanceof Error; e = e.cause) {
      expect(e.message).not.toContain(keyBody);
      expect(e.message).not.toContain("PRIVATE KEY");
    }
  });

  it("an unreadable BUILDKIT_TLS_* file: INVALID_ARGUMENT naming the variable, the file and the address", async () => {
    const dir = tempDir("tls-env");
    const saved = { ...process.env };
    try {
      writeFileSync(join(dir.path, "ca.pem"), authority.cert);
      Object.assign(process.env, {
        BUILDKIT_HOST: address,
        BUILDKIT_TLS_CA: join(dir.path, "ca.pem"),
        BUILDKIT_TLS_CERT: join(dir.path, "missing-cert.pem"),
        BUILDKIT_TLS_KEY: join(dir.path, "key.pem"),
      });
      const err = await failure(connect());
      expect(err).toMatchObject({ code: "INVALID_ARGUMENT", address });
      expect(err.message).toBe(`TLS for ${address}: BUILDKIT_TLS_CERT=${join(dir.path, "missing-cert.pem")} cannot be read (ENOENT)`);
    } finally {
      for (const name of ["BUILDKIT_HOST", "BUILDKIT_TLS_CA", "BUILDKIT_TLS_CERT", "BUILDKIT_TLS_KEY"]) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
      dir.remove();
    }
  });
});
