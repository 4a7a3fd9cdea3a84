// The README's error table, row by row: each code is produced by a real
// failure on each daemon (or, for a code only the Depot API or a broken
// Engine can produce, by the local Depot or a stand-in the row names), and
// the table lists exactly the codes the library has.
import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callError } from "../src/buildkit/call-error.js";
import { DockerEngine } from "../src/buildkit/docker-engine.js";
import { DepotClient } from "../src/depot/index.js";
import { AbortError, BuildError, BuildKitNodeError, type BuildKitClient, connect, type ErrorCode, TransportError } from "../src/index.js";
import { type LocalDepot, startBuildKitFront, startLocalDepot } from "../src/testing/index.js";
import { failureOf, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS, type BuildDaemon } from "./support/daemons.js";
import { AUTH_REGISTRY, BASE_IMAGE, uniqueRepository } from "./support/registry.js";

/** Every code of `ErrorCode`, as the type lists them. */
const ALL_CODES: ErrorCode[] = [
  "INVALID_ARGUMENT",
  "UNAVAILABLE",
  "TLS",
  "TIMEOUT",
  "CANCELED",
  "UNIMPLEMENTED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "UNAUTHENTICATED",
  "FAILED_PRECONDITION",
  "RESOURCE_EXHAUSTED",
  "BUILD_FAILED",
  "INTERNAL",
  "UNKNOWN",
];

/** The codes of the README's "## Errors" table, in order. */
function readmeCodes(): string[] {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const section = readme.slice(readme.indexOf("\n## Errors\n"), readme.indexOf("\n## ", readme.indexOf("\n## Errors\n") + 1));
  return [...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!);
}

async function errorOf(attempt: () => Promise<unknown> | unknown): Promise<unknown> {
  try {
    const value = attempt();
    await value;
  } catch (err) {
    return err;
  }
  return new Error("it succeeded");
}

