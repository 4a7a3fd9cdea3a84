// Runs the `buildkit-node` command as a child process, the way users run it:
// `node bin/buildkit-node.js`, which imports the dist/ that the global setup
// (test/support/global-setup.ts) built once before any test file ran.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { BuildDaemon } from "./support/daemons.js";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "buildkit-node.js");

/** The path of `bin/buildkit-node.js`, once the build it runs is there. */
export async function cliBinary(): Promise<string> {
  if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) {
    throw new Error("dist/cli/main.js is missing: the tests' global setup builds dist/ (run the tests through vitest)");
  }
  return BIN;
}

/** The environment of a CLI run: this one, minus what would change the command's choices. */
export function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ["CI", "NO_COLOR", "BUILDKIT_PROGRESS", "BUILDKIT_HOST", "FORCE_COLOR", "DEBUG"]) delete env[name];
  for (const name of Object.keys(env)) if (name.startsWith("BUILDKIT_TLS_")) delete env[name];
  for (const [name, value] of Object.entries(extra)) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return env;
}

const TLS_FLAGS: [flag: string, variable: string][] = [
  ["--tlscacert", "BUILDKIT_TLS_CA"],
  ["--tlscert", "BUILDKIT_TLS_CERT"],
  ["--tlskey", "BUILDKIT_TLS_KEY"],
  ["--tlsservername", "BUILDKIT_TLS_SERVER_NAME"],
];

/** The flags naming a test daemon: `--builder`, and the `--tls*` files of the standalone buildkitd. */
export function builderFlags(daemon: BuildDaemon): string[] {
  const flags = ["--builder", daemon.address];
  if (daemon.embeddedInDocker) return flags;
  for (const [flag, variable] of TLS_FLAGS) {
    const value = process.env[variable];
    if (value) flags.push(flag, value);
  }
  return flags;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** How long the process lived. */
  ms: number;
}

export interface CliProcess {
  child: ChildProcess;
  /** stderr so far. */
  stderr(): string;
  /** Resolves once stderr matches; rejects at once when the command ends without a match. */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<CliResult>;
}

export interface CliOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes or a stream for stdin; stdin is /dev/null without it. */
  input?: Buffer | string | Readable;
  timeoutMs?: number;
}

/** Starts `node bin/buildkit-node.js ARGS…`. */
export async function startCli(args: string[], options: CliOptions = {}): Promise<CliProcess> {
  const bin = await cliBinary();
  return spawnCollecting(process.execPath, [bin, ...args], options);
}

/** Runs `buildkit-node ARGS…` to its end. */
export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return (await startCli(args, options)).exited;
}

/**
 * Runs `buildkit-node ARGS…` on a pseudo-terminal of `columns`×`rows`
 * (util-linux `script`), returning what the terminal received.
 */
export async function runCliOnTerminal(args: string[], options: CliOptions & { columns?: number; rows?: number } = {}): Promise<CliResult> {
  const bin = await cliBinary();
  const command = `stty cols ${options.columns ?? 120} rows ${options.rows ?? 40}; exec ${[process.execPath, bin, ...args].map(shellQuote).join(" ")}`;
  return spawnCollecting("script", ["-qec", command, "/dev/null"], options).exited;
}

/** util-linux `script` (Debian: bsdutils) is installed. */
export function hasScript(): boolean {
  return spawnSync("script", ["--version"], { stdio: "ignore" }).status === 0;
}

function spawnCollecting(file: string, args: string[], options: CliOptions): CliProcess {
  const started = Date.now();
  const input = options.input;
  const child = spawn(file, args, {
    cwd: options.cwd ?? ROOT,
    env: options.env ?? cliEnv(),
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  const stdout: Buffer[] = [];
  let stderr = "";
  let closed = false;
  const waiters = new Set<() => void>();
  child.stdout!.on("data", (chunk: Buffer) => stdout.push(chunk));
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => {
    stderr += chunk;
    for (const check of waiters) check();
  });
  if (input !== undefined) {
    child.stdin!.on("error", () => {}); // the command may stop reading early
    if (typeof input === "string" || Buffer.isBuffer(input)) child.stdin!.end(input);
    else input.pipe(child.stdin!);
  }
  const timeoutMs = options.timeoutMs ?? 120_000;
  const exited = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`buildkit-node ${args.join(" ")} did not exit within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      closed = true;
      for (const check of waiters) check();
      resolve({ code, signal, stdout: Buffer.concat(stdout), stderr, ms: Date.now() - started });
    });
  });
  exited.catch(() => {});
  return {
    child,
    stderr: () => stderr,
    waitForStderr(pattern, waitMs = 60_000) {
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`stderr did not match ${pattern} within ${waitMs} ms:\n${stderr}`));
        }, waitMs);
        // A command that has ended writes no more: waiting on would only run into the timeout.
        const check = () => {
          const matched = pattern.test(stderr);
          if (!matched && !closed) return;
          clearTimeout(timer);
          waiters.delete(check);
          if (matched) resolve();
          else reject(new Error(`buildkit-node ${args.join(" ")} ended before its stderr matched ${pattern}:\n${stderr}`));
        };
        waiters.add(check);
        check();
      });
    },
    exited,
  };
}

function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * What a terminal shows after receiving `output`: enough of a VT100 for the
 * tty renderer (CR, LF, cursor up, erase line, erase below; colors ignored).
 * LF also returns the carriage, as a terminal's default `onlcr` makes it.
 */
export function finalScreen(output: string): string[] {
  const lines: string[][] = [[]];
  let row = 0;
  let col = 0;
  const line = () => (lines[row] ??= []);
  for (let i = 0; i < output.length; i++) {
    const c = output[i]!;
    if (c === "\u001b" && output[i + 1] === "[") {
      const match = /^\u001b\[([0-9;?]*)([A-Za-z])/.exec(output.slice(i));
      if (!match) continue;
      i += match[0].length - 1;
      const n = Number(match[1] || "1");
      switch (match[2]) {
        case "A":
          row = Math.max(0, row - n);
          break;
        case "K":
          line().length = Math.min(line().length, col);
          break;
        case "J":
          line().length = Math.min(line().length, col);
          lines.length = row + 1;
          break;
      }
      continue;
    }
    if (c === "\r") col = 0;
    else if (c === "\n") {
      row++;
      col = 0;
      line();
    } else {
      const current = line();
      while (current.length < col) current.push(" ");
      current[col++] = c;
    }
  }
  return lines.map((l) => l.join("").trimEnd()).join("\n").replace(/\n+$/, "").split("\n");
}

/** Text without ANSI escape sequences. */
export function stripAnsi(text: string): string {
    return text.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, "");
}

/** A scratch directory with these files; removed by `remove()`. */
export function scratchDir(prefix: string, files: Record<string, string> = {}): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `bkn-cli-${prefix}-`));
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(path, name, ".."), { recursive: true });
    writeFileSync(join(path, name), content);
  }
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
