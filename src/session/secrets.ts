import { accessSync, constants, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { BuildKitNodeError } from "../errors.js";
import { GetSecretRequestSchema, GetSecretResponseSchema, Secrets } from "../gen/moby/buildkit/secrets/v1/secrets_pb.js";
import { createLogger } from "../log.js";
import type { Attachable } from "./attachable.js";
import { GrpcCode, GrpcStatusError, unary } from "./grpc-server.js";
import { errnoCode } from "./errno-code.js";
import { expandHome } from "./home-path.js";

const log = createLogger("secrets");

/**
 * Where a build secret's bytes come from: a file (`~` expands to the home
 * directory), an environment variable, or a value in memory. Files and
 * variables are read when the daemon asks, not before.
 */
export type SecretSource = { file: string } | { env: string } | { value: string | Uint8Array };

/**
 * `moby.buildkit.secrets.v1.Secrets/GetSecret` for `RUN --mount=type=secret`.
 * An unknown id, a missing file or an unset variable is answered NOT_FOUND
 * (the daemon fails the build unless the mount says `required=false`). No
 * answer, error or log line carries a secret's bytes.
 */
export function secretsAttachable(secrets: Record<string, SecretSource>): Attachable {
  // A Map of own entries: an id such as "constructor" must not find Object.prototype's.
  const sources = new Map(Object.entries(secrets));
  return {
    routes: new Map([
      [
        `/${Secrets.typeName}/GetSecret`,
        unary(GetSecretRequestSchema, GetSecretResponseSchema, async (request) =>
          create(GetSecretResponseSchema, { data: await readSecret(request.id, sources.get(request.id)) }),
        ),
      ],
    ]),
  };
}

/**
 * Checks every source before a build starts: files exist and are readable,
 * variables are set. Throws BuildKitNodeError INVALID_ARGUMENT naming the id
 * and the kind of source, never a value.
 */
export function validateSecrets(secrets: Record<string, SecretSource>): void {
  for (const [id, given] of Object.entries(secrets)) {
    const invalid = (what: string) => new BuildKitNodeError("INVALID_ARGUMENT", `secret "${id}": ${what}`);
    if (id === "") throw invalid("the id is empty");
    const source = classify(given);
    if (!source) throw invalid(sourceShape);
    if (source.kind === "file") {
      let isDirectory: boolean;
      try {
        isDirectory = statSync(source.path).isDirectory();
        accessSync(source.path, constants.R_OK);
      } catch (err) {
        throw invalid(`file ${source.path} cannot be read (${errnoCode(err) ?? "unknown error"})`);
      }
      if (isDirectory) throw invalid(`file ${source.path} is a directory`);
    } else if (source.kind === "env" && process.env[source.name] === undefined) {
      throw invalid(`environment variable ${source.name} is not set`);
    }
  }
}

const sourceShape = "the source must be { file: string }, { env: string } or { value: string | Uint8Array }";

async function readSecret(id: string, given: SecretSource | undefined): Promise<Uint8Array> {
  const notFound = (what: string) => new GrpcStatusError(GrpcCode.NOT_FOUND, `secret "${id}": ${what}`);
  if (given === undefined) throw notFound("no such secret in this build");
  const source = classify(given);
  if (!source) throw new GrpcStatusError(GrpcCode.INVALID_ARGUMENT, `secret "${id}": ${sourceShape}`);
  switch (source.kind) {
    case "file": {
      let data: Buffer;
      try {
        data = await readFile(source.path);
      } catch (err) {
        throw notFound(`file ${source.path} cannot be read (${errnoCode(err) ?? "unknown error"})`);
      }
      log(`secret ${id} from file ${source.path}`);
      return data;
    }
    case "env": {
      const value = process.env[source.name];
      if (value === undefined) throw notFound(`environment variable ${source.name} is not set`);
      log(`secret ${id} from environment variable ${source.name}`);
      return Buffer.from(value, "utf8");
    }
    case "value":
      log(`secret ${id} from a value`);
      return typeof source.value === "string" ? Buffer.from(source.value, "utf8") : source.value;
  }
}

type ClassifiedSource = { kind: "file"; path: string } | { kind: "env"; name: string } | { kind: "value"; value: string | Uint8Array };

/** What a source is, checked at run time: callers may pass plain JavaScript. */
function classify(source: unknown): ClassifiedSource | undefined {
  if (typeof source !== "object" || source === null) return undefined;
  if ("file" in source && typeof source.file === "string") return { kind: "file", path: expandHome(source.file) };
  if ("env" in source && typeof source.env === "string") return { kind: "env", name: source.env };
  if ("value" in source && (typeof source.value === "string" || source.value instanceof Uint8Array)) return { kind: "value", value: source.value };
  return undefined;
}
