// Context upload, buildkit-node against buildctl (BuildKit's own Go client)
// on the same daemon in one run: `FROM scratch` + `COPY . /c/`, no cache, no
// export, so that the build is the upload.
//
//   npm run bench                                   # every scenario, once each
//   node scripts/bench.mjs --scenario 20k,1gib --repeat 3
//   node scripts/bench.mjs --clean                  # delete the generated trees
//
// Scenarios:
//   20k      20,000 files of 4 KiB (100 per directory)
//   200k     200,000 files of 4 KiB: the per-file cost must not grow with the tree
//   1gib     one file of 1 GiB
//   rebuild  the 20k tree uploaded, one file changed, uploaded again: what the change costs
//
// The daemon: BUILDKIT_HOST (with BUILDKIT_TLS_CA/CERT/KEY/SERVER_NAME for
// mutual TLS), as `scripts/local-buildkit.sh env` prints it, else dockerd
// (docker://). buildctl: $BUILDCTL, else ../shared/buildkit/bin/buildctl; it
// cannot reach dockerd's embedded BuildKit (see NOTES below).
//
// Every file gets a fresh modification time before every upload: the daemon
// diffs an upload against the last one under the same session key, and
// buildctl's key is the same for every directory, so a tree uploaded before
// with the same times would not be sent at all. Each buildkit-node upload runs
// in its own child process (its peak RSS is that upload's); buildctl's CPU
// time and peak RSS come from GNU time when /usr/bin/time exists.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const FILE_SIZE = 4096;
const FILES_PER_DIR = 100;
const MiB = 1024 * 1024;
const DOCKERFILE = "FROM scratch\nCOPY . /c/\n";
const SCENARIOS = ["20k", "200k", "1gib", "rebuild"];
const MARKER_GENERATOR = "buildkit-node scripts/bench.mjs";
const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_BUILDCTL = path.resolve(HERE, "../../shared/buildkit/bin/buildctl");

// The targets of issue 10.
const TARGET_WALL_RATIO = 1.0;
const TARGET_CPU_RATIO = 2.0;
const TARGET_RSS_MIB = 100;
const TARGET_LOOP_DELAY_MS = 50;
/** 200k files may cost this much more per file than 20k and still count as linear. */
const LINEAR_SLACK = 1.2;

const USAGE = `usage: node scripts/bench.mjs [--scenario ${SCENARIOS.join(",")}] [--repeat N] [--no-buildctl] [--clean]
  --scenario    which scenarios to run (default: all)
  --repeat      runs of each client per scenario, alternating which goes first (default 1); ranges are min–max
  --no-buildctl measure buildkit-node alone
  --clean       delete the trees under the bench directory, run nothing
env: BENCH_DIR (default ${path.join(os.tmpdir(), "buildkit-node-bench")}), BUILDKIT_HOST + BUILDKIT_TLS_* (default docker://), BUILDCTL`;

// ─── options ────────────────────────────────────────────────────────────────

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        scenario: { type: "string", default: SCENARIOS.join(",") },
        repeat: { type: "string", default: "1" },
        "no-buildctl": { type: "boolean", default: false },
        clean: { type: "boolean", default: false },
        child: { type: "string" }, // internal: one buildkit-node upload of this tree dir, JSON out
        rebuild: { type: "boolean", default: false }, // internal, with --child
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
  const repeat = Number(values.repeat);
  if (!Number.isSafeInteger(repeat) || repeat < 1) usageError(`--repeat must be a positive integer, not ${values.repeat}`);
  return {
    scenarios,
    repeat,
    useBuildctl: !values["no-buildctl"],
    clean: values.clean,
    child: values.child,
    rebuild: values.rebuild,
    benchDir: path.resolve(process.env.BENCH_DIR || path.join(os.tmpdir(), "buildkit-node-bench")),
  };
}

function usageError(message) {
  console.error(`bench: ${message}\n${USAGE}`);
  process.exit(2);
}

// ─── the daemon and buildctl ────────────────────────────────────────────────

