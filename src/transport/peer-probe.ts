import * as net from "node:net";
import * as tls from "node:tls";
import { TransportError } from "../errors.js";
import type { Endpoint } from "./address.js";

/** How long each probe may take (within the connect timeout). */
const PROBE_TIMEOUT_MS = 3_000;
/** HTTP/2's client connection preface, then an empty SETTINGS frame. */
const PREFACE = Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

/**
 * Explains a connection that failed before the server spoke HTTP/2, by
 * asking the address again: does it answer a TLS handshake (a TLS port
 * dialed without `tls`)? What does it say to HTTP/2's preface ("HTTP/1.1
 * 400 Bad Request": a web server; nothing: it hung up)? Only runs on that
 * failure path; each probe is one short connection, bounded by `signal`.
 */
export async function explainNotHttp2(endpoint: Endpoint, address: string, cause: TransportError, signal: AbortSignal): Promise<TransportError> {
  if (endpoint.kind === "docker") return cause; // dockerd answered the upgrade: it is dockerd
  const target = endpoint.kind === "unix" ? { path: endpoint.path } : { host: endpoint.host, port: endpoint.port };
  const wantsTls = endpoint.kind === "tcp" && (await answersTls(endpoint.host, endpoint.port, signal));
  // Once the caller gave up, what a probe cut short saw says nothing of the peer.
  if (signal.aborted) return cause;
  if (wantsTls) {
    return new TransportError(
      "TLS",
      address,
      `${address} wants TLS: it dropped our plaintext HTTP/2 connection and answers a TLS handshake; pass the tls option (ca, cert, key, serverName)`,
      { cause },
    );
  }
  const answer = await answerToPreface(target, signal);
  if (signal.aborted) return cause;
  return new TransportError("UNAVAILABLE", address, `${address} is not a BuildKit daemon: ${describeAnswer(answer)}`, { cause });
}

function describeAnswer(answer: Buffer | undefined): string {
  if (answer === undefined) return "it closed the connection without speaking HTTP/2";
  if (answer.length === 0) return "it did not answer HTTP/2's connection preface";
  const text = answer.toString("latin1");
  const statusLine = /^HTTP\/1\.[01] [^\r\n]*/.exec(text)?.[0];
  if (statusLine) return `an HTTP/1.1 server answered ("${statusLine}"), not HTTP/2`;
  if (answer[0] === 0x15 || answer[0] === 0x16) return "a TLS server answered, not plaintext HTTP/2";
  if (isSettingsFrame(answer)) return "it speaks HTTP/2 but broke the connection";
  return `it does not speak HTTP/2 (it answered ${JSON.stringify(printable(text.slice(0, 40)))})`;
}

/** A SETTINGS frame header: type 4 on stream 0. */
function isSettingsFrame(bytes: Buffer): boolean {
  return bytes.length >= 9 && bytes[3] === 4 && bytes.readUInt32BE(5) === 0;
}

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, ".");
}

/**
 * Sends HTTP/2's preface and collects what comes back: the first bytes
 * (empty if none came in time), or undefined if the peer hung up silently.
 */
function answerToPreface(target: { path: string } | { host: string; port: number }, signal: AbortSignal): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(undefined); // an aborted signal's listener would never fire
    const socket = net.connect(target);
    const chunks: Buffer[] = [];
    let length = 0;
    const done = (closedSilently = false) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve(length === 0 && closedSilently ? undefined : Buffer.concat(chunks));
    };
    const onAbort = () => done();
    const timer = setTimeout(done, PROBE_TIMEOUT_MS);
    signal.addEventListener("abort", onAbort, { once: true });
    socket.on("connect", () => socket.write(PREFACE));
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= 64) done();
    });
    socket.on("error", () => done(true));
    socket.on("close", () => done(true));
  });
}

/** Whether `host:port` completes (or answers, even with an alert) a TLS handshake. */
function answersTls(host: string, port: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false); // an aborted signal's listener would never fire
    const socket = tls.connect({
      host,
      port,
      // Only asking whether it speaks TLS: nothing is sent or trusted.
      rejectUnauthorized: false,
      ALPNProtocols: ["h2"],
      ...(net.isIP(host) ? {} : { servername: host }),
    });
    const done = (answered: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve(answered);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(false), PROBE_TIMEOUT_MS);
    signal.addEventListener("abort", onAbort, { once: true });
    socket.on("secureConnect", () => done(true));
    // An alert from the server (it wants a client certificate, say) is a TLS
    // answer too; anything else (a plaintext reply: "wrong version number") is not.
    socket.on("error", (err: NodeJS.ErrnoException) => done(/_ALERT_/.test(err.code ?? "")));
    socket.on("close", () => done(false));
  });
}
