// One call: build for amd64 and arm64 on Depot machines and push one image
// index. Registry credentials: REGISTRY_USERNAME / REGISTRY_PASSWORD for
// REGISTRY_URL's host, else ~/.docker/config.json.
//   node examples/depot/build-and-push.mjs [IMAGE]
import { openDepot, printProgress, projectFor } from "./env.mjs";

const image = process.argv[2] ?? "127.0.0.1:5000/depot-multi:latest";
const { REGISTRY_USERNAME: username, REGISTRY_PASSWORD: password, REGISTRY_URL: url = "https://index.docker.io/v1/" } = process.env;
const registryAuth = username && password ? { [new URL(url).host]: { username, password } } : "docker-config";

const { depot, where, close } = await openDepot();
try {
  console.log(`Depot: ${where}`);
  const run = depot.build({
    projectId: await projectFor(depot, "build-and-push-example"),
    platforms: ["linux/amd64", "linux/arm64"],
    // No RUN step: each machine builds natively, nothing to emulate.
    context: { files: { "hello.txt": "hello from two platforms\n" } },
    dockerfileContent: "FROM scratch\nCOPY hello.txt /\n",
    registryAuth,
    outputs: [{ type: "image", name: image, push: true, insecure: image.startsWith("127.0.0.1") }],
  });
  await printProgress(run.events);
  const result = await run;
  console.log(`pushed ${image} ${result.digest} (build ${result.buildId}: ${result.platforms.map((p) => p.platform).join(", ")})`);
} finally {
  await close();
}
