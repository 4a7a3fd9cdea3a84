// The build lifecycle step by step: register a build, acquire a machine,
// connect over mTLS, build, report the result, release the machine.
//   node examples/depot/build-lifecycle.mjs [push|load|local [DIR]]
//   push: to 127.0.0.1:5000/depot-example (the local registry);
//   load: into the local Docker Engine; local: files into DIR (default ./out).
import { openDepot, printProgress, projectFor } from "./env.mjs";

const mode = process.argv[2] ?? "push";
const outputs = {
  push: [{ type: "image", name: "127.0.0.1:5000/depot-example:latest", push: true, insecure: true }],
  load: [{ type: "docker", load: true, name: "depot-example:latest" }],
  local: [{ type: "local", dest: process.argv[3] ?? "out" }],
}[mode];
if (!outputs) throw new Error(`unknown mode ${mode}: use push, load or local`);

const { depot, where, close } = await openDepot();
try {
  console.log(`Depot: ${where}`);
  const projectId = await projectFor(depot, "build-lifecycle-example");
  const build = await depot.builds.create({ projectId, tags: mode === "push" ? [outputs[0].name] : [] });
  console.log(`build ${build.id} ${build.url}`);
  let machine;
  try {
    // Inside the try: a machine that never comes still finishes the build (as an error).
    machine = await build.acquireMachine("amd64");
    await machine.connect(); // mTLS, readiness-probed (machine.build would do it too)
    console.log(`machine ${machine.endpoint} (server name ${machine.serverName})`);
    // Its progress also goes to Depot's UI, and its steps' timings with finish().
    const run = machine.build({ context: "fixtures/hello", outputs });
    await printProgress(run.events);
    const result = await run;
    await build.finish();
    console.log(`done: ${result.digest ?? "(no image digest)"}`);
  } catch (err) {
    await build.finish(err); // error or canceled, exactly once
    throw err;
  } finally {
    await machine?.release(); // finish() releases it too; idempotent
  }
} finally {
  await close();
}
