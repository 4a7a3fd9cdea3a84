// The Dockerfile frontend's attributes and cache entries built from options.
import { describe, expect, it } from "vitest";
import { cacheEntries, frontendAttrs, parseCsv } from "../src/buildkit/solve-request.js";

describe("cache entries", () => {
  it("reads buildx's CSV form, quoted fields holding commas", () => {
    expect(cacheEntries(['type=s3,region=eu-west-1,"secret_access_key=a,b"', { type: "inline" }], "cacheTo")).toEqual([
      { type: "s3", attrs: { region: "eu-west-1", secret_access_key: "a,b" } },
      { type: "inline", attrs: {} },
    ]);
    expect(parseCsv('type=registry,"ref=x""y"', "cacheFrom")).toEqual({ type: "registry", ref: 'x"y' });
  });

  it("never echoes a spec's text in an error: it can carry credentials", () => {
    expect(() => cacheEntries(["type=gha,token=ghs_SECRET,oops"], "cacheTo")).toThrow(/cacheTo: field 3 is not key=value$/);
    try {
      cacheEntries(["type=gha,token=ghs_SECRET,oops"], "cacheTo");
    } catch (err) {
      expect((err as Error).message).not.toContain("ghs_SECRET");
    }
    expect(() => cacheEntries(["ref=x"], "cacheFrom")).toThrow(/needs a type/);
  });

  it("passes imports to the frontend as cache-imports", () => {
    const attrs = frontendAttrs({ context: ".", cacheFrom: [{ type: "registry", ref: "r/app:cache" }] }, "Dockerfile");
    expect(JSON.parse(attrs["cache-imports"]!)).toEqual([{ Type: "registry", Attrs: { ref: "r/app:cache" } }]);
  });
});

describe("frontend attributes", () => {
  it("maps options to dockerfile.v0 keys", () => {
    expect(
      frontendAttrs(
        {
          context: ".",
          target: "prod",
          buildArgs: { A: "1" },
          labels: { l: "v" },
          platforms: ["linux/amd64", "linux/arm/v7"],
          noCache: ["deps"],
          pull: true,
          addHosts: { db: "10.0.0.2" },
          network: "none",
          shmSize: 1024,
          ulimits: { nofile: { soft: 1024, hard: 2048 } },
        },
        "prod.Dockerfile",
      ),
    ).toEqual({
      filename: "prod.Dockerfile",
      target: "prod",
      "build-arg:A": "1",
      "label:l": "v",
      platform: "linux/amd64,linux/arm/v7",
      "no-cache": "deps",
      "image-resolve-mode": "pull",
      "add-hosts": "db=10.0.0.2",
      "force-network-mode": "none",
      "shm-size": "1024",
      ulimit: "nofile=1024:2048",
    });
  });

  it("asks for a provenance attestation as buildx does", () => {
    expect(frontendAttrs({ context: ".", provenance: true }, "Dockerfile")["attest:provenance"]).toBe("type=provenance,mode=min");
    expect(frontendAttrs({ context: ".", provenance: { mode: "max" } }, "Dockerfile")["attest:provenance"]).toBe("type=provenance,mode=max");
    expect(frontendAttrs({ context: ".", provenance: false }, "Dockerfile")).not.toHaveProperty("attest:provenance");
    expect(() => frontendAttrs({ context: ".", provenance: { mode: "full" as "max" } }, "Dockerfile")).toThrow(/provenance mode must be "min" or "max"/);
  });

  it("refuses a malformed platform and a bad network", () => {
    expect(() => frontendAttrs({ context: ".", platforms: ["amd64"] }, "Dockerfile")).toThrow(/not a platform/);
    expect(() => frontendAttrs({ context: ".", network: "bridge" as "none" }, "Dockerfile")).toThrow(/network/);
  });
});
