import { createPrivateKey, X509Certificate } from "node:crypto";
import * as tls from "node:tls";
import { TransportError } from "../errors.js";
import type { TlsOptions } from "./tls-options.js";

/** What dialing with TLS needs, checked once per channel. */
export interface TlsSettings {
  context: tls.SecureContext;
  /** The name the server certificate must carry, when not the address host. */
  serverName: string | undefined;
  /** A client certificate is sent (mutual TLS). */
  clientCertificate: boolean;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Checks the TLS material before any connection: each field is PEM of the
 * right kind, cert and key come together and belong together. A problem is
 * an INVALID_ARGUMENT TransportError naming the field and the address —
 * never the material itself (OpenSSL's reasons name no key bytes).
 */
export function tlsSettingsFor(options: TlsOptions, address: string): TlsSettings {
  const invalid = (message: string, cause?: unknown) =>
    new TransportError("INVALID_ARGUMENT", address, `TLS for ${address}: ${message}`, cause === undefined ? undefined : { cause });
  if (typeof options !== "object" || options === null) throw invalid("tls must be an object { ca, cert, key, serverName }");
  for (const field of ["ca", "cert", "key"] as const) {
    const value: unknown = options[field];
    if (value !== undefined && typeof value !== "string" && !(value instanceof Uint8Array)) {
      throw invalid(`tls.${field} must be PEM text (a string) or its bytes, not ${describeType(value)}`);
    }
  }
  if (options.serverName !== undefined && (typeof options.serverName !== "string" || options.serverName === "")) {
    throw invalid("tls.serverName must be a non-empty string");
  }
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw invalid(options.cert === undefined ? "tls.key was given without tls.cert" : "tls.cert was given without tls.key");
  }
  const ca = options.ca === undefined ? undefined : pemText(options.ca);
  const cert = options.cert === undefined ? undefined : pemText(options.cert);
  const key = options.key === undefined ? undefined : pemText(options.key);

  if (ca !== undefined) {
    const blocks = ca.match(PEM_CERTIFICATE) ?? [];
    if (blocks.length === 0) throw invalid("tls.ca holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    blocks.forEach((block, i) => parseCertificate(block, () => invalid(`tls.ca: certificate ${i + 1} cannot be parsed`)));
  }
  if (cert !== undefined) {
    const first = cert.match(PEM_CERTIFICATE)?.[0];
    if (!first) throw invalid("tls.cert holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    parseCertificate(first, () => invalid("tls.cert cannot be parsed as a certificate"));
  }
  if (key !== undefined) {
    try {
      createPrivateKey(key);
    } catch (err) {
      throw invalid(`tls.key is not a usable PEM private key (${reasonOf(err)}); an encrypted key is not supported`, err);
    }
  }
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ ca, cert, key, minVersion: "TLSv1.2" });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ERR_OSSL_X509_KEY_VALUES_MISMATCH") throw invalid("tls.key is not the private key of tls.cert", err);
    throw invalid(`the certificate material cannot be loaded (${reasonOf(err)})`, err);
  }
  return { context, serverName: options.serverName, clientCertificate: cert !== undefined };
}

function pemText(value: string | Uint8Array): string {
  return typeof value === "string" ? value : Buffer.from(value).toString("latin1");
}

function parseCertificate(pem: string, onError: () => TransportError): void {
  try {
    new X509Certificate(pem);
  } catch {
    throw onError();
  }
}

/** OpenSSL's reason ("DECODER routines::unsupported") or the error code: never any input. */
function reasonOf(err: unknown): string {
  const e = err as { code?: string; reason?: string };
  return e.reason ?? e.code ?? "unknown reason";
}

/** A value's kind for a message, never the value: it may be a key. */
function describeType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