function daemonOf() {
  const host = process.env.BUILDKIT_HOST;
  if (!host) return { address: "docker://", label: "dockerd's BuildKit (docker://, BUILDKIT_HOST not set)", tls: undefined };
  const env = process.env;
  const tls = host.startsWith("tcp://") && env.BUILDKIT_TLS_CA ? { ca: env.BUILDKIT_TLS_CA, cert: env.BUILDKIT_TLS_CERT, key: env.BUILDKIT_TLS_KEY, serverName: env.BUILDKIT_TLS_SERVER_NAME } : undefined;
  return { address: host, label: `${host}${tls ? " (mutual TLS)" : ""}`, tls };
}

/** buildctl, or why there is none for this daemon. */
function buildctlFor(daemon, wanted) {
  if (!wanted) return { unavailable: "--no-buildctl" };
  if (daemon.address.startsWith("docker://")) {
    return {
      unavailable:
        "buildctl cannot reach dockerd's embedded BuildKit: dockerd serves it only through its Engine API (POST /grpc, upgraded to h2c), " +
        "for which buildctl has no dialer (buildx's docker driver has one). Set BUILDKIT_HOST to a buildkitd to compare",
    };
  }
  const binary = process.env.BUILDCTL || DEFAULT_BUILDCTL;
  if (!existsSync(binary)) return { unavailable: `no buildctl at ${binary} (set BUILDCTL)` };
  const args = ["--addr", daemon.address];
  if (daemon.tls) {
    args.push("--tlscacert", daemon.tls.ca);
    if (daemon.tls.cert) args.push("--tlscert", daemon.tls.cert, "--tlskey", daemon.tls.key);
    if (daemon.tls.serverName) args.push("--tlsservername", daemon.tls.serverName);
  }
  return { binary, args, timed: existsSync("/usr/bin/time") };
}

// ─── the trees ──────────────────────────────────────────────────────────────
// Each tree has a sibling marker `<tree>.ready.json`, written once the tree is
// complete: a tree without it is (re)generated under the same names.

function filesTree(benchDir, files) {
  const dir = path.join(benchDir, `files-${files}x4KiB`);
  return { kind: "files", dir, marker: `${dir}.ready.json`, files, entries: files + Math.ceil(files / FILES_PER_DIR), bytes: files * FILE_SIZE };
}

function bigTree(benchDir) {
  const dir = path.join(benchDir, "big-1024MiB");
  return { kind: "big", dir, marker: `${dir}.ready.json`, files: 1, entries: 1, bytes: 1024 * MiB };
}

function treeOf(scenario, benchDir) {
  if (scenario === "1gib") return bigTree(benchDir);
  return filesTree(benchDir, scenario === "200k" ? 200_000 : 20_000);
}

function smallFilePath(i) {
  return path.join(`d${String(Math.floor(i / FILES_PER_DIR)).padStart(4, "0")}`, `f${String(i).padStart(6, "0")}.bin`);
}

async function ensureTree(tree) {
  const existing = await readJson(tree.marker);
  if (existing?.bytes === tree.bytes && existing?.files === tree.files) return;
  await fs.mkdir(path.dirname(tree.dir), { recursive: true });
  const { bavail, bsize } = await fs.statfs(path.dirname(tree.dir));
  if (bavail * bsize < tree.bytes * 3) throw new Error(`not enough free space for ${tree.dir}: ~${mib(tree.bytes * 3)} MiB wanted (the tree and the daemon's copies)`);
  const started = performance.now();
  process.stdout.write(`generating ${tree.dir} … `);
  await fs.mkdir(tree.dir, { recursive: true });
  if (tree.kind === "files") {
    for (let d = 0; d < Math.ceil(tree.files / FILES_PER_DIR); d++) await fs.mkdir(path.join(tree.dir, path.dirname(smallFilePath(d * FILES_PER_DIR))), { recursive: true });
    await forEachLimited(tree.files, 32, (i) => fs.writeFile(path.join(tree.dir, smallFilePath(i)), randomBytes(FILE_SIZE)));
  } else {
    const handle = await fs.open(path.join(tree.dir, "big.bin"), "w");
    try {
      for (let written = 0; written < tree.bytes; written += MiB) await handle.write(randomBytes(MiB)); // random: nothing compresses
    } finally {
      await handle.close();
    }
  }
  await fs.writeFile(tree.marker, `${JSON.stringify({ generator: MARKER_GENERATOR, files: tree.files, bytes: tree.bytes }, null, 2)}\n`);
  console.log(`${seconds(performance.now() - started)} s`);
}

