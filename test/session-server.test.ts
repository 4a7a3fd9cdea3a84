// The session's gRPC server, driven by an HTTP/2 client playing the daemon.
import { create, toBinary, fromBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { HealthCheckRequestSchema, HealthCheckResponseSchema } from "../src/gen/grpc/health/v1/health_pb.js";
import { GrpcCode, GrpcStatusError, metadataValue, type ServerCall, unary } from "../src/session/grpc-server.js";
import { type DaemonSide, startDaemonSide } from "./support/daemon-side.js";

let daemon: DaemonSide | undefined;
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
});

async function collect(iterable: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const m of iterable) out.push(m);
  return out;
}

describe("serveGrpc", () => {
  it("answers a unary call and keeps repeated metadata fields apart", async () => {
    let seen: readonly string[] | undefined;
    const routes = new Map([
      [
        "/grpc.health.v1.Health/Check",
        unary(HealthCheckRequestSchema, HealthCheckResponseSchema, async (_req, call) => {
          seen = call.metadata.get("exclude-patterns");
          return create(HealthCheckResponseSchema, { status: 1 });
        }),
      ],
    ]);
    daemon = await startDaemonSide(routes);
    const call = daemon.call("/grpc.health.v1.Health/Check", { "exclude-patterns": ["a, b", "c"] });
    call.send(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema)));
    call.end();
    const [reply] = await collect(call.messages);
    expect(fromBinary(HealthCheckResponseSchema, reply!).status).toBe(1);
    expect(await call.status).toEqual({ code: 0, message: "" });
    expect(seen).toEqual(["a, b", "c"]);
  });

  it("answers an unknown method UNIMPLEMENTED", async () => {
    daemon = await startDaemonSide(new Map());
    const call = daemon.call("/nope.Service/Method");
    call.end();
    expect((await call.status).code).toBe(GrpcCode.UNIMPLEMENTED);
  });

  it("ends a call with the status a handler throws, message intact", async () => {
    daemon = await startDaemonSide(
      new Map([["/x.Y/Z", async () => { throw new GrpcStatusError(GrpcCode.NOT_FOUND, "no secret “npmrc”, 100%"); }]]),
    );
    const call = daemon.call("/x.Y/Z");
    call.end();
    expect(await call.status).toEqual({ code: GrpcCode.NOT_FOUND, message: "no secret “npmrc”, 100%" });
  });

  it("streams both ways and aborts the handler's signal when the daemon cancels", async () => {
    let aborted: Promise<void> | undefined;
    const handler = async (call: ServerCall) => {
      aborted = new Promise((resolve) => call.signal.addEventListener("abort", () => resolve()));
      expect(metadataValue(call, "dir-name")).toBe("context");
      for await (const message of call.messages()) await call.send(message); // echo
    };
    daemon = await startDaemonSide(new Map([["/x.Y/Echo", handler]]));
    const call = daemon.call("/x.Y/Echo", { "dir-name": "context" });
    const big = new Uint8Array(1024 * 1024).fill(7);
    call.send(new Uint8Array([1, 2, 3]));
    call.send(big);
    const iterator = call.messages[Symbol.asyncIterator]();
    expect([...((await iterator.next()).value as Uint8Array)]).toEqual([1, 2, 3]);
    expect(((await iterator.next()).value as Uint8Array).length).toBe(big.length);
    call.cancel();
    await aborted;
  });
});
