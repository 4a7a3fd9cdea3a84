// What a failed build says: BuildKit's structured error details (errdefs,
// decoded with our protobuf schema) name the Dockerfile, the failing line and
// its text, and the message reads as buildx prints it. dockerd 20.10's
// BuildKit (v0.8) sends no details: there only a parse error's line is known
// (from the parser's fixed wording) and the text comes from the client's copy.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { solveErrorDetails } from "../src/buildkit/solve-error.js";
import { SourceSchema, VertexSchema } from "../src/gen/errdefs/errdefs_pb.js";
import { BuildError, type BuildKitClient, connect } from "../src/index.js";
import { failureOf, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE } from "./support/registry.js";

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
  });

  async function buildError(dockerfile: string): Promise<BuildError> {
    const { error } = await failureOf(bk.build({ context: { files: {} }, dockerfileContent: dockerfile, noCache: true }));
    expect(error).toBeInstanceOf(BuildError);
    return error as BuildError;
  }

  it("a parse error names the file, the line and its text, in buildx's picture", async () => {
    const err = await buildError(`FROM ${BASE_IMAGE}\nCOPY only-one-argument\nRUN true\n`);
    expect(err.code).toBe("BUILD_FAILED");
    expect(err.source).toMatchObject({ file: "Dockerfile", line: 2, endLine: 2, text: "COPY only-one-argument" });
    expect(err.line).toBe(2);
    expect(err.exitCode).toBeUndefined();
    expect(err.message).toBe(
      [
        "Dockerfile:2",
        "--------------------",
        `   1 |     FROM ${BASE_IMAGE}`,
        "   2 | >>> COPY only-one-argument",
        "   3 |     RUN true",
        "   4 |",
        "--------------------",
        `build failed: ${err.daemonMessage}`,
      ].join("\n"),
    );
    expect(err.daemonMessage).toMatch(/COPY requires at least two arguments/);
    expect(err.source!.excerpt).toBe(err.message.split("\nbuild failed: ")[0]);
  });

  it("an unknown instruction in a named Dockerfile of a directory context", async () => {
    const ctx = tempDir("unknown-instruction");
    try {
      const lines = [`FROM ${BASE_IMAGE}`, "RUN echo one", "RUN echo two", "RUN echo three", "BOGUS instruction", "RUN echo five", "RUN echo six", "RUN echo seven"];
      writeFileSync(join(ctx.path, "build.Dockerfile"), `${lines.join("\n")}\n`);
      const { error } = await failureOf(bk.build({ context: ctx.path, dockerfile: "build.Dockerfile" }));
      const err = error as BuildError;
      expect(err).toBeInstanceOf(BuildError);
      expect(err.source).toMatchObject({ file: "build.Dockerfile", line: 5, text: "BOGUS instruction" });
      // Two lines of context each side, as buildx shows a single line.
      expect(err.source!.excerpt).toBe(
        [
          "build.Dockerfile:5",
          "--------------------",
          "   3 |     RUN echo two",
          "   4 |     RUN echo three",
          "   5 | >>> BOGUS instruction",
          "   6 |     RUN echo five",
          "   7 |     RUN echo six",
          "--------------------",
        ].join("\n"),
      );
      expect(err.message).toMatch(/\nbuild failed: .*unknown instruction: BOGUS$/);
    } finally {
      ctx.remove();
    }
  });

  it("a failing RUN has its exit code, its step and the end of its output", async () => {
    const err = await buildError(`FROM ${BASE_IMAGE}\nRUN echo first line && \\\n    echo "about to fail" >&2 && exit 3\nRUN true\n`);
    expect(err.exitCode).toBe(3);
    expect(err.step?.name).toMatch(/^\[2\/3\] RUN echo first line/);
    expect(err.logTail).toEqual(expect.arrayContaining(["first line", "about to fail"]));
    expect(err.message).toMatch(/build failed at "\[2\/3\] RUN echo first line.*exit code: 3\n(  > .*\n)*  > (about to fail|first line)$/);
    if (daemon.embeddedInDocker) {
      // BuildKit v0.8 in dockerd sends no source details for a step that ran.
      expect(err.source).toBeUndefined();
      expect(err.message.startsWith("build failed at ")).toBe(true);
      return;
    }
    // An instruction continued on a second line: both are marked.
    expect(err.source).toMatchObject({ file: "Dockerfile", line: 2, endLine: 3, text: 'RUN echo first line && \\\n    echo "about to fail" >&2 && exit 3' });
    expect(err.message.split("\n").slice(0, 7)).toEqual([
      "Dockerfile:2",
      "--------------------",
      `   1 |     FROM ${BASE_IMAGE}`,
      "   2 | >>> RUN echo first line && \\",
      '   3 | >>>     echo "about to fail" >&2 && exit 3',
      "   4 |     RUN true",
      "--------------------",
    ]);
  });

  it("a number a RUN step prints, or its command holds, is never taken for a Dockerfile line", async () => {
    const err = await buildError(
      `FROM ${BASE_IMAGE}\nRUN echo "error on line 42" && echo "dockerfile parse error line 43: no" && exit 4\n`,
    );
    expect(err.exitCode).toBe(4);
    expect(err.logTail).toContain("error on line 42");
    expect(err.daemonMessage).toContain("line 42");
    if (daemon.embeddedInDocker) {
      expect(err.line).toBeUndefined();
      expect(err.source).toBeUndefined();
    } else {
      expect(err.line).toBe(2);
      expect(err.source?.text).toMatch(/^RUN echo "error on line 42"/);
    }
    expect(err.line).not.toBe(42);
    expect(err.line).not.toBe(43);
  });
});

describe("errdefs details", () => {
  // BuildKit sends every detail as Go's JSON (`+json` type names; the tests
  // above decode those from the real daemons). A value without `+json` is
  // protobuf: no daemon sends one today, so these details are made here.
  it("decodes protobuf-encoded details and skips what it cannot read", () => {
    const source = create(SourceSchema, {
      info: { filename: "Dockerfile", data: new TextEncoder().encode("FROM scratch\nBOGUS\n"), language: "Dockerfile" },
      ranges: [{ start: { line: 2 }, end: { line: 2 } }],
    });
    const err = new ConnectError("dockerfile parse error on line 2: unknown instruction: BOGUS", Code.Unknown);
    // What connect-es makes of the grpc-status-details-bin trailer: { type, value } per Any.
    err.details = [
      { type: "errdefs.Source", value: toBinary(SourceSchema, source) },
      { type: "errdefs.Vertex", value: toBinary(VertexSchema, create(VertexSchema, { digest: "sha256:abc" })) },
      { type: "errdefs.Source+json", value: new TextEncoder().encode("{not json") },
      { type: "stack.Stack+json", value: new TextEncoder().encode('{"frames":[]}') },
    ];
    const details = solveErrorDetails(err);
    expect(details.sources).toHaveLength(1);
    expect(details.sources[0]!.info?.filename).toBe("Dockerfile");
    expect(details.sources[0]!.ranges[0]!.start?.line).toBe(2);
    expect(details.vertex).toBe("sha256:abc");
    expect(details.exitCode).toBeUndefined();
  });
});
