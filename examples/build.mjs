// Builds a directory into an image and pushes it, showing progress.
//   node examples/build.mjs [CONTEXT] [IMAGE] [ADDRESS]
// Defaults: fixtures/hello, 127.0.0.1:5000/hello:latest, and the BuildKit
// connect() finds (BUILDKIT_HOST, buildkitd's socket, then dockerd's).
// Progress: a live view on a terminal, plain lines otherwise (or set
// BUILDKIT_PROGRESS=plain|tty|rawjson).
import { connect, createRenderer, BuildError } from "buildkit-node";

const [context = "fixtures/hello", image = "127.0.0.1:5000/hello:latest", address] = process.argv.slice(2);

const controller = new AbortController();
process.once("SIGINT", () => controller.abort(new Error("interrupted")));

const bk = await connect(address);
console.log(`building ${context} on ${bk.address}`);
const progress = createRenderer(process.env.BUILDKIT_PROGRESS ?? "auto", process.stdout);
try {
  const run = bk.build({
    context,
    outputs: [{ type: "image", name: image, push: true, insecure: image.startsWith("127.0.0.1") }],
    signal: controller.signal,
  });
  for await (const event of run.events) progress.event(event);
  const result = await run.catch((error) => {
    progress.done({ error });
    throw error;
  });
  progress.done();
  console.log(`pushed ${image} ${result.digest ?? ""}`);
} catch (err) {
  if (!(err instanceof BuildError)) throw err;
  console.error(`\n${err.message}`);
  process.exitCode = 1;
} finally {
  await bk.close();
}
