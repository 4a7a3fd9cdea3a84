import type { Client } from "@connectrpc/connect";
import { Duplex, PassThrough, Readable } from "node:stream";
import type { Control } from "../gen/moby/buildkit/v1/control_pb.js";

export interface SessionTunnel {
  /** The byte stream the session's HTTP/2 server runs on. */
  readonly connection: Duplex;
  /** Settles when the daemon ends the Session call (rejects on failure). */
  readonly closed: Promise<void>;
}

/**
 * Opens `Control.Session` and exposes it as a byte stream: each
 * BytesMessage is an arbitrary slice of the daemon's HTTP/2 connection, in
 * either direction. Ending the stream's writable side half-closes the call,
 * which is how a session is ended once the solve is done.
 */
export function openSessionTunnel(
  control: Client<typeof Control>,
  headers: Record<string, string | string[]>,
  signal: AbortSignal,
): SessionTunnel {
  const outgoing = new PassThrough();
  async function* requests() {
    // A read drains everything buffered, so small HTTP/2 frames share a message.
    for await (const chunk of outgoing as AsyncIterable<Buffer>) yield { data: chunk };
  }
  const callHeaders = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) callHeaders.append(name, v);
  }
  const responses = control.session(requests(), { headers: callHeaders, signal })[Symbol.asyncIterator]();
  // The call starts now; if it fails before the session server reads (a
  // solve refused at once), its failure must still have a reader.
  const first = responses.next();
  first.catch(() => {});

  let settle!: { resolve: () => void; reject: (err: unknown) => void };
  const closed = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  closed.catch(() => {}); // observed by the build; never an unhandled rejection
  const incoming = Readable.from(
    (async function* () {
      try {
        for (let next = await first; !next.done; next = await responses.next()) yield next.value.data;
        settle.resolve();
      } catch (err) {
        settle.reject(err);
        throw err;
      }
    })(),
    { objectMode: false },
  );
  const connection = Duplex.from({ readable: incoming, writable: outgoing });
  return { connection, closed };
}
