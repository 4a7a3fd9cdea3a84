// Builds a directory into an image and pushes it, printing progress.
//   node examples/build.mjs [CONTEXT] [IMAGE] [ADDRESS]
// Defaults: fixtures/hello, 127.0.0.1:5000/hello:latest, and the BuildKit
// connect() finds (BUILDKIT_HOST, buildkitd's socket, then dockerd's).
import { connect, BuildError } from "buildkit-node";

const [context = "fixtures/hello", image = "127.0.0.1:5000/hello:latest", address] = process.argv.slice(2);

const controller = new AbortController();
process.once("SIGINT", () => controller.abort(new Error("interrupted")));

const bk = await connect(address);
console.log(`building ${context} on ${bk.address}`);
const started = Date.now();
try {
  const run = bk.build({
    context,
    outputs: [{ type: "image", name: image, push: true, insecure: image.startsWith("127.0.0.1") }],
    signal: controller.signal,
  });
  for await (const event of run.events) {
    const at = `${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s`;
    switch (event.type) {
      case "vertex.started":
        console.log(`${at} ${event.name}`);
        break;
      case "vertex.cached":
        console.log(`${at} ${event.name} CACHED`);
        break;
      case "vertex.completed":
        console.log(`${at} ${event.name} DONE ${((event.durationMs ?? 0) / 1000).toFixed(1)}s`);
        break;
      case "vertex.errored":
        console.log(`${at} ${event.name} ERROR ${event.error}`);
        break;
      case "log":
        console.log(`${at}   │ ${event.line}`);
        break;
      case "warning":
        console.log(`${at} WARNING ${event.message}`);
        break;
    }
  }
  const result = await run;
  console.log(`pushed ${image} ${result.digest ?? ""} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
} catch (err) {
  if (err instanceof BuildError) {
    console.error(`\n${err.message}`);
    process.exitCode = 1;
  } else {
    throw err;
  }
} finally {
  await bk.close();
}
