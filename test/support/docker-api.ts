// The local Docker Engine's API, for tests that look at what a build left in
// dockerd (images loaded, tags) and clean it up.
import { request } from "node:http";

/** One call to the local Docker Engine API. */
export function dockerApi(method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: "/var/run/docker.sock", method, path }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}
