// What mutual TLS must refuse, on each test daemon: the standalone buildkitd's
// own TLS listener (Go's TLS, certificates made by local-buildkit.sh), and
// dockerd's BuildKit behind the mTLS front (Node's TLS; dockerd serves no TLS
// of its own here). A client certificate from another CA, none at all, a
// server certificate without the expected server name or from another CA, a
// plaintext server: each is a TLS error naming the address, and TLS never
// degrades to plaintext.
import * as net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type TlsOptions, TransportError } from "../src/index.js";
import { type BuildKitFront, createCertificateAuthority, startBuildKitFront } from "../src/testing/index.js";
import { assertDaemon, BUILD_DAEMONS, DOCKER_BUILDKIT } from "./support/daemons.js";

async function expectTlsRefusal(attempt: Promise<unknown>, address: string): Promise<TransportError> {
  const err = await attempt.then(
    () => expect.unreachable("the connection was accepted"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TransportError);
  const transportError = err as TransportError;
  expect(transportError.code).toBe("TLS");
  expect(transportError.address).toBe(address);
  expect(transportError.message).toContain(address);
  return transportError;
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  /** The mTLS endpoint under test, with credentials it accepts. */
  let endpoint: { address: string; tls: Required<Pick<TlsOptions, "ca" | "cert" | "key" | "serverName">> };
  let front: BuildKitFront | undefined;
  let plaintext: BuildKitFront;
  /** An address of this daemon that is not TCP, so cannot carry TLS. */
  const localAddress = daemon.embeddedInDocker ? DOCKER_BUILDKIT : process.env.BUILDKIT_NODE_BUILDKITD_SOCKET;

  beforeAll(async () => {
    assertDaemon(daemon);
    const own = daemon.connectOptions.tls;
    if (own?.ca && own.cert && own.key && own.serverName) {
      endpoint = { address: daemon.address, tls: { ca: String(own.ca), cert: String(own.cert), key: String(own.key), serverName: own.serverName } };
    } else {
      front = await startBuildKitFront({ ...daemon.backend, mtls: { serverName: "machine-1.builders.test" } });
      endpoint = { address: front.address, tls: front.tls! };
    }
    plaintext = await startBuildKitFront(daemon.backend);
  });

  afterAll(async () => {
    await front?.stop();
    await plaintext?.stop();
  });

  it("works with the endpoint's own credentials (the control case)", async () => {
    await using bk = await connect(endpoint.address, { tls: endpoint.tls });
    expect((await bk.listWorkers()).length).toBeGreaterThan(0);
  });

  it("is refused by the server with a client certificate from another CA", async () => {
    const stranger = createCertificateAuthority({ commonName: "another CA" }).issue({ commonName: "intruder", usage: "client" });
    const before = front?.connections;
    await expectTlsRefusal(connect(endpoint.address, { tls: { ...endpoint.tls, ...stranger } }), endpoint.address);
    if (front) expect(front.connections).toBe(before); // never got past the handshake
  });

  it("is refused by the server without a client certificate", async () => {
    const { ca, serverName } = endpoint.tls;
    await expectTlsRefusal(connect(endpoint.address, { tls: { ca, serverName } }), endpoint.address);
  });

  it("refuses a server whose certificate does not match serverName", async () => {
    const err = await expectTlsRefusal(connect(endpoint.address, { tls: { ...endpoint.tls, serverName: "machine-2.builders.test" } }), endpoint.address);
    expect(err.message).toMatch(/machine-2\.builders\.test|altname|does not match/i);
  });

  it("refuses a server whose certificate comes from a CA other than the one given", async () => {
    const otherCa = createCertificateAuthority({ commonName: "not the endpoint's CA" });
    await expectTlsRefusal(connect(endpoint.address, { tls: { ...endpoint.tls, ca: otherCa.cert } }), endpoint.address);
  });

  it("refuses a plaintext server, even one with a real BuildKit behind it", async () => {
    // The control case: the same server does answer without TLS.
    await using bk = await connect(plaintext.address);
    expect((await bk.listWorkers()).length).toBeGreaterThan(0);
    await expectTlsRefusal(connect(plaintext.address, { tls: endpoint.tls }), plaintext.address);
  });

  it("refuses TLS options on an address that cannot carry TLS", async () => {
    expect(localAddress, "BUILDKIT_NODE_BUILDKITD_SOCKET (local-buildkit.sh env) names buildkitd's socket").toBeDefined();
    await expect(connect(localAddress!, { tls: endpoint.tls })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", address: localAddress });
  });

  it("refuses a client certificate without its key", async () => {
    const { ca, cert, serverName } = endpoint.tls;
    await expect(connect(endpoint.address, { tls: { ca, cert, serverName } })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      address: endpoint.address,
    });
  });

  it("keeps the private key out of error messages", async () => {
    const stranger = createCertificateAuthority().issue({ commonName: "intruder", usage: "client" });
    const err = await connect(endpoint.address, { tls: { ...endpoint.tls, ...stranger } }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(TransportError);
    const keyBody = stranger.key.split("\n")[1]!;
    for (let e: unknown = err; e instanceof Error; e = e.cause) {
      expect(e.message).not.toContain(keyBody);
      expect(e.message).not.toContain("PRIVATE KEY");
    }
  });
});

describe("TLS toward a server that speaks none", () => {
  it("never sends plaintext HTTP/2 when tls is given", async () => {
    const authority = createCertificateAuthority();
    const tls = { ca: authority.cert, ...authority.issue({ commonName: "client", usage: "client" }), serverName: "server.test" };
    const received: Buffer[] = [];
    const server = net.createServer((socket) => {
      socket.on("data", (chunk: Buffer) => {
        received.push(chunk);
        // Answer like an HTTP/2 server that knows nothing of TLS: SETTINGS.
        socket.end(Buffer.from("000000040000000000", "hex"));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    try {
      await expectTlsRefusal(connect(address, { tls }), address);
      const bytes = Buffer.concat(received);
      expect(bytes.length).toBeGreaterThan(0);
      expect(bytes[0]).toBe(0x16); // a TLS handshake record: the ClientHello
      expect(bytes.includes("PRI * HTTP/2.0")).toBe(false);
    } finally {
      server.close();
    }
  });
});
