import * as http from "node:http";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { type ErrorCode, TransportError } from "../errors.js";
import type { Endpoint } from "./address.js";
import type { TlsSettings } from "./tls-context.js";

/**
 * Opens one byte stream to a daemon, ready for HTTP/2: a connected unix
 * socket, a TCP socket (with a finished TLS handshake when `tls` is given),
 * or a dockerd Engine socket upgraded on `POST /grpc`. Rejects with a
 * TransportError naming `address`; `signal` bounds the whole attempt.
 */
export function dial(endpoint: Endpoint, address: string, tlsSettings: TlsSettings | undefined, signal: AbortSignal): Promise<Duplex> {
  switch (endpoint.kind) {
    case "unix":
      return dialSocket(net.connect({ path: endpoint.path }), address, signal, "connect");
    case "tcp":
      if (tlsSettings) return dialTls(endpoint.host, endpoint.port, tlsSettings, address, signal);
      return dialSocket(net.connect({ host: endpoint.host, port: endpoint.port }), address, signal, "connect");
    case "docker":
      return upgradeToGrpc(endpoint.socketPath, address, signal);
  }
}

/**
 * Opens a connection for HTTP/2 to an `http://` (h2c with prior knowledge)
 * or `https://` URL (TLS with the system's trusted roots, ALPN h2), as an
 * API client needs. Rejects with a TransportError naming the origin.
 */
export function dialUrl(url: URL, signal: AbortSignal): Promise<Duplex> {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const address = url.origin;
  if (url.protocol === "http:") return dialSocket(net.connect({ host, port: Number(url.port || 80) }), address, signal, "connect");
  const socket = tls.connect({ host, port: Number(url.port || 443), servername: net.isIP(host) ? undefined : host, ALPNProtocols: ["h2"], minVersion: "TLSv1.2" });
  return dialSocket(socket, address, signal, "secureConnect").then((ready) => {
    if (socket.alpnProtocol !== "h2") {
      ready.destroy();
      throw new TransportError("UNAVAILABLE", address, `${address} does not offer HTTP/2 (ALPN ${JSON.stringify(socket.alpnProtocol || "none")}); use HTTP/1.1`);
    }
    return ready;
  });
}

/** The name a server certificate is checked against, and the HTTP/2 authority. */
export function serverNameOf(host: string, tlsSettings: Pick<TlsSettings, "serverName"> | undefined): string {
  return tlsSettings?.serverName ?? host;
}

function dialTls(host: string, port: number, settings: TlsSettings, address: string, signal: AbortSignal): Promise<Duplex> {
  const name = serverNameOf(host, settings);
  const socket = tls.connect({
    host,
    port,
    secureContext: settings.context,
    // SNI may not carry an IP address (RFC 6066); the identity check below still does.
    servername: net.isIP(name) ? undefined : name,
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
    ALPNProtocols: ["h2"],
    minVersion: "TLSv1.2",
  });
  return dialSocket(socket, address, signal, "secureConnect").then(async (ready) => {
    const alpn = socket.alpnProtocol;
    if (typeof alpn === "string" && alpn !== "h2") {
      ready.destroy();
      throw new TransportError("TLS", address, `TLS to ${address}: the server negotiated "${alpn}", not HTTP/2`);
    }
    // With TLS 1.3 the server checks our certificate after our side of the
    // handshake is done, and may then just close the connection. An HTTP/2
    // server speaks first (its SETTINGS), so its first bytes mean "accepted".
    if (settings.clientCertificate && socket.getProtocol() === "TLSv1.3") await serverSpeaks(socket, address, signal);
    return ready;
  });
}

/**
 * Resolves when the server's first bytes are readable, leaving them buffered
 * (HTTP/2 takes over a socket's buffered bytes); rejects if it hangs up first.
 */
function serverSpeaks(socket: tls.TLSSocket, address: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (err: TransportError) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onReadable = () => {
      // 'readable' also announces the end of the stream: no bytes, a hang-up.
      if (socket.readableLength === 0) return onHangUp();
      cleanup();
      resolve();
    };
    const onHangUp = () =>
      fail(new TransportError("TLS", address, `TLS with ${address}: the server closed the connection right after the handshake; it refused the client certificate`));
    const onError = (err: NodeJS.ErrnoException) => fail(dialError(err, address, true));
    const onAbort = () => fail(abortError(signal, address));
    const cleanup = () => {
      socket.off("readable", onReadable);
      socket.off("end", onHangUp);
      socket.off("close", onHangUp);
      socket.off("error", onError);
      signal.removeEventListener("abort", onAbort);
    };
    if (signal.aborted) return onAbort();
    socket.once("readable", onReadable);
    socket.once("end", onHangUp);
    socket.once("close", onHangUp);
    socket.once("error", onError);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Waits for `readyEvent` on a socket being connected, mapping its errors. */
function dialSocket(socket: net.Socket, address: string, signal: AbortSignal, readyEvent: "connect" | "secureConnect"): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    let tcpConnected = false;
    const onTcpConnect = () => (tcpConnected = true);
    const onReady = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: NodeJS.ErrnoException) => {
      cleanup();
      socket.destroy();
      reject(dialError(err, address, readyEvent === "secureConnect" && tcpConnected));
    };
    const onClose = () => onError(Object.assign(new Error("the connection was closed during the handshake"), { code: "ECONNRESET" }));
    const onAbort = () => {
      cleanup();
      socket.destroy();
      reject(abortError(signal, address));
    };
    const cleanup = () => {
      socket.off("connect", onTcpConnect);
      socket.off(readyEvent, onReady);
      socket.off("error", onError);
      socket.off("close", onClose);
      signal.removeEventListener("abort", onAbort);
    };
    if (signal.aborted) return onAbort();
    socket.once("connect", onTcpConnect);
    socket.once(readyEvent, onReady);
    socket.once("error", onError);
    socket.once("close", onClose);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Bytes of a refused upgrade's answer kept for the error message (which shows 300 characters). */
