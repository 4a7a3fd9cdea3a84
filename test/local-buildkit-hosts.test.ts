// scripts/local-buildkit.sh's Depot registry alias, as far as it edits files:
// the /etc/hosts line `up` adds (BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS=1) and
// `down` removes, and the buildkitd config that line asks for. Run on a copy
// of a hosts file (BUILDKIT_NODE_HOSTS_FILE), with the script sourced, so
// neither root nor the shared daemons are involved; `up` and `down` call
// these same functions.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "./support/build-helpers.js";

const SCRIPT = fileURLToPath(new URL("../scripts/local-buildkit.sh", import.meta.url));
const ALIAS_LINE = "127.0.0.1 registry.depot.dev # buildkit-node: Depot registry alias (local-buildkit.sh down removes it)";
const scratch = tempDir("hosts");
afterAll(() => scratch.remove());

let files = 0;
/** A hosts file holding `text`, its path. */
function hostsFile(text: string): string {
  const path = join(scratch.path, `hosts-${++files}`);
  writeFileSync(path, text);
  return path;
}

/** Runs the script's functions (`calls`, one shell line) against `hosts`; gives their stdout. */
function script(hosts: string, calls: string): string {
  const env: NodeJS.ProcessEnv = { ...process.env, BUILDKIT_NODE_HOSTS_FILE: hosts };
  delete env.BUILDKIT_NODE_DEPOT_REGISTRY_ALIAS;
  return execFileSync("bash", ["-c", `source "$1"; ${calls}`, "local-buildkit-hosts-test", SCRIPT], { env, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
}

const up = (hosts: string) => script(hosts, "add_depot_alias_to_hosts");
const down = (hosts: string) => script(hosts, "remove_depot_alias_from_hosts");

describe("local-buildkit.sh: registry.depot.dev in /etc/hosts", () => {
  it.each([
    ["lines ending in a newline", "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"],
    ["blank lines and comments at the end", "127.0.0.1 localhost\n\n# added by hand\n\n\n"],
    ["an empty file", ""],
  ])("up adds the line once (run twice), down leaves %s as it was, byte for byte", (_, before) => {
    const hosts = hostsFile(before);
    up(hosts);
    up(hosts);
    const lines = readFileSync(hosts, "utf8").split("\n");
    expect(lines.filter((l) => l === ALIAS_LINE)).toHaveLength(1);
    expect(readFileSync(hosts, "utf8")).toBe(`${before}${ALIAS_LINE}\n`);
    down(hosts);
    expect(readFileSync(hosts, "utf8")).toBe(before);
  });

  it("up puts the line on a line of its own after a last line without a newline; down gives that line its newline only", () => {
    const hosts = hostsFile("127.0.0.1 localhost\n10.0.0.5 builder");
    up(hosts);
    expect(readFileSync(hosts, "utf8")).toBe(`127.0.0.1 localhost\n10.0.0.5 builder\n${ALIAS_LINE}\n`);
    down(hosts);
    expect(readFileSync(hosts, "utf8")).toBe("127.0.0.1 localhost\n10.0.0.5 builder\n");
  });

  it("down removes its own line only: a registry.depot.dev line someone wrote stays, and without the alias nothing changes", () => {
    const own = "127.0.0.1 localhost\n127.0.0.1 registry.depot.dev\n";
    const hosts = hostsFile(own);
    down(hosts);
    expect(readFileSync(hosts, "utf8")).toBe(own);
    up(hosts);
    down(hosts);
    expect(readFileSync(hosts, "utf8")).toBe(own);
  });

  it("the buildkitd config asks for plain HTTP to registry.depot.dev while the line is there, the same text each time (up restarts buildkitd only when it changes)", () => {
    const hosts = hostsFile("127.0.0.1 localhost\n");
    const plain = script(hosts, "buildkitd_config");
    expect(plain).not.toContain("registry.depot.dev");
    up(hosts);
    const withAlias = script(hosts, "buildkitd_config");
    expect(withAlias).toContain('[registry."registry.depot.dev"]\n  http = true\n');
    expect(script(hosts, "buildkitd_config")).toBe(withAlias);
    down(hosts);
    expect(script(hosts, "buildkitd_config")).toBe(plain);
  });
});
