// What every server of buildkit-node/testing does with its port: listen on
// 127.0.0.1 with a refusal the user can act on, and on close end the
// connections it holds open as well as the listener.
import type * as net from "node:net";
import { BuildKitNodeError } from "../errors.js";
import type { Logger } from "../log.js";

/**
 * Listens on 127.0.0.1:`port` (0: any free port) and resolves with the port
 * listened on; a refusal rejects as `listenError` says. `what` names the server.
 */
export function listenOnLoopback(server: net.Server, port: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const refused = (err: Error) => reject(listenError(err, what, port));
    server.once("error", refused);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", refused);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/**
 * Why a server of buildkit-node/testing cannot listen on 127.0.0.1:`port`, as a user can
 * act on it: the port is taken (ALREADY_EXISTS), or below 1024 without the
 * right to it (PERMISSION_DENIED). `what` names the server.
 */
export function listenError(err: Error, what: string, port: number): BuildKitNodeError {
  const errno = (err as NodeJS.ErrnoException).code;
  const where = `${what} cannot listen on 127.0.0.1:${port}`;
  if (errno === "EADDRINUSE") return new BuildKitNodeError("ALREADY_EXISTS", `${where}: the port is in use`, { cause: err });
  if (errno === "EACCES" && port < 1024) {
    return new BuildKitNodeError("PERMISSION_DENIED", `${where}: a port below 1024 needs root (or CAP_NET_BIND_SERVICE)`, { cause: err });
  }
  return BuildKitNodeError.from(err, where);
}

export interface OpenConnections {
  /** Keeps a socket the server did not accept (e.g. one it dialled), to end it on close too. */
  track(socket: net.Socket): void;
  /** Stops accepting and destroys every open connection. Idempotent. */
  close(): Promise<void>;
}

/** Keeps each connection `server` accepts (logging its errors) until it closes. */
export function openConnections(server: net.Server, log: Logger): OpenConnections {
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", (err) => log(`connection: ${err.message}`));
  };
  server.on("connection", track);
  let closing: Promise<void> | undefined;
  return {
    track,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      })),
  };
}
