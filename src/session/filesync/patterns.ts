// `.dockerignore` / include pattern matching with the semantics of Go's
// moby/patternmatcher, which fsutil uses on the sending side:
//
// - `*` matches within one path component, `?` one character of it,
//   `[...]` a character class (`^` negates), `\` escapes the next character;
// - `**` matches any number of components (`**/` eats its slash; a trailing
//   `**` matches everything below); a pattern that starts with `**` and has
//   nothing special after it is a plain suffix test, as in Go (so `**foo`
//   also matches `barfoo`);
// - patterns are trimmed and cleaned (`a/./b/` → `a/b`), a leading `/` is
//   dropped, `!` marks an exception;
// - the last pattern that matches a path decides, and a pattern that matches
//   a parent directory matches everything under it.
//
// Go turns patterns into regular expressions; a few oddities of that
// translation are not copied: an escaped letter (`\d`) is that letter, `^`
// outside a class is a literal character, and `*`/`?` inside a class are
// literal characters.
import { BuildKitNodeError } from "../../errors.js";
import { cleanPath } from "./tree-path.js";

type MatchKind = "exact" | "prefix" | "suffix" | "regexp";

interface CompiledPattern {
  kind: MatchKind;
  /** Anchored regular-expression source (used when kind is "regexp"). */
  source: string;
  /** A character class that can match "/" (e.g. `[^a]`) lets a component-wise check go wrong. */
  classMayMatchSlash: boolean;
}

class PatternSyntaxError extends Error {}

/** One cleaned pattern. */
export class Pattern {
  /** The cleaned pattern text, without the leading `!`. */
  readonly text: string;
  /** `!pattern`: re-includes what earlier patterns matched. */
  readonly exception: boolean;
  private readonly compiled: CompiledPattern;
  private readonly regexp: RegExp | undefined;
  private componentMatchers: Array<((name: string) => boolean) | undefined> | undefined;

  constructor(text: string, exception: boolean) {
    this.text = text;
    this.exception = exception;
    try {
      this.compiled = compile(text);
    } catch (err) {
      const why = err instanceof PatternSyntaxError ? err.message : String(err);
      throw new BuildKitNodeError("INVALID_ARGUMENT", `invalid pattern ${JSON.stringify((exception ? "!" : "") + text)}: ${why}`);
    }
    this.regexp = this.compiled.kind === "regexp" ? new RegExp(this.compiled.source, "u") : undefined;
  }

  /** Whether the pattern matches `path` itself (no parent rule). */
  matches(path: string): boolean {
    switch (this.compiled.kind) {
      case "exact":
        return path === this.text;
      case "prefix":
        return path.startsWith(this.text.slice(0, -2));
      case "suffix": {
        const suffix = this.text.slice(2);
        // `**/foo` also matches a top-level `foo`.
        return path.endsWith(suffix) || (suffix.startsWith("/") && path === suffix.slice(1));
      }
      case "regexp":
        return this.regexp!.test(path);
    }
  }

  /**
   * Whether the pattern could match some path strictly inside `dir`. May say
   * yes when unsure (the walker then looks inside), never no when it could.
   */
  couldMatchInside(dir: string): boolean {
    const dirSlash = `${dir}/`;
    switch (this.compiled.kind) {
      case "exact":
        return this.text.startsWith(dirSlash);
      case "prefix": {
        const prefix = this.text.slice(0, -2);
        return prefix.startsWith(dirSlash) || dirSlash.startsWith(prefix);
      }
      case "suffix":
        return true;
      case "regexp":
        return this.compiled.classMayMatchSlash || this.componentsCouldMatchInside(dir.split("/"));
    }
  }

  /** Matches `dir`'s components one by one against the pattern's. */
  private componentsCouldMatchInside(dirComponents: string[]): boolean {
    const components = this.text.split("/");
    this.componentMatchers ??= components.map(componentMatcher);
    for (let i = 0; i < dirComponents.length; i++) {
      const component = components[i];
      if (component === undefined) return false; // the pattern ends at or above dir
      if (component.includes("**")) return true; // may span any depth
      const matcher = this.componentMatchers[i];
      if (!matcher) return true; // could not judge this component alone
      if (!matcher(dirComponents[i]!)) return false;
    }
    return components.length > dirComponents.length;
  }
}

/** A matcher for one pattern component, or undefined if it cannot be judged alone (a split escape or class). */
function componentMatcher(component: string): ((name: string) => boolean) | undefined {
  try {
    const compiled = compile(component);
    if (compiled.kind !== "regexp") return (name) => name === component;
    const regexp = new RegExp(compiled.source, "u");
    return (name) => regexp.test(name);
  } catch {
    return undefined;
  }
}

/** An ordered list of patterns; see the file comment for the rules. */
export class PatternMatcher {
  readonly patterns: readonly Pattern[];

  /** @throws BuildKitNodeError INVALID_ARGUMENT for a malformed pattern (e.g. `[`, `!`, a trailing `\`). */
  constructor(patterns: readonly string[]) {
    const parsed: Pattern[] = [];
    for (const raw of patterns) {
      let text = raw.trim();
      if (text === "") continue;
      const exception = text.startsWith("!");
      if (exception) {
        text = text.slice(1).trim();
        if (text === "") throw new BuildKitNodeError("INVALID_ARGUMENT", `illegal exclusion pattern: "!"`);
      }
      text = cleanPath(text);
      if (text.length > 1 && text.startsWith("/")) text = text.slice(1);
      parsed.push(new Pattern(text, exception));
    }
    this.patterns = parsed;
  }

