import { connect } from "./dist/index.js";
import { readFileSync } from "node:fs";
process.on("unhandledRejection", (e) => { console.log("UNHANDLED", e?.constructor?.name, e?.message, e?.stack); });
const tls = { ca: readFileSync(process.env.BUILDKIT_TLS_CA, "utf8"), cert: readFileSync(process.env.BUILDKIT_TLS_CERT, "utf8"), key: readFileSync(process.env.BUILDKIT_TLS_KEY, "utf8"), serverName: process.env.BUILDKIT_TLS_SERVER_NAME };
const bk = await connect("tcp://127.0.0.1:1234", { tls });
try { await bk.build({ context: { files: { Dockerfile: `FROM 127.0.0.1:5000/busybox:latest\n` } }, buildArgs: { BIG: "x".repeat(17 * 1024 * 1024) } }); } catch (e) { console.log(e.name, e.code, e.message); }
await new Promise(r => setTimeout(r, 500));
await bk.close();
