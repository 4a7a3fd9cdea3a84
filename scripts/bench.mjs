// Benchmark of context upload through the build session (fsutil DiffCopy over
// the session tunnel), into `FROM scratch` + `COPY . /` with no cache and no
// output:
//
//   a  many small files (default 20,000 × 4 KiB, 100 per directory)
//   b  one big file (default 1 GiB)
//   c  the tree of (a) built, one file changed, built again: bytes re-sent
//
//   npm run bench                                  # all, full size
//   node scripts/bench.mjs --scenario a,c --files 2000 --size-mib 64
//   node scripts/bench.mjs --clean                 # delete the generated trees
//
// Each scenario runs in its own child process (this script with --child), so
// the peak RSS it reports is that scenario's alone. The trees are generated
// once under $BENCH_DIR (default: <tmpdir>/buildkit-node-bench) and reused.
// The daemon is BUILDKIT_HOST if set, else docker://.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const FILE_SIZE = 4096;
const FILES_PER_DIR = 100;
const MiB = 1024 * 1024;
/** (b)'s target: peak RSS of the building process. */
const RSS_LIMIT_MIB = 200;
/** (c)'s target: what a rebuild may send beyond the changed file's bytes. */
const REBUILD_SLACK_BYTES = 8 * 1024;
const DOCKERFILE = "FROM scratch\nCOPY . /\n";
/** The daemon's step that receives the context (the frontend names it so). */
const CONTEXT_VERTEX = "[internal] load build context";
const MARKER_GENERATOR = "buildkit-node scripts/bench.mjs";
const SCENARIOS = ["a", "b", "c"];

const USAGE = `usage: node scripts/bench.mjs [--scenario a,b,c] [--files N] [--size-mib N] [--clean]
  --scenario  which scenarios to run (default a,b,c)
  --files     files in the tree of (a) and (c) (default 20000, 4 KiB each)
  --size-mib  size of (b)'s file in MiB (default 1024)
  --clean     delete the generated trees under the bench directory, run nothing
env: BENCH_DIR (default ${path.join(os.tmpdir(), "buildkit-node-bench")}), BUILDKIT_HOST (default docker://)`;

const options = parseOptions();
if (options.child) await runChild(options);
else await runParent(options);

// ─── options ────────────────────────────────────────────────────────────────

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        scenario: { type: "string", default: SCENARIOS.join(",") },
        files: { type: "string", default: "20000" },
        "size-mib": { type: "string", default: "1024" },
        clean: { type: "boolean", default: false },
        child: { type: "boolean", default: false }, // internal: run one scenario, print JSON
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (err) {
    usageError(err.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const scenarios = values.scenario.split(",").map((s) => s.trim()).filter(Boolean);
  const unknown = scenarios.filter((s) => !SCENARIOS.includes(s));
  if (unknown.length > 0 || scenarios.length === 0) usageError(`unknown scenario: ${unknown.join(",") || "(none)"}`);
  return {
    scenarios,
    files: positiveInt(values.files, "--files"),
    sizeMiB: positiveInt(values["size-mib"], "--size-mib"),
    clean: values.clean,
    child: values.child,
    benchDir: path.resolve(process.env.BENCH_DIR || path.join(os.tmpdir(), "buildkit-node-bench")),
  };
}

function positiveInt(text, name) {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) usageError(`${name} must be a positive integer, not ${text}`);
  return n;
}

function usageError(message) {
  console.error(`bench: ${message}\n${USAGE}`);
  process.exit(2);
}

// ─── the trees ──────────────────────────────────────────────────────────────
// Each tree has a sibling marker `<tree>.ready.json`, written only once the
// tree is complete: a tree without its marker is (re)generated, with the same
// names, so an interrupted generation is simply finished.

function filesTree(benchDir, files) {
  const dir = path.join(benchDir, `files-${files}x4KiB`);
  const dirs = Math.ceil(files / FILES_PER_DIR);
  return { kind: "files", dir, marker: `${dir}.ready.json`, files, fileSize: FILE_SIZE, dirs, bytes: files * FILE_SIZE };
}

function bigTree(benchDir, sizeMiB) {
  const dir = path.join(benchDir, `big-${sizeMiB}MiB`);
  return { kind: "big", dir, marker: `${dir}.ready.json`, files: 1, bytes: sizeMiB * MiB };
}

/** The path of the i-th small file, relative to its tree. */
function smallFilePath(i) {
  return path.join(`d${String(Math.floor(i / FILES_PER_DIR)).padStart(4, "0")}`, `f${String(i).padStart(6, "0")}.bin`);
}

