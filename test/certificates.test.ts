import { execFileSync } from "node:child_process";
import { createHash, X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createCertificateAuthority, type CertificateAndKey } from "../src/testing/certificates.js";

const SERVER_NAME = "buildkit.local-depot.test";
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const HOUR = 3600_000;
const DAY = 24 * HOUR;

const ca = createCertificateAuthority({ commonName: "Test CA" });
const caCert = new X509Certificate(ca.cert);
const server = ca.issue({ commonName: "depot server", dnsNames: [SERVER_NAME], usage: "server" });
const client = ca.issue({ commonName: "depot client", usage: "client" });

/** Asserts a date is within a few seconds of the expected one (certificate times are whole seconds). */
function expectAbout(actual: string, expected: number): void {
  expect(Math.abs(Date.parse(actual) - expected)).toBeLessThan(5000);
}

/** SHA-1 of the uncompressed EC point: the last 65 bytes of a P-256 SPKI. */
function keyId(publicKey: KeyObject): Buffer {
  const spki = publicKey.export({ type: "spki", format: "der" });
  return createHash("sha1").update(spki.subarray(-65)).digest();
}

describe("createCertificateAuthority", () => {
  it("creates a self-signed CA certificate", () => {
    expect(caCert.subject).toBe("CN=Test CA");
    expect(caCert.issuer).toBe("CN=Test CA");
    expect(caCert.ca).toBe(true);
    expect(caCert.checkIssued(caCert)).toBe(true);
    expect(caCert.verify(caCert.publicKey)).toBe(true);
    expect(caCert.checkPrivateKey(createPrivateKey(ca.key))).toBe(true);
    expect(ca.key).toMatch(/^-----BEGIN PRIVATE KEY-----\n/); // PKCS#8
    expect(ca.cert).toMatch(/^-----BEGIN CERTIFICATE-----\n(.{64}\n)*.{1,64}\n-----END CERTIFICATE-----\n$/);
  });

  it("defaults to 30 days of validity starting one hour ago", () => {
    const now = Date.now();
    expectAbout(caCert.validFrom, now - HOUR);
    expectAbout(caCert.validTo, now + 30 * DAY);
  });

  it("honors validDays, using GeneralizedTime past 2049", () => {
    const now = Date.now();
    const short = new X509Certificate(createCertificateAuthority({ validDays: 2 }).cert);
    expectAbout(short.validTo, now + 2 * DAY);
    const long = new X509Certificate(createCertificateAuthority({ validDays: 40 * 365 }).cert);
    expect(new Date(long.validTo).getUTCFullYear()).toBeGreaterThanOrEqual(2050);
    expectAbout(long.validTo, now + 40 * 365 * DAY);
  });

  it("uses fresh keys and positive 16-byte serial numbers", () => {
    const other = createCertificateAuthority({ commonName: "Test CA" });
    expect(other.key).not.toBe(ca.key);
    expect(new X509Certificate(other.cert).verify(caCert.publicKey)).toBe(false);
    const serials = [ca, other, server, client].map((c) => new X509Certificate(c.cert).serialNumber);
    for (const serial of serials) expect(serial).toMatch(/^[4-7][0-9A-F]{31}$/);
    expect(new Set(serials).size).toBe(serials.length);
  });
});

