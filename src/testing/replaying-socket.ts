// Servers that sort a connection by its first bytes (h2c or HTTP/1.1, TLS or
// plain) must hand those bytes on. HTTP/2 and TLS read a net.Socket's handle
// directly and would never see bytes put back with `unshift`; any other
// Duplex they read as a stream.
import type * as net from "node:net";
import { Duplex } from "node:stream";

/** The socket as a Duplex that yields `head` first. */
export function replaying(socket: net.Socket, head: Buffer): Duplex {
  const duplex = new Duplex({
    read: () => void socket.resume(),
    write: (chunk: Buffer, _encoding, callback) => void socket.write(chunk, callback),
    final: (callback) => void socket.end(callback),
    destroy: (err, callback) => {
      socket.destroy();
      callback(err);
    },
  });
  duplex.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("close", () => duplex.destroy());
  return duplex;
}
