// What mutual TLS must refuse, against a real BuildKit (dockerd's) behind the
// mTLS front: a client certificate from another CA, a server certificate that
// does not carry the expected server name, a plaintext server. And TLS never
// degrades to plaintext.
import * as net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, TransportError } from "../src/index.js";
import { type BuildKitFront, createCertificateAuthority, startBuildKitFront } from "../src/testing/index.js";
import { assertDockerd, DOCKER_BUILDKIT } from "./support/daemons.js";

let mtls: BuildKitFront;
let plaintext: BuildKitFront;

beforeAll(async () => {
  assertDockerd();
  mtls = await startBuildKitFront({ buildkit: DOCKER_BUILDKIT, mtls: { serverName: "machine-1.builders.test" } });
  plaintext = await startBuildKitFront({ buildkit: DOCKER_BUILDKIT });
});

afterAll(async () => {
  await mtls?.stop();
  await plaintext?.stop();
});

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

describe("mutual TLS", () => {
  it("works with the front's own credentials (the control case)", async () => {
    await using bk = await connect(mtls.address, { tls: mtls.tls! });
    expect((await bk.listWorkers()).length).toBeGreaterThan(0);
  });

  it("is refused by the server with a client certificate from another CA", async () => {
    const stranger = createCertificateAuthority({ commonName: "another CA" }).issue({ commonName: "intruder", usage: "client" });
    const before = mtls.connections;
    await expectTlsRefusal(connect(mtls.address, { tls: { ...mtls.tls!, ...stranger } }), mtls.address);
    expect(mtls.connections).toBe(before); // never got past the handshake
  });

  it("is refused by the server without a client certificate", async () => {
    const { ca, serverName } = mtls.tls!;
    await expectTlsRefusal(connect(mtls.address, { tls: { ca, serverName } }), mtls.address);
  });

  it("refuses a server whose certificate does not match serverName", async () => {
    const err = await expectTlsRefusal(connect(mtls.address, { tls: { ...mtls.tls!, serverName: "machine-2.builders.test" } }), mtls.address);
    expect(err.message).toMatch(/machine-2\.builders\.test|altname|does not match/i);
  });

  it("refuses a server whose certificate comes from a CA other than the one given", async () => {
    const otherCa = createCertificateAuthority({ commonName: "not the front's CA" });
    await expectTlsRefusal(connect(mtls.address, { tls: { ...mtls.tls!, ca: otherCa.cert } }), mtls.address);
  });

  it("refuses a plaintext server, even one with a real BuildKit behind it", async () => {
    // The control case: the same server does answer without TLS.
    await using bk = await connect(plaintext.address);
    expect((await bk.listWorkers()).length).toBeGreaterThan(0);
    await expectTlsRefusal(connect(plaintext.address, { tls: mtls.tls! }), plaintext.address);
  });

  it("never sends plaintext HTTP/2 when tls is given", async () => {
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
      await expectTlsRefusal(connect(address, { tls: mtls.tls! }), address);
      const bytes = Buffer.concat(received);
      expect(bytes.length).toBeGreaterThan(0);
      expect(bytes[0]).toBe(0x16); // a TLS handshake record: the ClientHello
      expect(bytes.includes("PRI * HTTP/2.0")).toBe(false);
    } finally {
      server.close();
    }
  });

  it("refuses TLS options on an address that cannot carry TLS", async () => {
    await expect(connect(DOCKER_BUILDKIT, { tls: mtls.tls! })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", address: DOCKER_BUILDKIT });
  });

  it("refuses a client certificate without its key", async () => {
    const { ca, cert, serverName } = mtls.tls!;
    await expect(connect(mtls.address, { tls: { ca, cert, serverName } })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      address: mtls.address,
    });
  });

  it("keeps the private key out of error messages", async () => {
    const stranger = createCertificateAuthority().issue({ commonName: "intruder", usage: "client" });
    const err = await connect(mtls.address, { tls: { ...mtls.tls!, ...stranger } }).catch((e: Error) => e);
    const keyBody = stranger.key.split("\n")[1]!;
    for (let e: unknown = err; e instanceof Error; e = e.cause) {
      expect(e.message).not.toContain(keyBody);
      expect(e.message).not.toContain("PRIVATE KEY");
    }
  });
});