async function ensureTree(tree) {
  const existing = await readJson(tree.marker);
  if (existing?.bytes === tree.bytes && existing?.files === tree.files) {
    console.log(`reusing ${tree.dir}`);
    return;
  }
  await checkFreeSpace(path.dirname(tree.dir), tree.bytes);
  const started = performance.now();
  process.stdout.write(`generating ${tree.dir} (${describeTree(tree)}) … `);
  await fs.mkdir(tree.dir, { recursive: true });
  if (tree.kind === "files") await writeSmallFiles(tree);
  else await writeBigFile(path.join(tree.dir, "big.bin"), tree.bytes);
  const { kind, files, bytes, fileSize, dirs } = tree;
  const marker = { generator: MARKER_GENERATOR, kind, files, bytes, fileSize, dirs, createdAt: new Date().toISOString() };
  await fs.writeFile(tree.marker, `${JSON.stringify(marker, null, 2)}\n`);
  console.log(`${seconds(performance.now() - started)} s`);
}

function describeTree(tree) {
  return tree.kind === "files" ? `${tree.files} files of ${tree.fileSize} B in ${tree.dirs} dirs` : `one file of ${tree.bytes / MiB} MiB`;
}

/** Random content, so that nothing compresses or dedups on the way. */
async function writeSmallFiles(tree) {
  for (let d = 0; d < tree.dirs; d++) await fs.mkdir(path.join(tree.dir, path.dirname(smallFilePath(d * FILES_PER_DIR))), { recursive: true });
  let next = 0;
  const worker = async () => {
    while (next < tree.files) {
      const i = next++;
      await fs.writeFile(path.join(tree.dir, smallFilePath(i)), randomBytes(FILE_SIZE));
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

/** Streamed in 1 MiB chunks through one reused buffer: never more in memory. */
async function writeBigFile(file, bytes) {
  const chunk = Buffer.alloc(MiB);
  const handle = await fs.open(file, "w");
  try {
    for (let written = 0; written < bytes; ) {
      const n = Math.min(chunk.length, bytes - written);
      randomBytes(n).copy(chunk); // fresh random per chunk
      await handle.write(chunk, 0, n); // awaited before the buffer is refilled
      written += n;
    }
  } finally {
    await handle.close();
  }
}

/** The tree needs `bytes` here, and the daemon as much again for its copy (often on the same disk). */
async function checkFreeSpace(dir, bytes) {
  await fs.mkdir(dir, { recursive: true });
  const { bavail, bsize } = await fs.statfs(dir);
  const free = bavail * bsize;
  if (free < bytes * 2.2) {
    throw new Error(`not enough free space in ${dir}: ${mib(free)} MiB free, ~${mib(bytes * 2.2)} MiB wanted (the tree and the daemon's copy)`);
  }
}

/** Deletes the trees this script generated (by marker or by name) and its run links; nothing else. */
async function clean(benchDir) {
  let names;
  try {
    names = await fs.readdir(benchDir);
  } catch (err) {
    if (err.code === "ENOENT") return console.log(`nothing to clean: ${benchDir} does not exist`);
    throw err;
  }
  for (const name of names) {
    const ours = /^(files-\d+x4KiB|big-\d+MiB)(\.ready\.json)?$/.test(name) || name === "runs";
    if (!ours) continue;
    await fs.rm(path.join(benchDir, name), { recursive: true, force: true });
    console.log(`deleted ${path.join(benchDir, name)}`);
  }
  try {
    await fs.rmdir(benchDir); // only if nothing else is in it
    console.log(`deleted ${benchDir}`);
  } catch {
    console.log(`kept ${benchDir}: it holds files this script did not make`);
  }
}

// ─── the parent: trees, one child per scenario, the table ───────────────────

async function runParent(opts) {
  if (opts.clean) return clean(opts.benchDir);
  const address = process.env.BUILDKIT_HOST || "docker://";
  console.log(`BuildKit: ${address} (${process.env.BUILDKIT_HOST ? "BUILDKIT_HOST" : "BUILDKIT_HOST not set"}); node ${process.version}`);
  console.log(`bench dir: ${opts.benchDir}`);
  if (opts.scenarios.some((s) => s !== "b")) await ensureTree(filesTree(opts.benchDir, opts.files));
  if (opts.scenarios.includes("b")) await ensureTree(bigTree(opts.benchDir, opts.sizeMiB));

  const results = [];
  let failed = false;
  for (const scenario of opts.scenarios) {
    process.stdout.write(`running (${scenario}) … `);
    try {
      const result = await spawnScenario(scenario, opts);
      results.push(result);
      console.log(`${seconds(result.rows.reduce((sum, r) => sum + r.ms, 0))} s of builds`);
    } catch (err) {
      failed = true;
      console.log(`FAILED\n${err.message}`);
    }
  }
  if (results.length > 0) {
    console.log();
    printTable(results);
    printTargets(results);
    printNotes();
  }
  if (failed) process.exitCode = 1;
}

/** Runs one scenario in a child process; resolves with the JSON line it printed. */
function spawnScenario(scenario, opts) {
  const args = [fileURLToPath(import.meta.url), "--child", "--scenario", scenario, "--files", String(opts.files), "--size-mib", String(opts.sizeMiB)];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (text) => (stdout += text));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const line = stdout.trim().split("\n").filter((l) => l.startsWith("{")).at(-1);
      if (code !== 0 || !line) return reject(new Error(`scenario ${scenario}: child exited with ${signal ?? code}${stdout.trim() ? `\n${stdout.trim()}` : ""}`));
      resolve(JSON.parse(line));
    });
  });
}

