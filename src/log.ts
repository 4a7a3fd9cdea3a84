/**
 * Debug logging, off by default. `DEBUG=buildkit-node*` turns on every
 * namespace, `DEBUG=buildkit-node:transport` one of them (comma-separated
 * patterns, `*` as a wildcard, as the `debug` package reads them). Lines go
 * to stderr. Callers never pass secrets, tokens or keys to a logger.
 */
export type Logger = (message: string) => void;

function enabled(namespace: string): boolean {
  const patterns = (process.env.DEBUG ?? "").split(/[\s,]+/).filter(Boolean);
  let on = false;
  for (const pattern of patterns) {
    const negate = pattern.startsWith("-");
    const body = negate ? pattern.slice(1) : pattern;
    const re = new RegExp(`^${body.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`);
    if (re.test(namespace)) on = !negate;
  }
  return on;
}

export function createLogger(area: string): Logger {
  const namespace = `buildkit-node:${area}`;
  if (!enabled(namespace)) return () => {};
  return (message) => process.stderr.write(`${new Date().toISOString()} ${namespace} ${message}\n`);
}
