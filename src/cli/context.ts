/** What a command runs with: the process's streams and environment, or a test's. */
export interface CliContext {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  /** Progress, messages and errors. */
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number; rows?: number };
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Aborted on SIGINT/SIGTERM, with an `Interrupted` reason. */
  signal: AbortSignal;
}