const REFUSAL_BYTES_KEPT = 4096;

/**
 * Asks dockerd to hand over its Engine API socket to BuildKit's Control API:
 * `POST /grpc` with `Upgrade: h2c`, answered `101 Switching Protocols`; we
 * are then the HTTP/2 client on it.
 */
function upgradeToGrpc(socketPath: string, address: string, signal: AbortSignal): Promise<Duplex> {
  const path = "/grpc";
  return new Promise((resolve, reject) => {
    const request = http.request({
      socketPath,
      method: "POST",
      path,
      headers: { Connection: "Upgrade", Upgrade: "h2c" },
      agent: false,
    });
    const onAbort = () => {
      request.destroy();
      reject(abortError(signal, address));
    };
    const settle = () => signal.removeEventListener("abort", onAbort);
    request.on("upgrade", (response, socket, head) => {
      settle();
      if (response.statusCode !== 101) {
        socket.destroy();
        reject(new TransportError("UNAVAILABLE", address, `${address}: dockerd answered ${response.statusCode} to the ${path} upgrade`));
        return;
      }
      // `head` holds the first HTTP/2 bytes, sent along with the 101. Put
      // back, HTTP/2 reads them before the rest; the socket itself goes to
      // HTTP/2 (native writes, no JS stream in between).
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    request.on("response", (response) => {
      // The refusal is read within the attempt's bound (an answer that never
      // ends is a timeout, not a hang), and only its start is kept.
      const chunks: Buffer[] = [];
      let kept = 0;
      response.on("data", (chunk: Buffer) => {
        if (kept >= REFUSAL_BYTES_KEPT) return;
        chunks.push(chunk);
        kept += chunk.length;
      });
      response.on("end", () => {
        settle();
        const body = Buffer.concat(chunks).toString("utf8").trim().slice(0, 300);
        const code: ErrorCode = response.statusCode === 404 ? "UNIMPLEMENTED" : "UNAVAILABLE";
        reject(new TransportError(code, address, `${address}: dockerd does not offer BuildKit at ${path} (HTTP ${response.statusCode}${body ? `: ${body}` : ""})`));
      });
      response.on("error", (err) => {
        settle();
        reject(dialError(err, address, false));
      });
    });
    request.on("error", (err: NodeJS.ErrnoException) => {
      settle();
      reject(dialError(err, address, false));
    });
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    request.end();
  });
}

/** Why a connection attempt ended early: TIMEOUT for the connect timeout, else CANCELED. */
export function abortError(signal: AbortSignal, address: string): TransportError {
  const reason: unknown = signal.reason;
  if (reason instanceof DOMException && reason.name === "TimeoutError") {
    return new TransportError("TIMEOUT", address, `timed out connecting to ${address}`, { cause: reason });
  }
  return new TransportError("CANCELED", address, `connecting to ${address} was aborted`, { cause: reason });
}

/** Turns a socket error into a TransportError a person can act on. */
function dialError(err: NodeJS.ErrnoException, address: string, duringTlsHandshake: boolean): TransportError {
  if (err instanceof TransportError) return err;
  if (duringTlsHandshake || isTlsError(err)) {
    return new TransportError("TLS", address, `TLS handshake with ${address} failed: ${err.message}${hintFor(err)}`, { cause: err });
  }
  const why: Record<string, string> = {
    ENOENT: "no socket at that path",
    ECONNREFUSED: "connection refused",
    EACCES: "permission denied",
    ENOTSOCK: "not a socket",
    EHOSTUNREACH: "host unreachable",
    ENETUNREACH: "network unreachable",
    ETIMEDOUT: "timed out",
    ENOTFOUND: "host not found",
    EAI_AGAIN: "host name lookup failed",
  };
  const text = (err.code && why[err.code]) ?? err.message;
  return new TransportError("UNAVAILABLE", address, `cannot connect to ${address}: ${text}`, { cause: err });
}

/**
 * Whether `err` is TLS's own: an OpenSSL error (ERR_SSL_*, an alert from the
 * peer), Node's TLS checks (ERR_TLS_*), or a certificate verification code.
 * Read from the error's code and OpenSSL's library, never from words in the
 * message, which may quote a host or socket path ("tls-builder.internal").
 */
export function isTlsError(err: { code?: unknown; library?: unknown }): boolean {
  const code = typeof err.code === "string" ? err.code : "";
  return /^ERR_(SSL|TLS)_/.test(code) || /^[A-Z_]*(CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY))[A-Z_]*$/.test(code) || err.library === "SSL routines";
}

function hintFor(err: NodeJS.ErrnoException): string {
  if (err.code === "ECONNRESET" || /wrong version number|packet length too long/i.test(err.message)) {
    return " (is the server speaking plaintext?)";
  }
  return "";
}