function printTable(results) {
  const header = [
    "scenario", "files", "context MiB", "sent (bytes)", "wall s", "MiB/s", "files/s",
    "upload s", "client CPU s", "peak RSS MiB", "RSS at start MiB", "peak heap MiB", "peak external MiB",
  ];
  const lines = [header, header.map(() => "---")];
  for (const { rows, memory } of results) {
    for (const row of rows) {
      const secondsTaken = row.ms / 1000;
      lines.push([
        row.label,
        String(row.files),
        mib(row.bytes),
        row.sent.toLocaleString("en-US"),
        secondsTaken.toFixed(2),
        (row.bytes / MiB / secondsTaken).toFixed(1),
        rate(row.files / secondsTaken),
        Number.isFinite(row.uploadMs) ? (row.uploadMs / 1000).toFixed(2) : "n/a",
        (row.cpuMs / 1000).toFixed(2),
        mib(memory.maxRssKiB * 1024),
        mib(memory.rssAtStart),
        mib(memory.peak.heapUsed),
        mib(memory.peak.external),
      ]);
    }
  }
  for (const line of lines) console.log(`| ${line.join(" | ")} |`);
}

function printTargets(results) {
  const byScenario = new Map(results.map((r) => [r.scenario, r]));
  console.log("\nTargets:");
  const b = byScenario.get("b");
  if (b) {
    const peak = (b.memory.maxRssKiB * 1024) / MiB;
    console.log(`- (b) peak RSS under ${RSS_LIMIT_MIB} MiB: ${peak.toFixed(1)} MiB → ${verdict(peak < RSS_LIMIT_MIB)}`);
  }
  const c = byScenario.get("c");
  if (c) {
    const [first, rebuild, noop] = c.rows;
    const limit = c.changedFileBytes + REBUILD_SLACK_BYTES;
    // DiffCopy always sends the whole listing (one STAT per entry, as Go clients do); the
    // no-op rebuild measures it, so the difference is what the change itself cost.
    const changeCost = rebuild.sent - noop.sent;
    console.log(
      `- (c) a rebuild sends only the changed file: the change cost ${fmt(changeCost)} B ` +
        `(limit: the ${fmt(c.changedFileBytes)} B file + ${REBUILD_SLACK_BYTES / 1024} KiB) → ${verdict(changeCost <= limit)}`,
    );
    console.log(
      `  bytes sent: first build ${fmt(first.sent)} B, rebuild ${fmt(rebuild.sent)} B, no-op rebuild ${fmt(noop.sent)} B (the listing alone)`,
    );
  }
  if (!b && !c) console.log("- none for the scenarios run");
}

function printNotes() {
  console.log(`
Notes:
- MiB/s and files/s: the context's size and file count over the build's wall time (connect excluded).
- upload s: from the daemon's "${CONTEXT_VERTEX}" step starting to its transfer bar completing (the COPY not included).
- client CPU s: user + system time of this client during the build (the machine has ${os.availableParallelism()} CPUs, shared with the daemon).
- sent: the largest \`current\` of the daemon's "transferring context" progress; fsutil's receiver counts every packet
  it gets, so the listing (one STAT per file and directory) is in it, not just file data.
- peak RSS and heap/external: per child process; for (c) one peak covers its three builds.
- Each scenario uploads under a fresh path (a link to the tree) so that the daemon has no earlier copy to diff against;
  those copies stay in the daemon's build cache (\`docker builder prune\` removes them).`);
}

// Function declarations, not consts: they are hoisted above the top-level await that runs everything.
function verdict(ok) {
  return ok ? "MET" : "NOT MET";
}
function fmt(n) {
  return n.toLocaleString("en-US");
}
function mib(bytes) {
  return (bytes / MiB).toFixed(1);
}
function rate(perSecond) {
  return perSecond < 10 ? perSecond.toFixed(2) : fmt(Math.round(perSecond));
}
function seconds(ms) {
  return (ms / 1000).toFixed(1);
}