  get isEmpty(): boolean {
    return this.patterns.length === 0;
  }

  /** Whether any pattern is an exception (`!`). */
  get hasExceptions(): boolean {
    return this.patterns.some((p) => p.exception);
  }

  /**
   * Whether `path` (clean, relative, '/'-separated) is matched: the last
   * pattern that matches it or one of its parent directories decides.
   */
  matches(path: string): boolean {
    const parents = parentPrefixes(path);
    let matched = false;
    for (const pattern of this.patterns) {
      // Only a pattern that could change the answer is evaluated.
      if (pattern.exception !== matched) continue;
      if (pattern.matches(path) || parents.some((parent) => pattern.matches(parent))) matched = !pattern.exception;
    }
    return matched;
  }

  /**
   * Whether a pattern could match something strictly inside `dir`:
   * `"exceptions"` asks about `!` patterns (can anything under an excluded
   * directory be re-included?), `"patterns"` about the others (can anything
   * under a directory that no include pattern matches be included?). A "no"
   * lets the walker skip the directory; a "yes" may be a false alarm.
   */
  mightMatchInside(dir: string, which: "exceptions" | "patterns" = "exceptions"): boolean {
    const wantExceptions = which === "exceptions";
    return this.patterns.some((p) => p.exception === wantExceptions && p.couldMatchInside(dir));
  }
}

/** The parent directories of `path`, outermost first: "a/b/c" → ["a", "a/b"] (as Go's filepath.Dir + split). */
function parentPrefixes(path: string): string[] {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return [];
  const parent = cleanPath(path.slice(0, slash + 1));
  if (parent === ".") return [];
  const parts = parent.split("/");
  return parts.map((_, i) => parts.slice(0, i + 1).join("/"));
}

/** Translates a cleaned pattern into a match kind and, for "regexp", an anchored expression. */
function compile(text: string): CompiledPattern {
  const chars = Array.from(text); // code points, as Go scans runes
  let kind: MatchKind = "exact";
  let source = "";
  let classMayMatchSlash = false;
  let pos = 0;
  for (let token = 0; pos < chars.length; token++) {
    const ch = chars[pos++]!;
    if (ch === "*") {
      if (chars[pos] === "*") {
        pos++;
        if (chars[pos] === "/") pos++; // `**/` is `**`
        if (pos >= chars.length) {
          // A trailing `**` matches everything below.
          if (kind === "exact") kind = "prefix";
          else {
            source += ".*";
            kind = "regexp";
          }
        } else {
          source += "(?:.*/)?";
          kind = "regexp";
        }
        if (token === 0) kind = "suffix";
      } else {
        source += "[^/]*";
        kind = "regexp";
      }
    } else if (ch === "?") {
      source += "[^/]";
      kind = "regexp";
    } else if (ch === "\\") {
      if (pos >= chars.length) throw new PatternSyntaxError("trailing backslash");
      source += literal(chars[pos++]!);
      kind = "regexp";
    } else if (ch === "[") {
      const parsed = characterClass(chars, pos);
      source += parsed.source;
      classMayMatchSlash ||= parsed.mayMatchSlash;
      pos = parsed.end;
      kind = "regexp";
    } else if (ch === "]") {
      source += literal(ch);
      kind = "regexp";
    } else {
      source += literal(ch);
    }
  }
  return { kind, source: `^${source}$`, classMayMatchSlash };
}

/**
 * Parses a class that starts after `[` with Go's filepath.Match grammar:
 * optional `^`, then one or more `c` or `lo-hi` (each may be `\`-escaped;
 * an unescaped `-` or `]` there is an error), then `]`.
 */
function characterClass(chars: string[], start: number): { source: string; end: number; mayMatchSlash: boolean } {
  let pos = start;
  const negated = chars[pos] === "^";
  if (negated) pos++;
  let source = negated ? "[^" : "[";
  let mayMatchSlash = negated;
  const member = (): string => {
    const c = chars[pos];
    if (c === undefined) throw new PatternSyntaxError("unterminated character class");
    if (c === "-" || c === "]") throw new PatternSyntaxError(`unexpected ${JSON.stringify(c)} in character class`);
    pos++;
    if (c !== "\\") return c;
    const escaped = chars[pos++];
    if (escaped === undefined) throw new PatternSyntaxError("unterminated character class");
    return escaped;
  };
  for (let count = 0; ; count++) {
    if (pos >= chars.length) throw new PatternSyntaxError("unterminated character class");
    if (chars[pos] === "]" && count > 0) {
      pos++;
      break;
    }
    const lo = member();
    let hi = lo;
    if (chars[pos] === "-") {
      pos++;
      hi = member();
    }
    const loPoint = lo.codePointAt(0)!;
    const hiPoint = hi.codePointAt(0)!;
    if (loPoint > hiPoint) throw new PatternSyntaxError(`bad range ${lo}-${hi} in character class`);
    if (loPoint <= 0x2f && hiPoint >= 0x2f) mayMatchSlash = true;
    source += lo === hi ? literal(lo) : `${literal(lo)}-${literal(hi)}`;
  }
  return { source: `${source}]`, end: pos, mayMatchSlash };
}

/** One character as a regular-expression literal (valid in and out of classes with the `u` flag). */
function literal(ch: string): string {
  return `\\u{${ch.codePointAt(0)!.toString(16)}}`;
}
