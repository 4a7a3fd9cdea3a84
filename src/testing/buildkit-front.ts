import { lstatSync, rmSync } from "node:fs";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { createLogger } from "../log.js";
import { parseAddress } from "../transport/address.js";
import { dial } from "../transport/dial.js";
import { tlsSettingsFor } from "../transport/tls-context.js";
import type { TlsOptions } from "../transport/tls-options.js";
import { type CertificateAuthority, createCertificateAuthority } from "./certificates.js";
import { listenOnLoopback } from "./loopback-server.js";

const log = createLogger("front");

export const DEFAULT_FRONT_SERVER_NAME = "buildkit.front.test";

export interface BuildKitFrontOptions {
  /** The BuildKit behind the front: `docker://`, `unix:///…` or `tcp://…`. */
  buildkit: string;
  /** TLS for a `tcp://` BuildKit behind the front. */
  buildkitTls?: TlsOptions;
  /** Listen on this unix socket path instead of 127.0.0.1 (no TLS). */
  unixSocket?: string;
  /**
   * Terminate mutual TLS on 127.0.0.1: the front presents a certificate for
   * `serverName` (deliberately not its address, as Depot's machines do) and
   * requires a client certificate from `authority` (a new CA by default).
   */
  mtls?: boolean | { serverName?: string; authority?: CertificateAuthority };
}

export interface BuildKitFront extends AsyncDisposable {
  /** Where clients connect: `tcp://127.0.0.1:<port>` or `unix:///<path>`. */
  readonly address: string;
  /** With `mtls`: what a client needs, ready for `connect(address, { tls })`. */
  readonly tls?: Required<Pick<TlsOptions, "ca" | "cert" | "key" | "serverName">>;
  /** With `mtls`: the CA the front trusts, to issue more client certificates. */
  readonly authority?: CertificateAuthority;
  /** Connections accepted so far (after the TLS handshake, with `mtls`). */
  readonly connections: number;
  /** Client connections open now. */
  readonly active: number;
  /** Closes the listener and every connection through it. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a byte-level front for a BuildKit daemon: every accepted connection
 * is relayed to a fresh connection to `buildkit` (for dockerd, a socket
 * upgraded on `POST /grpc`). With `mtls` it terminates mutual TLS in Node, so
 * the `tcp://` + mTLS path can be exercised against any real BuildKit, the
 * one inside dockerd included; with `unixSocket` it serves a plain socket as
 * buildkitd's own would be.
 */
export async function startBuildKitFront(options: BuildKitFrontOptions): Promise<BuildKitFront> {
  const backend = parseAddress(options.buildkit);
  const backendTls = options.buildkitTls ? tlsSettingsFor(options.buildkitTls, options.buildkit) : undefined;
  const open = new Set<Duplex>();
  const clients = new Set<net.Socket>();
  let accepted = 0;

  const relay = (client: net.Socket) => {
    accepted++;
    open.add(client);
    clients.add(client);
    client.on("close", () => {
      open.delete(client);
      clients.delete(client);
    });
    client.on("error", (err) => log(`client connection: ${err.message}`));
    dial(backend, options.buildkit, backendTls, AbortSignal.timeout(30_000)).then(
      (upstream) => {
        if (client.destroyed) return upstream.destroy();
        open.add(upstream);
        const closeBoth = () => {
          client.destroy();
          upstream.destroy();
        };
        upstream.on("close", () => {
          open.delete(upstream);
          closeBoth();
        });
        upstream.on("error", (err) => log(`upstream connection: ${err.message}`));
        client.on("close", closeBoth);
        client.pipe(upstream);
        upstream.pipe(client);
      },
      (err: Error) => {
        log(`cannot reach ${options.buildkit}: ${err.message}`);
        client.destroy();
      },
    );
  };

  let server: net.Server;
  let credentials: BuildKitFront["tls"];
  let authority: CertificateAuthority | undefined;
  if (options.mtls) {
    const settings = typeof options.mtls === "object" ? options.mtls : {};
    const serverName = settings.serverName ?? DEFAULT_FRONT_SERVER_NAME;
    authority = settings.authority ?? createCertificateAuthority({ commonName: "buildkit-node test CA" });
    const serverCert = authority.issue({ commonName: serverName, dnsNames: [serverName], usage: "server" });
    const clientCert = authority.issue({ commonName: "buildkit-node test client", usage: "client" });
    credentials = { ca: authority.cert, cert: clientCert.cert, key: clientCert.key, serverName };
    server = tls.createServer(
      { ca: authority.cert, cert: serverCert.cert, key: serverCert.key, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ["h2"] },
      relay,
    );
    server.on("tlsClientError", (err) => log(`refused a TLS client: ${err.message}`));
  } else {
    server = net.createServer(relay);
  }

  const address = await listen(server, options.unixSocket);
  log(`front at ${address} for ${options.buildkit}`);

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= new Promise<void>((resolve) => {
      for (const socket of open) socket.destroy();
      server.close(() => {
        if (options.unixSocket) removeStaleSocket(options.unixSocket);
        resolve();
      });
    }));

  return {
    address,
    ...(credentials ? { tls: credentials } : {}),
    ...(authority ? { authority } : {}),
    get connections() {
      return accepted;
    },
    get active() {
      return clients.size;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

async function listen(server: net.Server, unixSocket: string | undefined): Promise<string> {
  if (!unixSocket) return `tcp://127.0.0.1:${await listenOnLoopback(server, 0, "a BuildKit front")}`;
  removeStaleSocket(unixSocket);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(unixSocket, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return `unix://${unixSocket}`;
}

/** Removes a socket left by an earlier run, and nothing that is not a socket. */
function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) rmSync(path);
  } catch {
    // absent: nothing to remove
  }
}
