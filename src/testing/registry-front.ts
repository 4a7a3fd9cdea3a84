/**
 * An HTTP front for a real OCI registry (the Distribution API), on one port of
 * 127.0.0.1 that speaks plain HTTP and HTTPS alike: each connection is sorted
 * by its first byte (a TLS handshake starts with 0x16). BuildKit pushes to a
 * loopback registry over plain HTTP, dockerd tries HTTPS first, and Go clients
 * such as the `depot` CLI insist on HTTPS, so one address serves all of them.
 * Every request may be checked (`authorize`) and watched (`observe`) before it
 * is relayed to the registry; bodies stream both ways.
 */
import * as http from "node:http";
import * as net from "node:net";
import * as tls from "node:tls";
import { BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import { type CertificateAuthority, createCertificateAuthority } from "./certificates.js";
import { listenOnLoopback, openConnections } from "./loopback-server.js";
import { replaying } from "./replaying-socket.js";

const log = createLogger("registry-front");
const TLS_HANDSHAKE = 0x16;

/** A request as the front sees it, with the repository and object it names. */
export interface RegistryRequest {
  method: string;
  /** The path and query, e.g. "/v2/acme/app/manifests/1". */
  url: string;
  headers: http.IncomingHttpHeaders;
  /** What the path names; undefined for `/v2/` and anything not a repository call. */
  target?: RegistryTarget;
  /** Whether the client came over TLS. */
  secure: boolean;
}

export interface RegistryTarget {
  repository: string;
  kind: "manifests" | "blobs" | "tags";
  /** A tag or digest for manifests, a digest or "uploads/…" for blobs. */
  reference: string;
}

/** `ok`: relay it (with `upstreamAuthorization` replacing the client's Authorization, if given); otherwise answer with `status`. */
export type AccessDecision =
  | { ok: true; upstreamAuthorization?: string | undefined }
  | { ok: false; status: 401 | 403 | 404; code: string; message: string };

export interface RegistryFrontOptions {
  /** The registry behind the front, `host:port`, spoken to over plain HTTP. */
  registry: string;
  /** Checked before every request; default: everything passes, the client's Authorization with it. */
  authorize?: (request: RegistryRequest) => AccessDecision;
  /** Called with each answered request and the registry's status and headers. */
  observe?: (request: RegistryRequest, status: number, headers: http.IncomingHttpHeaders) => void;
  /** Issues the HTTPS certificate (for 127.0.0.1 and `dnsNames`); a new CA by default. */
  authority?: CertificateAuthority;
  /** More names the HTTPS certificate carries. */
  dnsNames?: string[];
  /** The realm in `WWW-Authenticate: Basic` challenges (default "registry-front"). */
  realm?: string;
  /** Default 0 (any free port). A port in use: ALREADY_EXISTS; below 1024 without root: PERMISSION_DENIED. */
  port?: number;
}

export interface RegistryFront extends AsyncDisposable {
  /** `127.0.0.1:<port>`, as image references name it. */
  readonly host: string;
  /** The CA that issued the HTTPS certificate (PEM). */
  readonly caCertificate: string;
  /** Closes the port and every connection. Idempotent. */
  stop(): Promise<void>;
}

export async function startRegistryFront(options: RegistryFrontOptions): Promise<RegistryFront> {
  const upstream = upstreamAddress(options.registry);
  const authority = options.authority ?? createCertificateAuthority({ commonName: "buildkit-node registry front CA" });
  const leaf = authority.issue({ commonName: "127.0.0.1", ipAddresses: ["127.0.0.1"], dnsNames: options.dnsNames ?? [], usage: "server" });
  const secureContext = tls.createSecureContext({ cert: leaf.cert, key: leaf.key });
  const realm = options.realm ?? "registry-front";

  const handle = (secure: boolean) => (req: http.IncomingMessage, res: http.ServerResponse) => {
    const request: RegistryRequest = { method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers, secure };
    const target = parseTarget(request.url);
    if (target) request.target = target;
    const decision = options.authorize?.(request) ?? { ok: true as const, upstreamAuthorization: req.headers.authorization };
    if (!decision.ok) {
      req.resume();
      const headers: http.OutgoingHttpHeaders = { "content-type": "application/json" };
      if (decision.status === 401) headers["www-authenticate"] = `Basic realm="${realm}"`;
      res.writeHead(decision.status, headers).end(JSON.stringify({ errors: [{ code: decision.code, message: decision.message }] }));
      return;
    }
    relay(req, res, request, decision.upstreamAuthorization);
  };

  const relay = (req: http.IncomingMessage, res: http.ServerResponse, request: RegistryRequest, authorization: string | undefined) => {
    const headers: http.OutgoingHttpHeaders = { ...req.headers, "x-forwarded-proto": request.secure ? "https" : "http" };
    delete headers.authorization;
    if (authorization) headers.authorization = authorization;
    const outgoing = http.request({ ...upstream, method: request.method, path: request.url, headers }, (answer) => {
      options.observe?.(request, answer.statusCode ?? 0, answer.headers);
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
      answer.on("error", () => res.destroy());
    });
    outgoing.on("error", (err) => {
      log(`${options.registry}: ${err.message}`);
      if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: `the registry behind the front is unreachable` }] }));
    });
    req.pipe(outgoing);
    req.on("error", () => outgoing.destroy());
    res.on("close", () => {
      if (!res.writableFinished) outgoing.destroy();
    });
  };

  const plain = http.createServer(handle(false));
  const secure = http.createServer(handle(true));
  const server = net.createServer((socket) => {
    socket.once("data", (head: Buffer) => {
      socket.pause();
      if (head[0] === TLS_HANDSHAKE) {
        const encrypted = new tls.TLSSocket(replaying(socket, head), { isServer: true, secureContext });
        encrypted.on("error", (err) => log(`TLS: ${err.message}`));
        secure.emit("connection", encrypted);
      } else {
        // http's parser reads a net.Socket's JS buffer first, so the bytes can go back in.
        socket.unshift(head);
        plain.emit("connection", socket);
        socket.resume();
      }
    });
  });
  const { close: stop } = openConnections(server, log);
  const host = `127.0.0.1:${await listenOnLoopback(server, options.port ?? 0, "a registry front")}`;
  log(`registry front at ${host} for ${options.registry}`);
  return { host, caCertificate: authority.cert, stop, [Symbol.asyncDispose]: stop };
}

/**
 * `/v2/<repository>/(manifests|blobs|tags)/<reference>`; repository names may hold slashes.
 * A reference with a malformed %-escape names nothing (decoding it would throw in the
 * request handler and end the process).
 */
function parseTarget(url: string): RegistryTarget | undefined {
  const path = url.split("?")[0]!;
  const match = /^\/v2\/(.+?)\/(manifests|blobs|tags)\/(.+)$/.exec(path);
  if (!match) return undefined;
  let reference: string;
  try {
    reference = decodeURIComponent(match[3]!);
  } catch {
    return undefined;
  }
  return { repository: match[1]!, kind: match[2] as RegistryTarget["kind"], reference };
}

function upstreamAddress(registry: string): { host: string; port: number } {
  const match = /^(\[[^\]]+\]|[^:/]+)(?::(\d+))?$/.exec(registry);
  if (!match) throw new BuildKitNodeError("INVALID_ARGUMENT", `a registry is host or host:port, got ${JSON.stringify(registry)}`);
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port: match[2] ? Number(match[2]) : 80 };
}
