// Small text helpers shared by the renderers.

/** `0.4s`, `12.3s`, as buildx prints step times. */
export function formatSeconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}

const byteUnits = ["B", "kB", "MB", "GB", "TB", "PB"];

/** Decimal units with three significant digits, as buildx (go-units) prints sizes: `512B`, `2.10kB`, `41.9MB`. */
export function formatBytes(bytes: number): string {
  let value = Math.max(0, bytes);
  let unit = 0;
  while (unit < byteUnits.length - 1 && Number(value.toPrecision(3)) >= 1000) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)}B` : `${value.toPrecision(3)}${byteUnits[unit]}`;
}

/** `[linux/arm64] ` for events of a multi-platform build, else nothing. */
export function platformPrefix(platform: string | undefined): string {
  return platform ? `[${platform}] ` : "";
}

/** Cuts `text` to `width` characters (code points), marking the cut with `…`. */
export function truncate(text: string, width: number): string {
  if (width <= 0) return "";
  const chars = Array.from(text);
  if (chars.length <= width) return text;
  return `${chars.slice(0, Math.max(0, width - 1)).join("")}…`;
}

/** Length in code points: what the renderers treat as the width on screen. */
export function visibleLength(text: string): number {
  return Array.from(text).length;
}

/** Control characters a step's output may carry; they would break a line-based display. */
const controlCharacters = /\u001b\[[0-9;?]*[ -\/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)|[\u0000-\u0008\u000b-\u001f\u007f]/g;

/**
 * Text made safe to print on one line: ANSI sequences and control characters
 * removed, tabs expanded, line breaks (a heredoc step's name) made spaces.
 */
export function sanitizeLine(line: string): string {
  return line.replace(/\r?\n/g, " ").replace(/\t/g, "    ").replace(controlCharacters, "");
}

const sgr = { bold: "1", dim: "2", red: "31", yellow: "33", blue: "34", cyan: "36" } as const;
export type Style = keyof typeof sgr;

/** Wraps `text` in an SGR color when `enabled`. */
export function paint(text: string, style: Style | undefined, enabled: boolean): string {
  return enabled && style && text ? `\u001b[${sgr[style]}m${text}\u001b[0m` : text;
}