/** Gives every entry of the tree the same new time, one no earlier upload used. */
let lastTime = Math.floor(Date.now() / 1000) - 10 * 365 * 86400;
async function freshTimes(tree) {
  const time = new Date(++lastTime * 1000);
  const walk = async (dir) => {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    await forEachLimited(entries.length, 32, async (i) => {
      const full = path.join(dir, entries[i].name);
      if (entries[i].isDirectory()) await walk(full);
      await fs.utimes(full, time, time);
    });
  };
  await walk(tree.dir);
  await fs.utimes(tree.dir, time, time);
}

async function forEachLimited(count, limit, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, count) }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

async function clean(benchDir) {
  for (const name of await fs.readdir(benchDir).catch(() => [])) {
    if (!/^(files-\d+x4KiB|big-\d+MiB)(\.ready\.json)?$/.test(name)) continue;
    await fs.rm(path.join(benchDir, name), { recursive: true, force: true });
    console.log(`deleted ${path.join(benchDir, name)}`);
  }
  await fs.rmdir(benchDir).catch(() => {});
}

// ─── the parent ─────────────────────────────────────────────────────────────

async function runParent(opts) {
  if (opts.clean) return clean(opts.benchDir);
  const daemon = daemonOf();
  const buildctl = buildctlFor(daemon, opts.useBuildctl);
  console.log(`daemon: ${daemon.label}; node ${process.version}; ${os.availableParallelism()} CPUs, load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
  console.log(buildctl.unavailable ? `buildctl: none (${buildctl.unavailable})` : `buildctl: ${buildctl.binary}`);
  for (const scenario of opts.scenarios) await ensureTree(treeOf(scenario, opts.benchDir));

  const results = [];
  for (const scenario of opts.scenarios) {
    const tree = treeOf(scenario, opts.benchDir);
    const runs = { scenario, tree, node: [], buildctl: [] };
    for (let r = 0; r < opts.repeat; r++) {
      // Alternate which client goes first, so that a drifting machine favours neither.
      const order = r % 2 === 0 ? ["node", "buildctl"] : ["buildctl", "node"];
      for (const client of order) {
        if (client === "buildctl" && buildctl.unavailable) continue;
        const result = client === "node" ? await nodeRun(scenario, tree) : await buildctlRun(scenario, tree, buildctl);
        runs[client].push(result);
        console.log(`  ${scenario} #${r + 1} ${client.padEnd(8)} ${describeRun(result)}`);
      }
    }
    results.push(runs);
  }
  console.log();
  printTable(results, buildctl);
  printTargets(results, buildctl);
  console.log(`\nNOTES\n- wall: the upload's build, from the client's start to its end (connect included for buildctl, which cannot be split).`);
  console.log(`- client CPU: user + system time of the client process; the daemon shares the machine's ${os.availableParallelism()} CPUs.`);
  console.log(`- sent: the daemon's count of the context transfer (fsutil counts every packet, the listing included).`);
  console.log(`- event loop: the longest event-loop delay in buildkit-node's process during the upload (perf_hooks.monitorEventLoopDelay); in`);
  console.log(`  parentheses the most CPU time the process itself spent within one stall (a stall with little own CPU is the machine's load).`);
  if (buildctl.unavailable) console.log(`- buildctl: ${buildctl.unavailable}.`);
}

function describeRun(r) {
  const parts = [`wall ${seconds(r.wallMs)} s`, `CPU ${seconds(r.cpuMs)} s`];
  if (r.rssKiB) parts.push(`RSS ${mib(r.rssKiB * 1024)} MiB`);
  if (r.loopDelayMaxMs !== undefined) parts.push(`event loop max ${r.loopDelayMaxMs.toFixed(0)} ms (own CPU ${r.loopBusyMaxMs.toFixed(0)} ms)`);
  if (r.sent) parts.push(`sent ${fmt(r.sent)} B`);
  return parts.join(", ");
}

