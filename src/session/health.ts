import { create } from "@bufbuild/protobuf";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
  Health,
} from "../gen/grpc/health/v1/health_pb.js";
import type { Attachable } from "./attachable.js";
import { unary } from "./grpc-server.js";

/**
 * `grpc.health.v1.Health/Check`, answered at once. The daemon checks it
 * every second (BuildKit v0.8) to every five, and a late answer ends the
 * build, so nothing here may wait on anything.
 */
export function healthAttachable(): Attachable {
  const serving = create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING });
  return {
    routes: new Map([[`/${Health.typeName}/Check`, unary(HealthCheckRequestSchema, HealthCheckResponseSchema, async () => serving)]]),
  };
}
