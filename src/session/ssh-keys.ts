import { createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject, sign as cryptoSign } from "node:crypto";
import { SshFormatError, SshReader, sshMpint, sshString } from "./ssh-wire.js";

/**
 * Private keys as an SSH agent holds them: their public key blob, a
 * comment, and a signer speaking SSH signature formats. Ed25519, RSA and
 * ECDSA (P-256/384/521) keys, read from unencrypted OpenSSH files
 * (`ssh-keygen`'s default) or from PEM files node:crypto reads (PKCS#8,
 * PKCS#1, SEC1). The private key only ever lives in a KeyObject.
 */
export interface AgentKey {
  /** The public key in SSH wire format, as `ssh-add -L` prints it (base64). */
  readonly publicBlob: Buffer;
  readonly comment: string;
  /** Signs `data`; `flags` are SSH_AGENT_RSA_SHA2_256 (2) / _512 (4). Returns an SSH signature blob. */
  sign(data: Buffer, flags: number): Buffer;
}

/** A key that cannot be used; the message gives the reason, never key bytes. */
export class SshKeyError extends Error {
  override name = "SshKeyError";
}

const rsaSha256Flag = 2;
const rsaSha512Flag = 4;

/** Parses the text of a private key file. */
export function parseAgentKey(fileText: string, defaultComment: string): AgentKey {
  if (fileText.includes("-----BEGIN OPENSSH PRIVATE KEY-----")) {
    const { key, comment } = parseOpenSshPrivateKey(fileText);
    return agentKey(key, comment || defaultComment);
  }
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(fileText)) throw encryptedKeyError();
  let key: KeyObject;
  try {
    key = createPrivateKey(fileText);
  } catch {
    throw new SshKeyError("not a private key in OpenSSH or PEM (PKCS#8, PKCS#1, SEC1) format");
  }
  return agentKey(key, defaultComment);
}

function encryptedKeyError(): SshKeyError {
  return new SshKeyError("passphrase-protected keys are not supported; load it into ssh-agent and forward the agent instead");
}

function agentKey(key: KeyObject, comment: string): AgentKey {
  const publicJwk = createPublicKey(key).export({ format: "jwk" });
  switch (key.asymmetricKeyType) {
    case "ed25519":
      return {
        publicBlob: Buffer.concat([sshString("ssh-ed25519"), sshString(jwkBytes(publicJwk.x))]),
        comment,
        sign: (data) => Buffer.concat([sshString("ssh-ed25519"), sshString(cryptoSign(null, data, key))]),
      };
    case "rsa":
      return {
        publicBlob: Buffer.concat([sshString("ssh-rsa"), sshMpint(jwkBytes(publicJwk.e)), sshMpint(jwkBytes(publicJwk.n))]),
        comment,
        sign(data, flags) {
          // Plain ssh-rsa (SHA-1) only when the client asks for neither SHA-2 variant.
          const [algorithm, hash] =
            flags & rsaSha512Flag ? ["rsa-sha2-512", "sha512"] : flags & rsaSha256Flag ? ["rsa-sha2-256", "sha256"] : ["ssh-rsa", "sha1"];
          return Buffer.concat([sshString(algorithm), sshString(cryptoSign(hash, data, key))]);
        },
      };
    case "ec": {
      const curve = ecdsaCurves.get(publicJwk.crv ?? "");
      if (!curve) throw new SshKeyError(`ECDSA curve ${publicJwk.crv ?? "(unknown)"} is not one SSH uses`);
      const algorithm = `ecdsa-sha2-${curve.name}`;
      const point = Buffer.concat([Buffer.of(4), jwkBytes(publicJwk.x), jwkBytes(publicJwk.y)]);
      return {
        publicBlob: Buffer.concat([sshString(algorithm), sshString(curve.name), sshString(point)]),
        comment,
        sign(data) {
          const rs = cryptoSign(curve.hash, data, { key, dsaEncoding: "ieee-p1363" });
          const half = rs.length / 2;
          const signature = Buffer.concat([sshMpint(rs.subarray(0, half)), sshMpint(rs.subarray(half))]);
          return Buffer.concat([sshString(algorithm), sshString(signature)]);
        },
      };
    }
    default:
      throw new SshKeyError(`${key.asymmetricKeyType ?? "unknown"} keys are not supported (use Ed25519, RSA or ECDSA)`);
  }
}

const ecdsaCurves = new Map([
  ["P-256", { name: "nistp256", hash: "sha256", jwk: "P-256", size: 32 }],
  ["P-384", { name: "nistp384", hash: "sha384", jwk: "P-384", size: 48 }],
  ["P-521", { name: "nistp521", hash: "sha512", jwk: "P-521", size: 66 }],
]);