async function listening(server: net.Server | http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

const dockerfile = (body: string) => ({ files: { Dockerfile: `FROM ${BASE_IMAGE}\n${body}\n` } });

interface Row {
  /** What the row's failure is, for the test name. */
  what: string;
  /** The class(es) of error the README names for it. */
  classes: (abstract new (...args: never[]) => Error)[];
  /** Produces the failure and returns it. */
  run(bk: BuildKitClient, daemon: BuildDaemon): Promise<unknown>;
  /** Whether the failure can exist on this daemon (default: yes); `why` says why not. */
  appliesTo?(daemon: BuildDaemon): boolean;
  why?: string;
}

let local: LocalDepot;
beforeAll(async () => {
  local = await startLocalDepot({ buildkit: BUILD_DAEMONS[0]!.address, pendingPolls: 0 });
});
afterAll(async () => {
  await local?.stop();
});

const depot = () => new DepotClient({ token: local.token, apiUrl: local.apiUrl });

const rows: Record<ErrorCode, Row> = {
  INVALID_ARGUMENT: {
    what: 'a build-arg name with "=" (thrown by build() itself)',
    classes: [BuildKitNodeError],
    run: (bk) => errorOf(() => bk.build({ context: dockerfile(""), buildArgs: { "A=B": "x" } })),
  },
  UNAVAILABLE: {
    what: "a push to a registry port nothing listens on",
    classes: [BuildError, BuildKitNodeError],
    run: async (bk) => {
      const server = net.createServer();
      const port = (await listening(server)).split(":").pop();
      server.close();
      return (await failureOf(bk.build({ context: dockerfile(`RUN echo ${Date.now()}`), outputs: [{ type: "image", name: `127.0.0.1:${port}/nobody/here:1`, push: true }] }))).error;
    },
  },
  TLS: {
    what: "a mutual-TLS front dialed without tls",
    classes: [TransportError],
    run: async (_bk, daemon) => {
      await using front = await startBuildKitFront({ ...daemon.backend, mtls: true });
      return await errorOf(() => connect(front.address));
    },
  },
  TIMEOUT: {
    what: "connectTimeoutMs passed (a server that accepts and says nothing)",
    classes: [TransportError],
    run: async () => {
      const sockets: net.Socket[] = [];
      const server = net.createServer((socket) => sockets.push(socket));
      const address = await listening(server);
      try {
        return await errorOf(() => connect(address, { connectTimeoutMs: 200 }));
      } finally {
        sockets.forEach((socket) => socket.destroy());
        server.close();
      }
    },
  },
  CANCELED: {
    what: "the caller's signal aborted mid-build",
    classes: [AbortError],
    run: async (bk) => {
      const controller = new AbortController();
      const run = bk.build({ context: dockerfile(`RUN echo started-${Date.now()} && sleep 30`), signal: controller.signal });
      (async () => {
        for await (const event of run.events) if (event.type === "log") controller.abort(new Error("the user changed their mind"));
      })();
      return errorOf(() => run);
    },
  },
  UNAUTHENTICATED: {
    what: "a push to the htpasswd registry without credentials",
    classes: [BuildError, BuildKitNodeError],
    run: async (bk) =>
      (
        await failureOf(
          bk.build({
            context: dockerfile(`RUN echo ${Date.now()}`),
            registryAuth: {},
            outputs: [{ type: "image", name: `${AUTH_REGISTRY}/${uniqueRepository("faults-noauth")}:1`, push: true }],
          }),
        )
      ).error,
  },
  PERMISSION_DENIED: {
    what: "the Depot API refusing a token (local Depot; the local registries cannot answer 403)",
    classes: [BuildKitNodeError],
    run: () => {
      local.faults.failNext("ListProjects", 1, "permission_denied");
      return errorOf(() => depot().projects.list());
    },
  },
  RESOURCE_EXHAUSTED: {
    what: "build args larger than a gRPC message may be (10 MB on dockerd, which takes 4 MiB; 17 MB on buildkitd, which takes 16 MiB)",
    classes: [BuildKitNodeError],
    run: async (bk, daemon) => {
      const size = daemon.embeddedInDocker ? 10_000_000 : 17 * 1024 * 1024;
      return (await failureOf(bk.build({ context: dockerfile(""), buildArgs: { BIG: "x".repeat(size) } }))).error;
    },
  },
  BUILD_FAILED: {
    what: "a RUN step exiting 3",
    classes: [BuildError],
    run: async (bk) => (await failureOf(bk.build({ context: dockerfile(`RUN echo ${Date.now()} && exit 3`) }))).error,
  },
  UNIMPLEMENTED: {
    what: "an OCI archive from dockerd's BuildKit",
    classes: [BuildKitNodeError],
    run: async (bk) => (await failureOf(bk.build({ context: dockerfile(""), outputs: [{ type: "oci", dest: "/dev/null" }] }))).error,
    appliesTo: (daemon) => daemon.embeddedInDocker,
    why: "buildkitd v0.24 has every call and exporter this library uses",
  },
  NOT_FOUND: {
    what: "the Depot API asked for an unknown project (local Depot)",
    classes: [BuildKitNodeError],
    run: () => errorOf(() => depot().projects.get("no-such-project")),
  },
  ALREADY_EXISTS: {
    what: 'a daemon answering "unknown … : already exists" (containerd\'s kind, kept); no real daemon call here produces it on demand',
    classes: [BuildKitNodeError],
    run: async () =>
      callError(new ConnectError("snapshot x: already exists", Code.Unknown, new Headers({ "grpc-status": "2" })), {
        what: "Prune on the daemon",
        address: "unix:///run/buildkit/buildkitd.sock",
        since: 0,
        loss: undefined,
      }),
  },
  FAILED_PRECONDITION: {
    what: "a build on a closed client",
    classes: [BuildKitNodeError],
    run: async (_bk, daemon) => {
      const closed = await connect(daemon.address, daemon.connectOptions);
      await closed.close();
      return errorOf(() => closed.build({ context: dockerfile("") }));
    },
  },
  INTERNAL: {
    what: "a Docker Engine whose push answer is not JSON (a stand-in Engine: a real one never sends that)",
    classes: [BuildKitNodeError],
    run: async () => {
      const dir = tempDir("fake-engine");
      const socket = join(dir.path, "engine.sock");
      const server = http.createServer((_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end("<html>not an engine</html>\n");
      });
      await new Promise<void>((resolve) => server.listen(socket, resolve));
      try {
        return await errorOf(() => new DockerEngine(socket).push("127.0.0.1:5000/x:1", undefined));
      } finally {
        server.close();
        dir.remove();
      }
    },
  },
  UNKNOWN: {
    what: "a daemon's UNKNOWN whose message gives no kind (only the mapping can be made to see one)",
    classes: [BuildKitNodeError],
    run: async () =>
      callError(new ConnectError("something odd happened", Code.Unknown, new Headers({ "grpc-status": "2" })), {
        what: "Prune on the daemon",
        address: "unix:///run/buildkit/buildkitd.sock",
        since: 0,
        loss: undefined,
      }),
  },
};

it("the README's error table lists every code the library has, each once", () => {
  expect([...readmeCodes()].sort()).toEqual([...ALL_CODES].sort());
  expect(Object.keys(rows).sort()).toEqual([...ALL_CODES].sort());
});

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
  });

  for (const [code, row] of Object.entries(rows)) {
    const applies = row.appliesTo?.(daemon) ?? true;
    (applies ? it : it.skip)(`${code}: ${applies ? row.what : `cannot happen here: ${row.why}`}`, async () => {
      const err = await row.run(bk, daemon);
      expect(err, String(err)).toBeInstanceOf(BuildKitNodeError);
      expect((err as BuildKitNodeError).code, (err as Error).message).toBe(code);
      expect(row.classes.some((type) => err instanceof type)).toBe(true);
    });
  }
});