/** One buildkit-node upload (for the rebuild: the upload after one file changed) in a child process. */
async function nodeRun(scenario, tree) {
  if (scenario === "rebuild") {
    await freshTimes(tree);
    await nodeChild(tree, false); // the first upload, not measured
    const changed = await changeOneFile(tree);
    const result = await nodeChild(tree, true);
    return { ...result, changed };
  }
  await freshTimes(tree);
  return nodeChild(tree, false);
}

function nodeChild(tree, rebuild) {
  const args = [fileURLToPath(import.meta.url), "--child", tree.dir, ...(rebuild ? ["--rebuild"] : [])];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (text) => (stdout += text));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const line = stdout.trim().split("\n").filter((l) => l.startsWith("{")).at(-1);
      if (code !== 0 || !line) return reject(new Error(`buildkit-node upload of ${tree.dir} exited with ${signal ?? code}\n${stdout}`));
      resolve(JSON.parse(line));
    });
  });
}

async function buildctlRun(scenario, tree, buildctl) {
  if (scenario === "rebuild") {
    await freshTimes(tree);
    await buildctlOnce(tree, buildctl);
    const changed = await changeOneFile(tree);
    return { ...(await buildctlOnce(tree, buildctl)), changed };
  }
  await freshTimes(tree);
  return buildctlOnce(tree, buildctl);
}

/** One buildctl build; its wall time, CPU, peak RSS and the bytes the daemon counted. */
async function buildctlOnce(tree, buildctl) {
  const dockerfileDir = await fs.mkdtemp(path.join(os.tmpdir(), "bench-dockerfile-"));
  await fs.writeFile(path.join(dockerfileDir, "Dockerfile"), DOCKERFILE);
  const args = [...buildctl.args, "build", "--progress=rawjson", "--frontend", "dockerfile.v0", "--local", `context=${tree.dir}`, "--local", `dockerfile=${dockerfileDir}`, "--no-cache"];
  const [command, commandArgs] = buildctl.timed ? ["/usr/bin/time", ["-f", "\nTIME %e %U %S %M", buildctl.binary, ...args]] : [buildctl.binary, args];
  const started = performance.now();
  try {
    return await new Promise((resolve, reject) => {
      const child = spawn(command, commandArgs, { stdio: ["ignore", "ignore", "pipe"] });
      let sent = 0;
      let tail = "";
      let timing;
      child.stderr.setEncoding("utf8").on("data", (text) => {
        const lines = (tail + text).split("\n");
        tail = lines.pop();
        for (const line of lines) {
          if (line.startsWith("TIME ")) timing = line.split(" ").slice(1).map(Number);
          else if (line.startsWith("{")) sent = Math.max(sent, transferredIn(line));
        }
      });
      child.on("error", reject);
      child.on("close", (code) => {
        if (tail.startsWith("TIME ")) timing = tail.split(" ").slice(1).map(Number);
        if (code !== 0) return reject(new Error(`buildctl exited with ${code}`));
        const wallMs = performance.now() - started;
        resolve(timing ? { wallMs, cpuMs: (timing[1] + timing[2]) * 1000, rssKiB: timing[3], sent } : { wallMs, cpuMs: NaN, sent });
      });
    });
  } finally {
    await fs.rm(dockerfileDir, { recursive: true, force: true });
  }
}

/** The largest "transferring context" count in one line of buildctl's rawjson progress. */
function transferredIn(line) {
  try {
    const status = JSON.parse(line);
    let max = 0;
    for (const s of status.statuses ?? []) if (String(s.id).startsWith("transferring context")) max = Math.max(max, s.current ?? 0);
    return max;
  } catch {
    return 0;
  }
}

/** New content and a new time for the file in the middle of the tree. */
async function changeOneFile(tree) {
  const file = path.join(tree.dir, smallFilePath(Math.floor(tree.files / 2)));
  await fs.writeFile(file, randomBytes(FILE_SIZE));
  const time = new Date(++lastTime * 1000);
  await fs.utimes(file, time, time);
  return FILE_SIZE;
}

// ─── the table ──────────────────────────────────────────────────────────────

