// Failures to connect are typed, name the address, and never hang.
import * as net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { connect, TransportError } from "../src/index.js";

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

  it("an aborted signal: CANCELED, with the reason kept", async () => {
    const { address } = await silentServer();
    const controller = new AbortController();
    const attempt = connect(address, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("user gave up")), 50);
    const err = await failure(attempt);
    expect(err).toMatchObject({ code: "CANCELED", address });
  });
});
