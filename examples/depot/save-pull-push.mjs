// Save a build in Depot's registry, then get it back later by its build ID:
// as an OCI archive on disk, and copied on to another registry.
//   node examples/depot/save-pull-push.mjs [TARGET_IMAGE]
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDepot, printProgress, projectFor } from "./env.mjs";

const target = process.argv[2] ?? "127.0.0.1:5000/depot-saved:latest";

const { depot, where, close } = await openDepot();
const dir = await mkdtemp(join(tmpdir(), "depot-save-example-"));
try {
  console.log(`Depot: ${where}`);
  const run = depot.build({
    projectId: await projectFor(depot, "save-example"),
    context: { files: { "hello.txt": "saved in Depot's registry\n" } },
    dockerfileContent: "FROM scratch\nCOPY hello.txt /\n",
    save: true,
    saveTags: ["latest"],
  });
  await printProgress(run.events);
  const { buildId, saved } = await run;
  console.log(`saved ${saved.reference} (build ${buildId})`);

  // Later, anywhere, with only the build ID:
  const dest = join(dir, "image.tar");
  const pulled = await depot.pull(buildId, { dest, format: "oci" });
  console.log(`pulled ${pulled.descriptor.digest} into an OCI archive`);
  const { pushed } = await depot.push(buildId, { tag: target });
  console.log(`pushed ${pushed[0].name} ${pushed[0].digest}`);
} finally {
  await rm(dir, { recursive: true, force: true });
  await close();
}