const LABELS = { "20k": "20,000 files of 4 KiB", "200k": "200,000 files of 4 KiB", "1gib": "one 1 GiB file", rebuild: "rebuild of the 20,000 after one file changed" };

function printTable(results, buildctl) {
  const compare = !buildctl.unavailable;
  const header = compare
    ? ["work", "buildctl wall s", "buildctl CPU s", "buildctl RSS MiB", "buildkit-node wall s", "CPU s", "peak RSS MiB", "event loop max ms (own CPU)", "wall ratio", "CPU ratio"]
    : ["work", "buildkit-node wall s", "CPU s", "peak RSS MiB", "event loop max ms (own CPU)", "sent MiB"];
  const rows = [header, header.map(() => "---")];
  for (const { scenario, node, buildctl: go } of results) {
    const loop = `${range(node, (r) => r.loopDelayMaxMs, 0)} (${range(node, (r) => r.loopBusyMaxMs, 0)})`;
    const ours = [range(node, (r) => r.wallMs / 1000), range(node, (r) => r.cpuMs / 1000), range(node, (r) => r.rssKiB / 1024, 0), loop];
    if (!compare) {
      rows.push([LABELS[scenario], ...ours, range(node, (r) => r.sent / MiB, 1)]);
      continue;
    }
    // Ratios of runs made side by side (the i-th of each), so that a slower moment of the machine weighs on both.
    const pairs = node.map((r, i) => [r, go[i]]).filter(([, g]) => g);
    rows.push([
      LABELS[scenario],
      range(go, (r) => r.wallMs / 1000),
      range(go, (r) => r.cpuMs / 1000),
      range(go, (r) => r.rssKiB / 1024, 0),
      ...ours,
      range(pairs, ([n, g]) => n.wallMs / g.wallMs),
      range(pairs, ([n, g]) => n.cpuMs / g.cpuMs),
    ]);
  }
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
}

function printTargets(results, buildctl) {
  console.log("\nTARGETS");
  const byScenario = new Map(results.map((r) => [r.scenario, r]));
  for (const scenario of ["20k", "1gib"]) {
    const runs = byScenario.get(scenario);
    if (!runs || buildctl.unavailable) continue;
    const pairs = runs.node.map((r, i) => [r, runs.buildctl[i]]).filter(([, g]) => g);
    const wall = Math.max(...pairs.map(([n, g]) => n.wallMs / g.wallMs));
    const cpu = Math.max(...pairs.map(([n, g]) => n.cpuMs / g.cpuMs));
    console.log(`- ${LABELS[scenario]}: wall ratio ${wall.toFixed(2)} (≤ ${TARGET_WALL_RATIO}) ${verdict(wall <= TARGET_WALL_RATIO)}; CPU ratio ${cpu.toFixed(2)} (≤ ${TARGET_CPU_RATIO}) ${verdict(cpu <= TARGET_CPU_RATIO)}`);
  }
  const all = results.flatMap((r) => r.node);
  if (all.length > 0) {
    const rss = Math.max(...all.map((r) => r.rssKiB / 1024));
    const loop = Math.max(...all.map((r) => r.loopDelayMaxMs));
    const busy = Math.max(...all.map((r) => r.loopBusyMaxMs));
    console.log(`- peak RSS of every buildkit-node upload: ${rss.toFixed(0)} MiB (< ${TARGET_RSS_MIB}) ${verdict(rss < TARGET_RSS_MIB)}`);
    console.log(
      `- longest event-loop delay: ${loop.toFixed(0)} ms (< ${TARGET_LOOP_DELAY_MS}) ${verdict(loop < TARGET_LOOP_DELAY_MS)}; ` +
        `the most CPU buildkit-node itself spent in one stall: ${busy.toFixed(0)} ms (the rest of a stall is the machine's other work)`,
    );
  }
  const small = byScenario.get("20k");
  const many = byScenario.get("200k");
  if (small && many) {
    // The client's cost per file is its CPU time; wall time per file also carries the daemon's share.
    const perFile = (runs, key) => Math.min(...runs.node.map((r) => r[key])) / runs.tree.files;
    const cpuRatio = perFile(many, "cpuMs") / perFile(small, "cpuMs");
    const wallRatio = perFile(many, "wallMs") / perFile(small, "wallMs");
    console.log(
      `- 200k files cost ${(perFile(many, "cpuMs") * 1000).toFixed(0)} µs of client CPU per file, 20k ${(perFile(small, "cpuMs") * 1000).toFixed(0)} µs (best runs): ` +
        `${cpuRatio.toFixed(2)}× (≤ ${LINEAR_SLACK}) ${verdict(cpuRatio <= LINEAR_SLACK)}; wall per file ${wallRatio.toFixed(2)}×`,
    );
  }
  const rebuild = byScenario.get("rebuild");
  if (rebuild) {
    const listing = rebuild.tree.entries * 80; // a STAT is ~60–80 bytes on the wire
    for (const [client, runs] of [["buildkit-node", rebuild.node], ["buildctl", rebuild.buildctl]]) {
      if (runs.length === 0) continue;
      const sent = Math.max(...runs.map((r) => r.sent));
      console.log(
        `- rebuild, ${client}: sent ${fmt(sent)} B for a ${fmt(runs[0].changed)} B change and a listing of ${fmt(rebuild.tree.entries)} entries ` +
          `(≤ ~${fmt(listing + runs[0].changed)} B) ${verdict(sent <= listing + runs[0].changed)}`,
      );
    }
  }
}

