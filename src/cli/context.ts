import type { Readable, Writable } from "node:stream";

/** What a command runs with: the process's streams and environment, or a test's. */
export interface CliContext {
  stdin: Readable & { isTTY?: boolean };
  /** Command output, and archives written with `dest=-`. */
  stdout: Writable & { isTTY?: boolean };
  /** Progress, messages and errors. */
  stderr: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Aborted on SIGINT/SIGTERM, with an `Interrupted` reason. */
  signal: AbortSignal;
}
