// An HTTP front before a real registry: it forwards every request as it is
// and records what went through (method, path, query, status), so a test can
// see how a copy moved its blobs (mounted, uploaded, skipped). A test may
// also make it answer some requests itself (`fault`): a 5xx or a 403 no
// local registry would give — the test then says that this is a fake.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export interface SeenRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  status: number;
  /** Whether the request carried an Authorization header (never its value). */
  authorized: boolean;
}

/** A response the front gives instead of forwarding. */
export interface Fault {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}

export interface RecordingFront {
  /** `127.0.0.1:<port>`: a loopback registry host for image names. */
  host: string;
  readonly seen: SeenRequest[];
  /** Answers requests itself while it returns a fault. */
  fault: ((request: { method: string; path: string; query: URLSearchParams }) => Fault | undefined) | undefined;
  /** Points the registry's `Location` headers at this host instead (as a registry sending uploads to storage would). */
  locationHost: string | undefined;
  /** Forwards a request to another path + query than it was sent to, while it returns one. */
  rewrite: ((request: { method: string; path: string; query: URLSearchParams }) => string | undefined) | undefined;
  /** Requests that touched blobs, for short assertions: `POST mount`, `PUT upload`, `HEAD blob`, … */
  blobTraffic(): string[];
  close(): Promise<void>;
}

export async function startRecordingFront(target: string): Promise<RecordingFront> {
  const [targetHost, targetPort] = target.split(":");
  const seen: SeenRequest[] = [];
  const front: RecordingFront = {
    host: "",
    seen,
    fault: undefined,
    rewrite: undefined,
    locationHost: undefined,
    blobTraffic: () =>
      seen.flatMap(({ method, path, query }) => {
        if (!path.includes("/blobs/")) return [];
        if (path.includes("/blobs/uploads/")) return [method === "POST" && query.has("mount") ? "POST mount" : `${method} upload`];
        return [`${method} blob`];
      }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://front");
    const record = (status: number) =>
      seen.push({ method: req.method ?? "", path: url.pathname, query: url.searchParams, status, authorized: req.headers.authorization !== undefined });
    const fault = front.fault?.({ method: req.method ?? "", path: url.pathname, query: url.searchParams });
    if (fault) {
      req.resume();
      record(fault.status);
      res.writeHead(fault.status, { "Content-Type": "application/json", ...fault.headers });
      res.end(fault.body ?? "");
      return;
    }
    const path = front.rewrite?.({ method: req.method ?? "", path: url.pathname, query: url.searchParams }) ?? req.url;
    const upstream = http.request(
      { host: targetHost, port: Number(targetPort), method: req.method, path, headers: req.headers },
      (answer) => {
        record(answer.statusCode ?? 0);
        const headers = { ...answer.headers };
        if (front.locationHost && headers.location) headers.location = headers.location.replace(/^http:\/\/[^/]+/, `http://${front.locationHost}`);
        res.writeHead(answer.statusCode ?? 502, headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", (err) => {
      record(502);
      res.destroy(err);
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  front.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return front;
}