describe("CertificateAuthority.issue", () => {
  it("issues a server certificate for a DNS name", () => {
    const cert = new X509Certificate(server.cert);
    expect(cert.subject).toBe("CN=depot server");
    expect(cert.issuer).toBe("CN=Test CA");
    expect(cert.subjectAltName).toBe(`DNS:${SERVER_NAME}`);
    expect(cert.checkHost(SERVER_NAME)).toBe(SERVER_NAME);
    expect(cert.checkHost("wrong.name")).toBeUndefined();
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual([SERVER_AUTH]); // Node's name for extKeyUsage
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(server.key))).toBe(true);
    const now = Date.now();
    expectAbout(cert.validFrom, now - HOUR);
    expectAbout(cert.validTo, now + 30 * DAY);
  });

  it("issues a client certificate without subjectAltName", () => {
    const cert = new X509Certificate(client.cert);
    expect(cert.subject).toBe("CN=depot client");
    expect(cert.subjectAltName).toBeUndefined();
    expect(cert.keyUsage).toEqual([CLIENT_AUTH]);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
  });

  it("encodes IPv4 and IPv6 addresses, usage both and validDays", () => {
    const issued = ca.issue({
      commonName: "both",
      dnsNames: ["a.test", "b.test"],
      ipAddresses: ["127.0.0.1", "::1", "2001:db8::ffff:10.0.0.1", "fe80::"],
      usage: "both",
      validDays: 3,
    });
    const cert = new X509Certificate(issued.cert);
    expect(cert.subjectAltName).toBe(
      "DNS:a.test, DNS:b.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, " +
        "IP Address:2001:DB8:0:0:0:FFFF:A00:1, IP Address:FE80:0:0:0:0:0:0:0",
    );
    expect(cert.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(cert.checkIP("::1")).toBe("::1");
    expect(cert.checkIP("127.0.0.2")).toBeUndefined();
    expect(cert.keyUsage).toEqual([SERVER_AUTH, CLIENT_AUTH]);
    expectAbout(cert.validTo, Date.now() + 3 * DAY);
  });

  it("encodes basicConstraints and keyUsage in exact DER", () => {
    // Node's `ca` flag also depends on keyUsage and parsers accept sloppy bit strings,
    // so compare the bytes: SEQUENCE { OID, critical TRUE, OCTET STRING { value } }.
    const der = (hex: string) => Buffer.from(hex, "hex");
    const leafBasicConstraints = der("300c0603551d130101ff04023000"); // SEQUENCE {}: CA:FALSE
    const caBasicConstraints = der("300f0603551d130101ff040530030101ff"); // CA:TRUE
    const leafKeyUsage = der("300e0603551d0f0101ff040403020780"); // 7 unused bits: digitalSignature
    const caKeyUsage = der("300e0603551d0f0101ff040403020186"); // + keyCertSign, cRLSign
    const leaf = new X509Certificate(server.cert).raw;
    expect([leaf.includes(leafBasicConstraints), leaf.includes(leafKeyUsage)]).toEqual([true, true]);
    expect([caCert.raw.includes(caBasicConstraints), caCert.raw.includes(caKeyUsage)]).toEqual([true, true]);
  });

  it("links certificates by key identifiers", () => {
    const caKeyId = keyId(caCert.publicKey);
    const leaf = new X509Certificate(server.cert);
    expect(caCert.raw.includes(caKeyId)).toBe(true);
    expect(leaf.raw.includes(caKeyId)).toBe(true); // authorityKeyIdentifier
    expect(leaf.raw.includes(keyId(leaf.publicKey))).toBe(true); // subjectKeyIdentifier
  });

  it("rejects bad input", () => {
    const notIps = [
      ...["127.0.0.256", "1.2.3", "01.2.3.4", "host"],
      ...["::1::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8", "fe80::1%eth0"],
    ];
    for (const ip of notIps) {
      expect(() => ca.issue({ commonName: "x", ipAddresses: [ip], usage: "server" }), ip).toThrow(/not an IP address/);
    }
    expect(() => ca.issue({ commonName: "x", dnsNames: ["bücher.test"], usage: "server" })).toThrow(/ASCII/);
    expect(() => ca.issue({ commonName: "x", usage: "server", validDays: 0 })).toThrow(/validDays/);
  });
});

