// Lists the workers of a BuildKit daemon, and what it says about itself.
//   node examples/list-workers.mjs [ADDRESS]
// ADDRESS: unix:///run/buildkit/buildkitd.sock, tcp://host:port, docker://…
// Without one: BUILDKIT_HOST, else buildkitd's socket, else dockerd's.
import { connect } from "buildkit-node";

const bk = await connect(process.argv[2]);
try {
  console.log(`BuildKit at ${bk.address}`);
  const info = await bk.info();
  console.log(info.status === "ok" ? `version: ${info.buildkitVersion.version}` : `version: unknown (${info.message})`);
  for (const worker of await bk.listWorkers()) {
    console.log(`worker ${worker.id}: ${worker.platforms.join(", ")}`);
  }
  const usage = await bk.diskUsage();
  const bytes = usage.reduce((sum, record) => sum + record.size, 0);
  console.log(`build cache: ${usage.length} records, ${(bytes / 1024 / 1024).toFixed(1)} MiB`);
} finally {
  await bk.close();
}
