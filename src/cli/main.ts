// The `buildkit-node` command: process glue around runCli(). SIGINT or
// SIGTERM aborts what runs through its AbortSignal and the command exits
// once that has settled (130 or 143); a second signal exits at once.
import { runCli } from "./cli.js";
import type { CliContext } from "./context.js";
import { Interrupted } from "./errors.js";

/** After the command finished, a handle still open must not keep the process alive longer than this. */
const EXIT_GRACE_MS = 2_000;

const controller = new AbortController();
const onSignal = (signal: NodeJS.Signals) => {
  if (controller.signal.aborted) {
    process.exit((controller.signal.reason as Interrupted).exitCode);
  }
  controller.abort(new Interrupted(signal));
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

// A closed pipe (`buildkit-node du | head`) is no reason for a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
  });
}

const ctx: CliContext = {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  signal: controller.signal,
};

runCli(process.argv.slice(2), ctx).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(), EXIT_GRACE_MS).unref();
  },
  (err: unknown) => {
    process.stderr.write(`ERROR: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
