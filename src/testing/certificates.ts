/**
 * Throwaway X.509 certificates for mTLS in tests and local servers.
 *
 * Node can generate keys but not certificates, so this module carries a
 * small DER encoder and builds X.509 v3 certificates (RFC 5280) signed with
 * ECDSA P-256 / SHA-256. Only what a CA, a server and a client need.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { BuildKitNodeError } from "../errors.js";

/** A PEM certificate and its PEM (PKCS#8) private key. */
export interface CertificateAndKey {
  cert: string;
  key: string;
}

/** A self-signed certificate authority that can issue leaf certificates. */
export interface CertificateAuthority extends CertificateAndKey {
  /** Issues a leaf certificate signed by this CA. */
  issue(options: IssueOptions): CertificateAndKey;
}

export interface IssueOptions {
  /** The subject's CN. TLS clients match `dnsNames` and `ipAddresses`, not this. */
  commonName: string;
  /** DNS names for the subjectAltName extension, e.g. "buildkit.local-depot.test". */
  dnsNames?: string[];
  /** IPv4 or IPv6 addresses for the subjectAltName extension. */
  ipAddresses?: string[];
  /** The extended key usage: TLS server, TLS client, or both. */
  usage: "server" | "client" | "both";
  /** Days of validity from now (default 30). Starts one hour ago to allow clock skew. */
  validDays?: number;
}

/** Creates a new CA with a fresh P-256 key and a self-signed certificate. */
export function createCertificateAuthority(
  options: { commonName?: string; validDays?: number } = {},
): CertificateAuthority {
  const { publicKey, privateKey } = newKeyPair();
  const issuer: Issuer = {
    commonName: options.commonName ?? "buildkit-node test CA",
    privateKey,
    keyId: keyIdentifier(publicKey),
  };
  const cert = certificate(issuer.commonName, publicKey, issuer, options.validDays, [
    extension(OID.basicConstraints, true, sequence(boolean(true))),
    extension(OID.keyUsage, true, keyUsage(DIGITAL_SIGNATURE, KEY_CERT_SIGN, CRL_SIGN)),
  ]);
  return { cert, key: privateKeyPem(privateKey), issue: (leaf) => issueLeaf(issuer, leaf) };
}

interface Issuer {
  commonName: string;
  privateKey: KeyObject;
  keyId: Buffer;
}

function issueLeaf(issuer: Issuer, options: IssueOptions): CertificateAndKey {
  const { publicKey, privateKey } = newKeyPair();
  const purposes = {
    server: [OID.serverAuth],
    client: [OID.clientAuth],
    both: [OID.serverAuth, OID.clientAuth],
  }[options.usage];
  const names = [
    ...(options.dnsNames ?? []).map((name) => implicit(2, ascii(name))),
    ...(options.ipAddresses ?? []).map((ip) => implicit(7, ipAddressBytes(ip))),
  ];
  const extensions = [
    extension(OID.basicConstraints, true, sequence()),
    extension(OID.keyUsage, true, keyUsage(DIGITAL_SIGNATURE)),
    extension(OID.extKeyUsage, false, sequence(...purposes.map(oid))),
  ];
  // An empty subjectAltName is invalid: leave it out (fine for client certificates).
  if (names.length > 0) extensions.push(extension(OID.subjectAltName, false, sequence(...names)));
  const cert = certificate(options.commonName, publicKey, issuer, options.validDays, extensions);
  return { cert, key: privateKeyPem(privateKey) };
}

// ---- Certificate ----

