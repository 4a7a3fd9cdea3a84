// Smoke test of the built package as users load it: every entry point of the
// export map, through import and through require (require(esm), Node >= 20.19).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const expected = {
  "buildkit-node": ["connect", "BuildKitNodeError", "BuildError", "TransportError", "createRenderer"],
  "buildkit-node/depot": ["BuildKitNodeError"],
  "buildkit-node/testing": ["startBuildKitFront", "createCertificateAuthority"],
};

// The registry client's entry points.
expected["buildkit-node"].push("RegistryClient", "RegistryError", "parseImageReference", "loadRegistryImage");
// The fault relay for users' own tests.
expected["buildkit-node/testing"].push("startFaultRelay");
for (const [specifier, names] of Object.entries(expected)) {
  const imported = await import(specifier);
  const required = require(specifier);
  for (const name of names) {
    if (typeof imported[name] !== "function") throw new Error(`import("${specifier}") lacks ${name}`);
    if (required[name] !== imported[name]) throw new Error(`require("${specifier}") lacks ${name}`);
  }
}
// Made by connect() and build() only: exported as types, never as values.
const typeOnly = { "buildkit-node": ["BuildKitClient", "BuildRun"], "buildkit-node/depot": ["BuildKitClient", "BuildRun"] };
for (const [specifier, names] of Object.entries(typeOnly)) {
  const imported = await import(specifier);
  for (const name of names) if (name in imported) throw new Error(`"${specifier}" exports ${name} as a value; it must be a type only`);
}
console.log(`exports ok: ${Object.keys(expected).join(", ")}`);
