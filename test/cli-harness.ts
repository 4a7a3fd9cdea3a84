// Runs the `buildkit-node` command as a child process, the way users run it.
//
// The command is compiled once per source state into a private directory
// (node_modules/.cache/buildkit-node-cli-test/<hash>/{dist,bin,package.json}),
// never into the repository's dist/, so test files running in parallel (and
// anyone using dist/) do not race over `rm -rf dist`. The copied bin shim is
// the real one: `import "../dist/cli/main.js"`.
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CACHE = join(ROOT, "node_modules", ".cache", "buildkit-node-cli-test");
const LOCK_STALE_MS = 180_000;

/** The BuildKit the CLI tests build on: dockerd's (as the rest of the suite). */
export const BUILDER = process.env.BUILDKIT_NODE_TEST_DOCKER ?? "docker://";

let compiled: Promise<string> | undefined;

/** The path of `bin/buildkit-node.js` in a compiled copy of the current sources. */
export function cliBinary(): Promise<string> {
  compiled ??= compile();
  return compiled;
}

async function compile(): Promise<string> {
  const dir = join(CACHE, sourceHash());
  const bin = join(dir, "bin", "buildkit-node.js");
  const lock = `${dir}.lock`;
  mkdirSync(CACHE, { recursive: true });
  for (const started = Date.now(); !existsSync(bin); ) {
    if (tryLock(lock)) {
      try {
        if (!existsSync(bin)) await compileInto(dir);
      } finally {
        rmSync(lock, { recursive: true, force: true });
      }
      break;
    }
    if (Date.now() - started > LOCK_STALE_MS) throw new Error(`timed out waiting for another test process to compile the CLI (${lock})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return bin;
}

function tryLock(lock: string): boolean {
  try {
    mkdirSync(lock);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    // A lock left by a killed run.
    if (Date.now() - statSync(lock, { throwIfNoEntry: false })!.mtimeMs > LOCK_STALE_MS) rmSync(lock, { recursive: true, force: true });
    return false;
  }
}

async function compileInto(dir: string): Promise<void> {
  const staging = `${dir}.staging-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  try {
    await promisify(execFile)(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", join(staging, "dist")], { cwd: ROOT });
  } catch (err) {
    // Type errors elsewhere still emit JavaScript; only a missing entry point is fatal.
    if (!existsSync(join(staging, "dist", "cli", "main.js"))) throw err;
    process.stderr.write(`tsc reported errors while compiling the CLI for tests:\n${(err as { stdout?: string }).stdout ?? err}\n`);
  }
  mkdirSync(join(staging, "bin"), { recursive: true });
  copyFileSync(join(ROOT, "bin", "buildkit-node.js"), join(staging, "bin", "buildkit-node.js"));
  copyFileSync(join(ROOT, "package.json"), join(staging, "package.json"));
  renameSync(staging, dir);
  // Older compiled copies are of no further use.
  for (const entry of readdirSync(CACHE)) {
    const path = join(CACHE, entry);
    const age = Date.now() - (statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    if (path !== dir && !entry.endsWith(".lock") && age > 3_600_000) rmSync(path, { recursive: true, force: true });
  }
}

function sourceHash(): string {
  const hash = createHash("sha256");
  const files = [...walk(join(ROOT, "src")), ...["bin/buildkit-node.js", "package.json", "tsconfig.json", "tsconfig.build.json"].map((f) => join(ROOT, f))];
  for (const file of files.sort()) hash.update(relative(ROOT, file)).update("\u0000").update(readFileSync(file)).update("\u0000");
  return hash.digest("hex").slice(0, 16);
}

function* walk(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else yield path;
  }
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

/** The BUILDKIT_TLS_* of the environment the tests run in (for the standalone buildkitd). */
export function standaloneTlsEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith("BUILDKIT_TLS_") && e[1] !== undefined));
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
  /** Resolves once stderr matches. */
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
        const check = () => {
          if (!pattern.test(stderr)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
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
