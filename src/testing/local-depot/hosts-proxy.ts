// The `depot` CLI reaches one Depot host its API URL does not cover:
// `https://blob.depot.dev`, which copies blobs for `depot push`. Pointed at
// this proxy (HTTPS_PROXY) and trusting the local Depot's CA (SSL_CERT_FILE),
// the CLI's CONNECT to that host is answered here, over TLS, by the local
// Depot; a CONNECT to any other host is tunnelled on unchanged, so the CLI's
// other traffic goes where it always goes. (Go never proxies loopback
// addresses, so the API and local registries are reached directly.)
import * as http from "node:http";
import * as net from "node:net";
import * as tls from "node:tls";
import type { Logger } from "../../log.js";
import type { CertificateAuthority } from "../certificates.js";
import { listenOnLoopback, openConnections } from "../loopback-server.js";
import { replaying } from "../replaying-socket.js";

export const BLOB_HOST = "blob.depot.dev";

export interface HostsProxy {
  /** `http://127.0.0.1:<port>`, for HTTPS_PROXY. */
  readonly url: string;
  close(): Promise<void>;
}

/** Serves `hosts` (name → request handler) over TLS behind CONNECT; tunnels everything else. */
export async function startHostsProxy(
  hosts: ReadonlyMap<string, http.RequestListener>,
  authority: CertificateAuthority,
  log: Logger,
): Promise<HostsProxy> {
  const servers = new Map<string, { http: http.Server; context: tls.SecureContext }>();
  for (const [name, handler] of hosts) {
    const leaf = authority.issue({ commonName: name, dnsNames: [name], usage: "server" });
    servers.set(name, { http: http.createServer(handler), context: tls.createSecureContext({ cert: leaf.cert, key: leaf.key }) });
  }
  const proxy = http.createServer((_req, res) => res.writeHead(405, { allow: "CONNECT" }).end("only CONNECT is served\n"));
  const connections = openConnections(proxy, log);
  proxy.on("connect", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const [name = "", portText = "443"] = (req.url ?? "").split(/:(?=\d+$)/);
    const served = servers.get(name);
    if (served && portText === "443") {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      const encrypted = new tls.TLSSocket(head.length > 0 ? replaying(socket, head) : socket, { isServer: true, secureContext: served.context });
      encrypted.on("error", (err) => log(`${name}: ${err.message}`));
      served.http.emit("connection", encrypted);
      return;
    }
    const upstream = net.connect(Number(portText), name, () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    connections.track(upstream);
    upstream.on("error", () => socket.end("HTTP/1.1 502 Bad Gateway\r\n\r\n"));
    socket.on("close", () => upstream.destroy());
  });

  const port = await listenOnLoopback(proxy, 0, "the local Depot's HTTPS proxy");
  return { url: `http://127.0.0.1:${port}`, close: connections.close };
}
