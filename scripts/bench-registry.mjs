// Benchmark of the registry client on one image with a large layer (a tar
// holding one random file, default 512 MiB, uncompressed), pushed once to the
// local plain registry (127.0.0.1:5000):
//
//   copy     copy to the htpasswd registry (127.0.0.1:5001): every byte GET → PUT
//   mount    copy to another repository of the same registry: cross-repository mount
//   archive  write it as a docker archive file (then delete it)
//   load     load it into dockerd straight from the registry (POST /images/load)
//
//   npm run bench:registry
//   node scripts/bench-registry.mjs --scenario copy,archive --size-mib 128
//
// Each scenario runs in its own child process (this script with --child), so
// the peak RSS it reports is that scenario's alone: the point is that it stays
// flat whatever the layer's size (the parent does nothing heavy: a child's peak
// RSS starts from its parent's at the fork). The layer is generated once under $BENCH_DIR
// (default <tmpdir>/buildkit-node-bench) and reused.
import { spawn, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as tar from "tar-stream";

const MiB = 1024 * 1024;
const PLAIN = "127.0.0.1:5000";
const AUTH = "127.0.0.1:5001";
const AUTH_CREDENTIALS = { username: "testuser", password: "testpassword" };
const SCENARIOS = ["copy", "mount", "archive", "load"];
/** The target: a transfer's peak RSS, whatever the layer's size. */
const RSS_LIMIT_MIB = 200;

const { values } = parseArgs({
  options: {
    scenario: { type: "string", default: SCENARIOS.join(",") },
    "size-mib": { type: "string", default: "512" },
    child: { type: "string" }, // internal: run one scenario on an image, print JSON
    image: { type: "string" },
  },
});
const sizeMiB = Number(values["size-mib"]);
if (!(sizeMiB > 0)) throw new Error("--size-mib must be a positive number");
const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "dist", "index.js");

if (values.child) {
  console.log(JSON.stringify(await runScenario(values.child, values.image)));
} else {
  const scenarios = values.scenario.split(",").map((s) => s.trim());
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
  const { image } = await child("prepare", "");
  console.log(`image ${image} (one ${sizeMiB} MiB layer)\n`);
  console.log("| scenario | bytes moved | wall | speed | peak RSS |");
  console.log("|---|---|---|---|---|");
  for (const scenario of scenarios) {
    const r = await child(scenario, image);
    const speed = r.bytes > 0 ? `${(r.bytes / MiB / r.seconds).toFixed(0)} MiB/s` : "—";
    const flag = r.peakRssMiB > RSS_LIMIT_MIB ? ` (over the ${RSS_LIMIT_MIB} MiB target)` : "";
    console.log(`| ${scenario} | ${(r.bytes / MiB).toFixed(0)} MiB | ${r.seconds.toFixed(1)} s | ${speed} | ${r.peakRssMiB.toFixed(0)} MiB${flag} |`);
  }
}

/** Makes (once) a layer tar of one random file, and pushes it with a config as an image. */
async function pushBenchImage(size) {
  const { RegistryClient } = await import(dist);
  const dir = path.resolve(process.env.BENCH_DIR || path.join(os.tmpdir(), "buildkit-node-bench"));
  await fs.mkdir(dir, { recursive: true });
  const layerPath = path.join(dir, `registry-layer-${size}MiB.tar`);
  if (!(await fs.stat(layerPath).catch(() => undefined))) {
    const pack = tar.pack();
    const writing = pipeline(pack, createWriteStream(`${layerPath}.partial`));
    const entry = pack.entry({ name: "random.bin", size: size * MiB, mode: 0o644, mtime: new Date(0) });
    for (let i = 0; i < size; i++) if (!entry.write(randomBytes(MiB))) await new Promise((r) => entry.once("drain", r));
    entry.end();
    pack.finalize();
    await writing;
    await fs.rename(`${layerPath}.partial`, layerPath);
  }
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(layerPath)) hash.update(chunk);
  const layer = { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: `sha256:${hash.digest("hex")}`, size: (await fs.stat(layerPath)).size };
  const config = Buffer.from(
    JSON.stringify({ architecture: process.arch === "arm64" ? "arm64" : "amd64", os: "linux", config: { Cmd: ["/random.bin"] }, rootfs: { type: "layers", diff_ids: [layer.digest] } }),
  );
  const configDescriptor = { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${createHash("sha256").update(config).digest("hex")}`, size: config.length };
  const registry = new RegistryClient({ auth: {} });
  const image = `${PLAIN}/bkn-bench-registry-${size}mib:v1`;
  await registry.pushBlob(image, layer, () => createReadStream(layerPath));
  await registry.pushBlob(image, configDescriptor, config);
  const manifest = { schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: configDescriptor, layers: [layer] };
  await registry.putManifest(image, { mediaType: manifest.mediaType, bytes: Buffer.from(JSON.stringify(manifest)) });
  return image;
}

function child(scenario, image) {
  return new Promise((resolve, reject) => {
    const args = [fileURLToPath(import.meta.url), "--child", scenario, "--image", image, "--size-mib", String(sizeMiB)];
    const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    proc.stdout.on("data", (d) => (out += d));
    proc.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`${scenario} exited with ${code}`))));
  });
}

async function runScenario(scenario, image) {
  const { RegistryClient, loadRegistryImage } = await import(dist);
  const registry = new RegistryClient({ auth: { [AUTH]: AUTH_CREDENTIALS } });
  const unique = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  let bytes = 0;
  const cleanups = [];
  const start = process.hrtime.bigint();
  switch (scenario) {
    case "prepare":
      return { image: await pushBenchImage(sizeMiB), peakRssMiB: process.resourceUsage().maxRSS / 1024 };
    case "copy":
      bytes = (await registry.copyImage(image, `${AUTH}/bkn-bench-copy-${unique}:v1`)).bytesCopied;
      break;
    case "mount":
      await registry.copyImage(image, `${PLAIN}/bkn-bench-mount-${unique}:v1`);
      break;
    case "archive": {
      const dest = path.join(os.tmpdir(), `bkn-bench-archive-${unique}.tar`);
      await registry.writeImageArchive(image, { format: "docker", dest });
      bytes = (await fs.stat(dest)).size;
      await fs.rm(dest);
      break;
    }
    case "load": {
      const tag = `bkn-bench-load-${unique}:v1`;
      await loadRegistryImage(registry, image, {
        names: [tag],
        onProgress: (e) => {
          if (e.status === "copied") bytes += e.size;
        },
      });
      cleanups.push(() => execFileSync("/usr/bin/docker", ["rmi", tag], { stdio: "ignore" }));
      break;
    }
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  for (const cleanup of cleanups) cleanup();
  return { bytes, seconds, peakRssMiB: process.resourceUsage().maxRSS / 1024 };
}
