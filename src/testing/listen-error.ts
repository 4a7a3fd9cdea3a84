import { BuildKitNodeError } from "../errors.js";

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