function range(items, value, digits = 2) {
  const values = items.map(value).filter((v) => Number.isFinite(v));
  if (values.length === 0) return "n/a";
  const min = Math.min(...values);
  const max = Math.max(...values);
  return min.toFixed(digits) === max.toFixed(digits) ? min.toFixed(digits) : `${min.toFixed(digits)}–${max.toFixed(digits)}`;
}

function verdict(ok) {
  return ok ? "MET" : "NOT MET";
}
function fmt(n) {
  return n.toLocaleString("en-US");
}
function mib(bytes) {
  return (bytes / MiB).toFixed(1);
}
function seconds(ms) {
  return (ms / 1000).toFixed(2);
}

async function readJson(file) {
  try {
    return JSON.parse(await fs.readFile(file, "utf8"));
  } catch {
    return undefined;
  }
}

// ─── the child: one buildkit-node upload, one JSON line ─────────────────────

/**
 * The CPU time this process spent inside its longest stall of the event loop.
 * On a busy machine the loop also stalls while the process waits for a CPU;
 * what it spent itself in a stall is what blocked the loop.
 */
function watchStalls() {
  let last = performance.now();
  let lastCpu = process.cpuUsage();
  let busyMaxMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    const cpu = process.cpuUsage();
    if (now - last > 20) busyMaxMs = Math.max(busyMaxMs, (cpu.user - lastCpu.user + cpu.system - lastCpu.system) / 1000);
    last = now;
    lastCpu = cpu;
  }, 5);
  return {
    get busyMaxMs() {
      return busyMaxMs;
    },
    stop: () => clearInterval(timer),
  };
}

async function runChild(opts) {
  const { connect } = await import("buildkit-node");
  const bk = await connect(process.env.BUILDKIT_HOST ? undefined : "docker://");
  try {
    const loop = monitorEventLoopDelay({ resolution: 5 });
    const stalls = watchStalls();
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    loop.enable();
    const run = bk.build({ context: opts.child, dockerfileContent: DOCKERFILE, noCache: true });
    let sent = 0;
    for await (const event of run.events) {
      if (event.type === "progress" && event.id.startsWith("transferring context")) sent = Math.max(sent, event.current);
    }
    await run; // a failed build rejects: the child exits non-zero
    loop.disable();
    stalls.stop();
    const cpu = process.cpuUsage(cpuBefore);
    console.log(
      JSON.stringify({
        wallMs: performance.now() - started,
        cpuMs: (cpu.user + cpu.system) / 1000,
        rssKiB: process.resourceUsage().maxRSS,
        loopDelayMaxMs: loop.max / 1e6,
        loopBusyMaxMs: stalls.busyMaxMs,
        sent,
      }),
    );
  } finally {
    await bk.close();
  }
}

// Last, so that every declaration above is initialized before it runs.
const options = parseOptions();
if (options.child) await runChild(options);
else await runParent(options);