const OID = {
  commonName: "2.5.4.3",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

// KeyUsage bit numbers (RFC 5280 section 4.2.1.3).
const DIGITAL_SIGNATURE = 0;
const KEY_CERT_SIGN = 5;
const CRL_SIGN = 6;

/** Builds, signs and PEM-encodes a certificate; adds the key identifier extensions. */
function certificate(
  subject: string,
  publicKey: KeyObject,
  issuer: Issuer,
  validDays = 30,
  extensions: Buffer[],
): string {
  if (!(validDays > 0)) throw invalid(`validDays must be positive, got ${validDays}`);
  const now = Date.now();
  const signatureAlgorithm = sequence(oid(OID.ecdsaWithSha256));
  const tbs = sequence(
    explicit(0, integer(Buffer.of(2))), // v3
    integer(serialNumber()),
    signatureAlgorithm,
    name(issuer.commonName),
    sequence(time(new Date(now - 3600_000)), time(new Date(now + validDays * 86400_000))),
    name(subject),
    publicKey.export({ type: "spki", format: "der" }),
    explicit(3, sequence(
      ...extensions,
      extension(OID.subjectKeyIdentifier, false, octetString(keyIdentifier(publicKey))),
      extension(OID.authorityKeyIdentifier, false, sequence(implicit(0, issuer.keyId))),
    )),
  );
  // For EC keys crypto.sign returns the DER Ecdsa-Sig-Value X.509 expects.
  const signature = sign("sha256", tbs, issuer.privateKey);
  return pem("CERTIFICATE", sequence(tbs, signatureAlgorithm, bitString(signature)));
}

function newKeyPair(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync("ec", { namedCurve: "P-256" });
}

/** SHA-1 of the subjectPublicKey bits: the uncompressed point 04 || x || y (RFC 5280 4.2.1.2). */
function keyIdentifier(publicKey: KeyObject): Buffer {
  const { x, y } = publicKey.export({ format: "jwk" });
  const point = Buffer.concat([Buffer.of(4), Buffer.from(x!, "base64url"), Buffer.from(y!, "base64url")]);
  return createHash("sha1").update(point).digest();
}

/** 16 random bytes; top bit clear keeps it positive, next bit set keeps it 16 bytes and nonzero. */
function serialNumber(): Buffer {
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  return serial;
}

function name(commonName: string): Buffer {
  return sequence(set(sequence(oid(OID.commonName), utf8String(commonName))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [boolean(true)] : []), octetString(value));
}

/** A KeyUsage BIT STRING; all our bits are in the first byte. */
function keyUsage(...bits: number[]): Buffer {
  const byte = bits.reduce((acc, bit) => acc | (0x80 >> bit), 0);
  // DER drops trailing zero bits, so the unused count follows the highest bit set.
  return bitString(Buffer.of(byte), 7 - Math.max(...bits));
}

function ascii(dnsName: string): Buffer {
  if (!/^[\x21-\x7e]+$/.test(dnsName)) throw invalid(`DNS name must be ASCII (use punycode): ${dnsName}`);
  return Buffer.from(dnsName, "ascii");
}

function ipAddressBytes(ip: string): Buffer {
  const bytes = parseIPv4(ip) ?? parseIPv6(ip);
  if (!bytes) throw invalid(`not an IP address: ${ip}`);
  return bytes;
}

function parseIPv4(ip: string): Buffer | undefined {
  const parts = ip.split(".");
  const valid = parts.length === 4 && parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
  return valid ? Buffer.from(parts.map(Number)) : undefined;
}

/** Expands "::" and a trailing dotted IPv4 (e.g. "::ffff:10.0.0.1") into eight 16-bit groups. */
function parseIPv6(ip: string): Buffer | undefined {
  const halves = ip.split("::").map((half) => (half === "" ? [] : half.split(":")));
  if (halves.length > 2) return undefined;
  const tail = halves.at(-1)!;
  const v4 = tail.at(-1)?.includes(".") ? parseIPv4(tail.pop()!) : undefined;
  if (v4) tail.push(v4.readUInt16BE(0).toString(16), v4.readUInt16BE(2).toString(16));
  const [head = [], rest] = halves;
  const missing = 8 - head.length - (rest?.length ?? 0);
  if (rest ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...Array<string>(rest ? missing : 0).fill("0"), ...(rest ?? [])];
  if (!groups.every((group) => /^[0-9a-f]{1,4}$/i.test(group))) return undefined;
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

function privateKeyPem(privateKey: KeyObject): string {
  return privateKey.export({ type: "pkcs8", format: "pem" }) as string;
}

function pem(label: string, body: Buffer): string {
  const lines = body.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function invalid(message: string): BuildKitNodeError {
  return new BuildKitNodeError("INVALID_ARGUMENT", message);
}

// ---- DER (X.690) ----

function der(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.of(tag), derLength(content.length), content]);
}

/** Short form below 128, else 0x80 | byte count followed by the big-endian length. */
function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.of(length);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
  return Buffer.of(0x80 | bytes.length, ...bytes);
}

const sequence = (...items: Buffer[]) => der(0x30, Buffer.concat(items));
// DER sorts the elements of a SET OF; ours always hold exactly one.
const set = (item: Buffer) => der(0x31, item);
const boolean = (value: boolean) => der(0x01, Buffer.of(value ? 0xff : 0x00));
const octetString = (bytes: Buffer) => der(0x04, bytes);
const utf8String = (text: string) => der(0x0c, Buffer.from(text, "utf8"));
const bitString = (bytes: Buffer, unusedBits = 0) => der(0x03, Buffer.concat([Buffer.of(unusedBits), bytes]));
/** [n] EXPLICIT: a constructed context tag wrapping a whole element. */
const explicit = (n: number, element: Buffer) => der(0xa0 | n, element);
/** [n] IMPLICIT on a primitive: the context tag replaces the element's own tag. */
const implicit = (n: number, content: Buffer) => der(0x80 | n, content);

/** An unsigned big-endian integer, minimal, with a 0x00 prefix when the top bit is set. */
function integer(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const minimal = bytes.subarray(start);
  return der(0x02, minimal[0]! & 0x80 ? Buffer.concat([Buffer.of(0), minimal]) : minimal);
}

/** First two arcs share a byte (40 * a + b); every arc is base-128, high bit = "more follows". */
function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split(".").map(Number);
  const bytes = [40 * a + b];
  for (const arc of rest) {
    const chunk = [arc & 0x7f];
    for (let n = arc >>> 7; n > 0; n >>>= 7) chunk.unshift((n & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return der(0x06, Buffer.from(bytes));
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5); whole seconds, UTC. */
function time(date: Date): Buffer {
  const digits = date.toISOString().replace(/\D/g, "").slice(0, 14); // YYYYMMDDHHMMSS
  return date.getUTCFullYear() < 2050
    ? der(0x17, Buffer.from(`${digits.slice(2)}Z`, "ascii"))
    : der(0x18, Buffer.from(`${digits}Z`, "ascii"));
}
