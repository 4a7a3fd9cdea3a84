import { homedir } from "node:os";
import { join } from "node:path";

/** Expands a leading `~` or `~/` to the home directory, as a shell would; other paths pass unchanged. */
export function expandHome(path: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return join(homedir(), path.slice(2));
  return path;
}
