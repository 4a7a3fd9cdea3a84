// Turns the last frame of a terminal recording (util-linux `script` output
// of `buildkit-node build` with tty progress) into an SVG picture.
//   node scripts/tty-to-svg.mjs RECORDING > docs/tty-progress.svg
import { readFileSync } from "node:fs";

const raw = readFileSync(process.argv[2], "utf8");
// The tty view redraws each frame after moving the cursor up: keep the last one.
const lastFrame = raw.split(/\x1b\[\d+A\r?/).at(-1) ?? raw;
const visible = (line) => line.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").trim() !== "";
const lines = lastFrame.split(/\r?\n/).map((l) => l.replace(/\r/g, ""));
while (lines.length > 0 && !visible(lines.at(-1))) lines.pop();

const colors = { 31: "#f14c4c", 32: "#23d18b", 33: "#e5e510", 34: "#3b8eea", 36: "#29b8db", 90: "#8a8a8a" };
const escape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** One line's text as tspans, following SGR codes (bold, a few colors, reset). */
function spans(line) {
  let style = { color: "#d4d4d4", bold: false };
  let out = "";
  for (const part of line.split(/(\x1b\[[0-9;]*[A-Za-z])/)) {
    const sgr = /^\x1b\[([0-9;]*)m$/.exec(part);
    if (sgr) {
      for (const code of (sgr[1] || "0").split(";").map(Number)) {
        if (code === 0) style = { color: "#d4d4d4", bold: false };
        else if (code === 1) style = { ...style, bold: true };
        else if (colors[code]) style = { ...style, color: colors[code] };
      }
      continue;
    }
    if (part.startsWith("\x1b")) continue; // other control sequences (erase line, …)
    if (part) out += `<tspan fill="${style.color}"${style.bold ? ' font-weight="bold"' : ""}>${escape(part)}</tspan>`;
  }
  return out;
}

const width = 8.4 * Math.max(...lines.map((l) => l.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").length)) + 32;
const height = 20 * lines.length + 32;
const text = lines.map((line, i) => `  <text x="16" y="${28 + 20 * i}" xml:space="preserve">${spans(line)}</text>`).join("\n");
process.stdout.write(`<svg xmlns="http://www.w3.org/2000/svg" width="${Math.ceil(width)}" height="${height}" font-family="DejaVu Sans Mono, Menlo, monospace" font-size="14">
  <rect width="100%" height="100%" rx="6" fill="#1e1e1e"/>
${text}
</svg>
`);
