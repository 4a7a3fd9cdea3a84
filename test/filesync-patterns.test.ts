// PatternMatcher against the behaviour of Go's moby/patternmatcher
// (MatchesOrParentMatches), case by case.
import { describe, expect, it } from "vitest";
import { BuildKitNodeError } from "../src/errors.js";
import { PatternMatcher } from "../src/session/filesync/patterns.js";

/** [pattern, path, matches (the path itself or through a parent dir)] */
const single: Array<[string, string, boolean]> = [
  // `**`
  ["**", "file", true],
  ["**", "dir/file", true],
  ["**/", "file", true],
  ["**/**", "dir/file", true],
  ["dir/**", "dir/file", true],
  ["dir/**", "dir/dir2/file", true],
  ["dir/**", "dir", false],
  ["**/dir", "dir", true],
  ["**/dir", "dir/file", true], // through the parent
  ["**/dir", "a/b/dir", true],
  ["**/dir", "a/bdir", false],
  ["**/dir2/*", "dir/dir2/file", true],
  ["**/dir2/**", "dir/dir2/dir3/file", true],
  ["**file", "file", true],
  ["**file", "dir/file", true],
  ["**file", "dir/xfile", true], // Go's suffix shortcut
  ["**/file", "dir/dir/file", true],
  ["**/file*", "dir/dir/file.txt", true],
  ["**/file*txt", "dir/dir/file.txt", true],
  ["**/**/*.txt", "dir/dir/file.txt", true],
  ["**/**/*.txt2", "dir/dir/file.txt", false],
  ["**/*.txt", "file.txt", true],
  ["a**/*.txt", "a/file.txt", true],
  ["a**/*.txt", "a/dir/dir/file.txt", true],
  ["a**b", "axb", false], // `**` in the middle only spans whole components
  ["a**b", "a/x/b", true],
  ["a/*.txt", "a/dir/file.txt", false],
  ["a/*.txt", "a/file.txt", true],
  ["a/*.txt**", "a/file.txt", true],
  ["**/foo/bar", "foo/bar", true],
  ["**/foo/bar", "dir/dir2/foo/bar", true],
  ["abc/**", "abc/def/ghi", true],
  ["**/.foo", ".foo", true],
  ["**/.foo", "bar.foo", false],
  // `*`, `?`
  ["*", "fileutils.go", true],
  ["*.go", "fileutils.go", true],
  ["*", "dir/file", true], // `*` matches "dir", the parent
  ["*c", "abc", true],
  ["a*", "ab/c", true],
  ["a*/b", "abc/b", true],
  ["a*/b", "a/c/b", false],
  ["a*b*c*d*e*/f", "axbxcxdxexxx/f", true],
  ["a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false],
  ["a*b?c*x", "abxbbxdbxebxczzx", true],
  ["a*b?c*x", "abxbbxdbxebxczzy", false],
  ["a?b", "a☺b", true],
  ["a???b", "a☺b", false],
  ["a?b", "a😀b", true], // one character, even outside the BMP
  ["a?b", "a/b", false],
  ["a*b", "a/b", false],
  ["abc?def", "abcZdef", true],
  ["abc?def", "abcdef", false],
  [".*", ".foo", true],
  [".*", "foo", false],
  ["*x", "xxx", true],
  // classes and escapes
  ["a[b-d]e", "ace", true],
  ["a[b-d]e", "aae", false],
  ["a[b-d]e", "ae", false],
  ["a[^b-d]e", "aze", true],
  ["ab[^c]", "abc", false],
  ["ab[^e-g]", "abc", true],
  ["a[^a]b", "a☺b", true],
  ["[a-ζ]*", "α", true],
  ["*[a-ζ]", "A", false],
  ["[\\]a]", "]", true],
  ["[\\-]", "-", true],
  ["[x\\-]", "-", true],
  ["[x\\-]", "z", false],
  ["[\\-x]", "x", true],
  ["a\\*b", "a*b", true],
  ["a\\*b", "ab", false],
  ["a\\\\", "a\\", true],
  // literal regexp characters
  ["abc.def", "abc.def", true],
  ["abc.def", "abcZdef", false],
  ["a(b)c/def", "a(b)c/def", true],
  ["a(b)c/def", "a(b)c/xyz", false],
  ["a.|)$(}+{bc", "a.|)$(}+{bc", true],
  ["dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true],
  // cleaning
  ["docs/", "docs/README.md", true],
  ["/docs", "docs/README.md", true],
  ["./docs//x/../README.md", "docs/README.md", true],
  ["  docs  ", "docs", true],
  ["docs", "docsx", false],
  // non-ASCII
  ["ünï*", "ünïcode", true],
  ["😀/*", "😀/a b", true],
];

/** [patterns, path, excluded] */
const multiple: Array<[string[], string, boolean]> = [
  [["!fileutils.go", "*.go"], "fileutils.go", true],
  [["*.go", "!fileutils.go"], "fileutils.go", false],
  [["docs", "!docs/README.md"], "docs/README.md", false],
  [["docs/", "!docs/README.md"], "docs/README.md", false],
  [["docs/*", "!docs/README.md"], "docs/README.md", false],
  [["docs", "!docs/README.md"], "docs/other.md", true],
  [["**", "!util/docker/web"], "util/docker/web/foo", false],
  [["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", true],
  [["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false],
  [["node_modules", "!node_modules/keep"], "node_modules/keep/k.js", false],
  [["node_modules", "!node_modules/keep", "**/*.map"], "node_modules/keep/k.js.map", true],
  [["*", "!src"], "src/a/b.ts", false],
  [["*", "!src", "src/*.log"], "src/x.log", true],
  [[], "anything", false],
];

describe("PatternMatcher", () => {
  it.each(single)("%j on %j → %s", (pattern, path, expected) => {
    expect(new PatternMatcher([pattern]).matches(path)).toBe(expected);
  });

  it.each(multiple)("%j on %j → %s", (patterns, path, expected) => {
    expect(new PatternMatcher(patterns).matches(path)).toBe(expected);
  });

  it.each(["[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "[a-b-c]", "[z-a]", "\\", "a\\", "!"])(
    "refuses the malformed pattern %j",
    (pattern) => {
      let caught: unknown;
      try {
        new PatternMatcher([pattern]);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(BuildKitNodeError);
      expect((caught as BuildKitNodeError).code).toBe("INVALID_ARGUMENT");
      expect((caught as Error).message).toContain(pattern === "!" ? "illegal exclusion" : JSON.stringify(pattern));
    },
  );

  it("skips blank patterns and reports exceptions", () => {
    const matcher = new PatternMatcher(["docs", "", "   ", "  !docs/README.md  "]);
    expect(matcher.patterns.map((p) => [p.text, p.exception])).toEqual([
      ["docs", false],
      ["docs/README.md", true],
    ]);
    expect(matcher.hasExceptions).toBe(true);
    expect(new PatternMatcher(["a"]).hasExceptions).toBe(false);
  });

  /** [patterns, dir, could an exception match inside] */
  const exceptionsInside: Array<[string[], string, boolean]> = [
    [["node_modules"], "node_modules", false],
    [["node_modules", "!node_modules/keep"], "node_modules", true],
    [["node_modules", "!node_modules/keep"], "other", false],
    [["node_modules", "!node_modules/keep"], "node_modules/keep", false], // the exception matches the dir itself
    [["a/b", "!a/c/d"], "a/b", false],
    [["*", "!src/*.ts"], "src", true],
    [["*", "!src/*.ts"], "lib", false],
    [["build", "!build/**/keep.txt"], "build", true],
    [["build", "!build/**/keep.txt"], "build/out/deep", true],
    [["x", "!**/keep.txt"], "x", true],
    [["x", "!keep**"], "x", false],
    [["x", "!x**"], "x", true],
    [["x", "!x/sub/**"], "x", true],
    [["x", "!x/[^a]"], "x", true],
    [["x", "!y[/]z"], "x", true], // cannot judge component-wise: says yes
  ];
  it.each(exceptionsInside)("exceptions of %j might match inside %j: %s", (patterns, dir, expected) => {
    expect(new PatternMatcher(patterns).mightMatchInside(dir)).toBe(expected);
  });

  /** [include patterns, dir, could a pattern match inside] */
  const includesInside: Array<[string[], string, boolean]> = [
    [["a/b/c"], "a", true],
    [["a/b/c"], "a/b", true],
    [["a/b/c"], "ab", false],
    [["a/b/c"], "a/x", false],
    [["a*/c"], "abc", true],
    [["a*/c"], "b", false],
    [["src/*.ts", "README.md"], "src", true],
    [["src/*.ts", "README.md"], "docs", false],
    [["**/*.go"], "anything", true],
    [["dir/**"], "dir", true],
    [["dir/**"], "dirx", false],
    [["dir**"], "dirx", true],
  ];
  it.each(includesInside)("patterns %j might match inside %j: %s", (patterns, dir, expected) => {
    expect(new PatternMatcher(patterns).mightMatchInside(dir, "patterns")).toBe(expected);
  });
});