describe("TLS with issued certificates", () => {
  const servers: tls.Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });

  /** An mTLS server on loopback trusting `ca`, writing "hello" to every authorized client. */
  async function listen(identity: CertificateAndKey) {
    const peers: string[] = [];
    const rejections: unknown[] = [];
    const tlsServer = tls.createServer(
      { ...identity, ca: ca.cert, requestCert: true, rejectUnauthorized: true },
      (socket) => {
        peers.push(String(socket.getPeerCertificate().subject.CN));
        socket.end("hello");
      },
    );
    tlsServer.on("tlsClientError", (_error, socket) => rejections.push(socket.authorizationError));
    servers.push(tlsServer);
    await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
    return { port: (tlsServer.address() as AddressInfo).port, peers, rejections };
  }

  type Outcome = { data: string } | { error: NodeJS.ErrnoException } | { closed: true };

  /** Connects and reports what happens first: data from the server, an error, or a close. */
  function exchange(port: number, options: tls.ConnectionOptions): Promise<Outcome> {
    return new Promise((resolve) => {
      const socket = tls.connect({ host: "127.0.0.1", port, ca: ca.cert, ...client, ...options });
      const settle = (outcome: Outcome) => {
        resolve(outcome);
        socket.destroy();
      };
      socket.setEncoding("utf8");
      socket.on("data", (data: string) => settle({ data }));
      socket.on("error", (error) => settle({ error }));
      socket.on("close", () => settle({ closed: true }));
    });
  }

  it("completes mutual TLS with a server name that is not the address", async () => {
    const { port, peers } = await listen(server);
    expect(await exchange(port, { servername: SERVER_NAME })).toEqual({ data: "hello" });
    expect(peers).toEqual(["depot client"]);
  });

  it("rejects a client certificate from another CA", async () => {
    const { port, peers, rejections } = await listen(server);
    const stranger = createCertificateAuthority().issue({ commonName: "stranger", usage: "client" });
    // With TLS 1.3 the client finishes its side of the handshake before the server checks
    // its certificate, so it may see only an error or a close, but never the server's data.
    const outcome = await exchange(port, { servername: SERVER_NAME, ...stranger });
    expect(outcome).not.toHaveProperty("data");
    expect(peers).toEqual([]);
    // The server drops the connection after checking the certificate chain.
    await vi.waitFor(() => expect(rejections).toEqual(["UNABLE_TO_VERIFY_LEAF_SIGNATURE"]));
  });

  it("fails when the server name does not match", async () => {
    const { port } = await listen(server);
    const outcome = await exchange(port, { servername: "wrong.name" });
    expect(outcome).toMatchObject({ error: { code: "ERR_TLS_CERT_ALTNAME_INVALID" } });
  });

  it("verifies a certificate issued for 127.0.0.1 when connecting by IP", async () => {
    const byIp = ca.issue({ commonName: "by ip", ipAddresses: ["127.0.0.1"], usage: "server" });
    const { port } = await listen(byIp);
    expect(await exchange(port, {})).toEqual({ data: "hello" });
    // Control: the DNS-only certificate does not match the address.
    const dnsOnly = await listen(server);
    expect(await exchange(dnsOnly.port, {})).toMatchObject({ error: { code: "ERR_TLS_CERT_ALTNAME_INVALID" } });
  });
});

describe.skipIf(!existsSync("/usr/bin/openssl"))("openssl", () => {
  it("verifies the chain with openssl verify", () => {
    const dir = mkdtempSync(join(tmpdir(), "buildkit-node-certs-"));
    try {
      writeFileSync(join(dir, "ca.pem"), ca.cert);
      writeFileSync(join(dir, "leaf.pem"), server.cert);
      writeFileSync(join(dir, "other-ca.pem"), createCertificateAuthority().cert);
      const verify = (caFile: string) =>
        execFileSync("/usr/bin/openssl", ["verify", "-x509_strict", "-CAfile", caFile, "leaf.pem"], {
          cwd: dir,
          encoding: "utf8",
          stdio: "pipe",
        });
      expect(verify("ca.pem").trim()).toBe("leaf.pem: OK");
      expect(() => verify("other-ca.pem")).toThrow();

      const extensions = (file: string) =>
        execFileSync("/usr/bin/openssl", ["x509", "-in", file, "-noout", "-ext", "basicConstraints,keyUsage"], {
          cwd: dir,
          encoding: "utf8",
        }).replace(/\s+/g, " ").trim();
      expect(extensions("ca.pem")).toBe(
        "X509v3 Basic Constraints: critical CA:TRUE " +
          "X509v3 Key Usage: critical Digital Signature, Certificate Sign, CRL Sign",
      );
      expect(extensions("leaf.pem")).toBe(
        "X509v3 Basic Constraints: critical CA:FALSE X509v3 Key Usage: critical Digital Signature",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