// ─── the child: one scenario, one JSON line ─────────────────────────────────

async function runChild(opts) {
  const memory = sampleMemory();
  const { connect } = await import("buildkit-node");
  const scenario = opts.scenarios[0];
  const tree = scenario === "b" ? bigTree(opts.benchDir, opts.sizeMiB) : filesTree(opts.benchDir, opts.files);
  if (!(await readJson(tree.marker))) throw new Error(`${tree.dir} is not generated (no ${tree.marker})`);

  // A fresh path for this run: the session's shared key follows the context's
  // path, and the daemon diffs an upload against the last one under that key.
  // A new path makes it a cold upload; (c) reuses it for its rebuilds.
  const bk = await connect(process.env.BUILDKIT_HOST ? undefined : "docker://");
  const runsDir = path.join(opts.benchDir, "runs");
  await fs.mkdir(runsDir, { recursive: true });
  const alias = path.join(runsDir, `${scenario}-${process.pid}-${Date.now()}`);
  await fs.symlink(tree.dir, alias);
  memory.markStart();
  try {
    const result = { scenario, rows: [] };
    const measure = async (label) => result.rows.push({ label, files: tree.files, bytes: tree.bytes, ...(await timedBuild(bk, alias)) });
    if (scenario === "c") {
      await measure("c first build");
      result.changedFileBytes = await changeOneFile(tree);
      await measure("c rebuild, 1 file changed");
      await measure("c rebuild, nothing changed");
    } else {
      await measure(scenario === "a" ? "a small files" : "b one big file");
    }
    result.memory = memory.stop();
    console.log(JSON.stringify(result));
  } finally {
    await bk.close();
    await fs.unlink(alias);
  }
}

/**
 * One build of `dir`: its wall time, the bytes the daemon reports for the
 * context transfer, how long the upload took (without the COPY) and the CPU
 * time this process spent.
 */
async function timedBuild(bk, dir) {
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const run = bk.build({ context: dir, dockerfileContent: DOCKERFILE, noCache: true });
  let sent = 0;
  // The upload: from the context vertex's start to its transfer bar's end, by
  // when the events arrive. Not the vertex's own completion: BuildKit reports
  // it started and completed (the cache-key phase) before the transfer, then
  // started again, and buildkit-node announces only that first completion.
  let uploadStarted;
  let uploadEnded;
  for await (const event of run.events) {
    if (event.type === "progress" && event.id.startsWith("transferring context")) sent = Math.max(sent, event.current);
    if (event.name !== CONTEXT_VERTEX) continue;
    if (event.type === "vertex.started") uploadStarted ??= performance.now();
    if (event.type === "progress" && event.completed) uploadEnded = performance.now();
  }
  await run; // rejects with the BuildError if the build failed: the child then exits non-zero
  const cpu = process.cpuUsage(cpuBefore);
  const uploadMs = uploadStarted !== undefined && uploadEnded !== undefined ? uploadEnded - uploadStarted : NaN;
  return { ms: performance.now() - started, sent, uploadMs, cpuMs: (cpu.user + cpu.system) / 1000 };
}

/** New random content, same size, for the file in the middle of the tree. */
async function changeOneFile(tree) {
  const file = path.join(tree.dir, smallFilePath(Math.floor(tree.files / 2)));
  await fs.writeFile(file, randomBytes(FILE_SIZE));
  return FILE_SIZE;
}

/**
 * Peaks of process.memoryUsage(), sampled every 50 ms, to tell where memory
 * goes (JS heap, Buffers outside it, or neither: native), beside the OS's
 * maxRSS for the whole process.
 */
function sampleMemory() {
  const peak = { rss: 0, heapUsed: 0, heapTotal: 0, external: 0, arrayBuffers: 0 };
  const sample = () => {
    const now = process.memoryUsage();
    for (const key of Object.keys(peak)) peak[key] = Math.max(peak[key], now[key]);
  };
  const timer = setInterval(sample, 50).unref(); // never what keeps the process alive
  let rssAtStart = 0;
  return {
    /** After imports and connect, before the first build. */
    markStart: () => (rssAtStart = process.memoryUsage().rss),
    stop() {
      clearInterval(timer);
      sample();
      return { maxRssKiB: process.resourceUsage().maxRSS, rssAtStart, peak };
    },
  };
}

async function readJson(file) {
  try {
    return JSON.parse(await fs.readFile(file, "utf8"));
  } catch {
    return undefined;
  }
}