/**
 * The `openssh-key-v1` format (OpenSSH's PROTOCOL.key): magic, cipher, KDF,
 * public keys, then a private section of check bytes, the key's fields and a
 * comment. Unencrypted, one key, as `ssh-keygen -N ""` writes.
 */
function parseOpenSshPrivateKey(fileText: string): { key: KeyObject; comment: string } {
  const armored = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]*?)-----END OPENSSH PRIVATE KEY-----/.exec(fileText);
  if (!armored) throw new SshKeyError("an OpenSSH private key without its END line");
  const body = Buffer.from(armored[1]!.replace(/\s+/g, ""), "base64");
  const magic = Buffer.from("openssh-key-v1\0", "latin1");
  if (!body.subarray(0, magic.length).equals(magic)) throw new SshKeyError("not an openssh-key-v1 private key");
  try {
    const outer = new SshReader(body.subarray(magic.length));
    const cipher = outer.text();
    const kdf = outer.text();
    outer.string(); // KDF options
    if (cipher !== "none" || kdf !== "none") throw encryptedKeyError();
    if (outer.uint32() !== 1) throw new SshKeyError("files holding several keys are not supported");
    outer.string(); // the public key, repeated in the private section
    const inner = new SshReader(outer.string());
    if (inner.uint32() !== inner.uint32()) throw new SshKeyError("corrupt OpenSSH private key (check bytes differ)");
    const type = inner.text();
    const key = createPrivateKey({ key: openSshKeyFields(type, inner), format: "jwk" });
    return { key, comment: inner.text() };
  } catch (err) {
    if (err instanceof SshKeyError) throw err;
    if (err instanceof SshFormatError) throw new SshKeyError(`corrupt OpenSSH private key (${err.message})`);
    throw new SshKeyError("the OpenSSH private key's fields do not form a valid key");
  }
}

/** Reads one key's private fields (after its type name) as a JWK node:crypto imports. */
function openSshKeyFields(type: string, reader: SshReader): JsonWebKey {
  if (type === "ssh-ed25519") {
    const publicKey = reader.string();
    const secret = reader.string(); // 32-byte seed followed by the public key
    if (publicKey.length !== 32 || secret.length !== 64) throw new SshKeyError("corrupt Ed25519 key");
    return { kty: "OKP", crv: "Ed25519", x: base64url(publicKey), d: base64url(secret.subarray(0, 32)) };
  }
  if (type === "ssh-rsa") {
    const [n, e, d, iqmp, p, q] = [reader.mpint(), reader.mpint(), reader.mpint(), reader.mpint(), reader.mpint(), reader.mpint()];
    // JWK wants the CRT exponents OpenSSH does not store: d mod (p-1), d mod (q-1).
    const dBig = toBigInt(d);
    const dp = dBig % (toBigInt(p) - 1n);
    const dq = dBig % (toBigInt(q) - 1n);
    return { kty: "RSA", n: base64url(n), e: base64url(e), d: base64url(d), p: base64url(p), q: base64url(q), dp: base64url(fromBigInt(dp)), dq: base64url(fromBigInt(dq)), qi: base64url(iqmp) };
  }
  if (type.startsWith("ecdsa-sha2-")) {
    const curveName = reader.text();
    const curve = [...ecdsaCurves.values()].find((c) => c.name === curveName);
    const point = reader.string();
    const secret = reader.mpint();
    if (!curve || type !== `ecdsa-sha2-${curve.name}`) throw new SshKeyError(`${type} keys are not supported`);
    if (point.length !== 1 + 2 * curve.size || point[0] !== 4 || secret.length > curve.size) throw new SshKeyError("corrupt ECDSA key");
    return {
      kty: "EC",
      crv: curve.jwk,
      x: base64url(point.subarray(1, 1 + curve.size)),
      y: base64url(point.subarray(1 + curve.size)),
      d: base64url(Buffer.concat([Buffer.alloc(curve.size - secret.length), secret])),
    };
  }
  throw new SshKeyError(`${type} keys are not supported (use Ed25519, RSA or ECDSA)`);
}

function jwkBytes(field: string | undefined): Buffer {
  if (field === undefined) throw new SshKeyError("the key lacks a public component");
  return Buffer.from(field, "base64url");
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64url");
}

function toBigInt(unsigned: Uint8Array): bigint {
  return unsigned.length === 0 ? 0n : BigInt(`0x${Buffer.from(unsigned).toString("hex")}`);
}

function fromBigInt(value: bigint): Buffer {
  const hex = value.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
}
