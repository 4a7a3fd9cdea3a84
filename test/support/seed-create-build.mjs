// Our own script making the calls of Depot's seed tutorial for the build API
// (depot/examples, build-api/nodejs/src/create-build.js): @depot/sdk-node
// registers a build with the organization token (DEPOT_TOKEN), then the
// `depot` CLI on PATH builds the current directory as that build, handed its
// id and token in DEPOT_BUILD_ID and DEPOT_TOKEN.
//
//   node seed-create-build.mjs PROJECT_ID [load|save|push] [IMAGE_TAG]
//
// Prints "build <id>" first, then lets the CLI write; exits with the CLI's code.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { depot } = require("@depot/sdk-node");

const [projectId, output, imageTag] = process.argv.slice(2);
if (!projectId || (output === "push" && !imageTag)) {
  console.error("usage: node seed-create-build.mjs PROJECT_ID [load|save|push] [IMAGE_TAG]");
  process.exit(2);
}

const headers = { Authorization: `Bearer ${process.env.DEPOT_TOKEN}` };
const { buildId, buildToken } = await depot.build.v1.BuildService.createBuild({ projectId }, { headers });
console.log(`build ${buildId}`);

const args = ["build"];
if (output === "load") args.push("--load");
else if (output === "save") args.push("--save");
else if (output === "push") args.push("--push", "--tag", imageTag);
args.push(".");

const cli = spawn("depot", args, {
  stdio: "inherit",
  env: { ...process.env, DEPOT_PROJECT_ID: projectId, DEPOT_BUILD_ID: buildId, DEPOT_TOKEN: buildToken },
});
cli.on("error", (err) => {
  console.error(`cannot run depot: ${err.message}`);
  process.exit(127);
});
cli.on("close", (code) => process.exit(code ?? 1));
