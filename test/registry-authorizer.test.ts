// The token cache of the registry authorizer, on an injected clock and a
// fake token service: how long a token lives is the token service's word, and
// no real one can be made to let a token expire on cue. (The whole flow
// against a real registry with token auth is in registry-auth.test.ts.)
import { describe, expect, it } from "vitest";
import { AbortError } from "../src/errors.js";
import { RegistryAuthorizer, type TokenResponse } from "../src/registry/authorizer.js";
import { RegistryError } from "../src/registry/errors.js";

const HOST = "registry.example.test";
const CHALLENGE = 'Bearer realm="https://auth.example.test/token",service="registry.example.test"';
const PASSWORD = "password-s3cr3t";

interface Asked {
  url: URL;
  method: string;
  authorization: string | undefined;
}

/** A token service that answers `answer()` and records each request. */
function tokenService(answer: (asked: Asked) => { status: number; body: unknown } = () => ({ status: 200, body: { token: "t", expires_in: 60 } })) {
  const asked: Asked[] = [];
  let count = 0;
  const fetchToken = async (url: URL, init: { method: string; headers: Record<string, string> }): Promise<TokenResponse> => {
    const request = { url, method: init.method, authorization: init.headers.Authorization };
    asked.push(request);
    const { status, body } = answer(request);
    const bytes = Buffer.from(JSON.stringify(typeof body === "object" && body && "token" in body ? { ...body, token: `${(body as { token: string }).token}-${++count}` } : body));
    return { status, bytes: async () => bytes, discard: async () => {} };
  };
  return { asked, fetchToken };
}

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

const withPassword = async () => ({ username: "alice", password: PASSWORD });

describe("RegistryAuthorizer", () => {
  it("sends nothing before the registry asks, then a token per scope set, reused until shortly before it expires", async () => {
    const service = tokenService();
    const time = clock();
    const auth = new RegistryAuthorizer(withPassword, service.fetchToken, time.now);
    const pull = ["repository:a:pull"];
    expect(await auth.authorization(HOST, pull)).toBeUndefined();
    expect(await auth.challenged(HOST, pull, CHALLENGE, undefined, "GET")).toBe("Bearer t-1");
    expect(service.asked[0]!.url.searchParams.getAll("scope")).toEqual(pull);
    expect(service.asked[0]!.url.searchParams.get("service")).toBe("registry.example.test");
    expect(service.asked[0]!.authorization).toBe(`Basic ${Buffer.from(`alice:${PASSWORD}`).toString("base64")}`);

    // Known scheme now: the cached token goes with the next request, for the same scopes only.
    expect(await auth.authorization(HOST, pull)).toBe("Bearer t-1");
    expect(await auth.authorization(HOST, ["repository:a:pull,push"])).toBe("Bearer t-2");
    time.advance(49_000);
    expect(await auth.authorization(HOST, pull)).toBe("Bearer t-1");
    // 60 s tokens are not used in their last 10 s.
    time.advance(2_000);
    expect(await auth.authorization(HOST, pull)).toBe("Bearer t-3");
    expect(service.asked).toHaveLength(3);
  });

  it("drops expired tokens when it fetches another: a client pushing to ever new repositories holds only live ones", async () => {
    const service = tokenService();
    const time = clock();
    const auth = new RegistryAuthorizer(withPassword, service.fetchToken, time.now);
    for (let i = 0; i < 100; i++) await auth.challenged(HOST, [`repository:user-${i}/app:pull,push`], CHALLENGE, undefined, "PUT");
    expect(auth.cachedTokens).toBe(100);
    time.advance(61_000);
    await auth.challenged(HOST, ["repository:user-100/app:pull,push"], CHALLENGE, undefined, "PUT");
    expect(auth.cachedTokens).toBe(1);
  });

  it("keeps a short-lived token for half its life", async () => {
    const service = tokenService(() => ({ status: 200, body: { token: "t", expires_in: 4 } }));
    const time = clock();
    const auth = new RegistryAuthorizer(withPassword, service.fetchToken, time.now);
    await auth.challenged(HOST, ["repository:a:pull"], CHALLENGE, undefined, "GET");
    time.advance(1_900);
    expect(await auth.authorization(HOST, ["repository:a:pull"])).toBe("Bearer t-1");
    time.advance(200);
    expect(await auth.authorization(HOST, ["repository:a:pull"])).toBe("Bearer t-2");
  });

  it("fetches one token for many requests waiting at once", async () => {
    const service = tokenService();
    const auth = new RegistryAuthorizer(withPassword, service.fetchToken, clock().now);
    const scopes = ["repository:a:pull"];
    await auth.challenged(HOST, ["repository:b:pull"], CHALLENGE, undefined, "GET");
    const answers = await Promise.all(Array.from({ length: 10 }, () => auth.authorization(HOST, scopes)));
    expect(new Set(answers)).toEqual(new Set(["Bearer t-2"]));
    expect(service.asked).toHaveLength(2);
  });

  it("adds the scopes a challenge names to those asked for, and fetches anew when a token was refused", async () => {
    const service = tokenService();
    const auth = new RegistryAuthorizer(withPassword, service.fetchToken, clock().now);
    const scopes = ["repository:b:pull,push"];
    await auth.challenged(HOST, scopes, `${CHALLENGE},scope="repository:b:pull,push repository:a:pull"`, undefined, "POST");
    expect(service.asked[0]!.url.searchParams.getAll("scope")).toEqual(["repository:b:pull,push", "repository:a:pull"]);
    const again = await auth.challenged(HOST, scopes, `${CHALLENGE},scope="repository:b:pull,push repository:a:pull"`, "Bearer t-1", "POST");
    expect(again).toBe("Bearer t-2");
  });

  it("asks for anonymous tokens without an Authorization header, and sends identity tokens through the OAuth2 form", async () => {
    const anonymous = tokenService();
    await new RegistryAuthorizer(async () => undefined, anonymous.fetchToken).challenged(HOST, ["repository:a:pull"], CHALLENGE, undefined, "GET");
    expect(anonymous.asked[0]).toMatchObject({ method: "GET", authorization: undefined });
    const oauth = tokenService(() => ({ status: 200, body: { access_token: "at", expires_in: 60 } }));
    const header = await new RegistryAuthorizer(async () => ({ identityToken: "refresh-s3cr3t" }), oauth.fetchToken).challenged(
      HOST,
      ["repository:a:pull"],
      CHALLENGE,
      undefined,
      "GET",
    );
    expect(header).toBe("Bearer at");
    expect(oauth.asked[0]!.method).toBe("POST");
  });

  it("Basic: sends the configured credentials, and a refused Basic header is final", async () => {
    const auth = new RegistryAuthorizer(withPassword, tokenService().fetchToken);
    const basic = await auth.challenged(HOST, [], 'Basic realm="r"', undefined, "GET");
    expect(basic).toBe(`Basic ${Buffer.from(`alice:${PASSWORD}`).toString("base64")}`);
    expect(await auth.authorization(HOST, [])).toBe(basic);
    const refused = await auth.challenged(HOST, [], 'Basic realm="r"', basic, "GET /v2/").catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(RegistryError);
    expect((refused as RegistryError).code).toBe("UNAUTHENTICATED");
    expect((refused as Error).message).not.toContain(PASSWORD);
  });

  it("names each failure with a code and never the secret", async () => {
    const cases: [string, RegistryAuthorizer, string, RegExp][] = [
      ["no credentials for Basic", new RegistryAuthorizer(async () => undefined, tokenService().fetchToken), 'Basic realm="r"', /none are configured for registry\.example\.test/],
      ["an unknown scheme", new RegistryAuthorizer(withPassword, tokenService().fetchToken), 'Negotiate realm="x"', /does not speak/],
      [
        "a token service refusing the password",
        new RegistryAuthorizer(withPassword, tokenService(() => ({ status: 401, body: { details: PASSWORD } })).fetchToken),
        CHALLENGE,
        /token service refused the credentials configured for/,
      ],
      ["a token service without a token", new RegistryAuthorizer(withPassword, tokenService(() => ({ status: 200, body: {} })).fetchToken), CHALLENGE, /gave no token/],
      ["a realm that is not a URL", new RegistryAuthorizer(withPassword, tokenService().fetchToken), 'Bearer realm="::nope"', /not a URL/],
    ];
    for (const [what, auth, challenge, message] of cases) {
      const error = await auth.challenged(HOST, ["repository:a:pull"], challenge, undefined, "GET").catch((err: unknown) => err);
      expect(error, what).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code, what).toBe("UNAUTHENTICATED");
      expect((error as Error).message, what).toMatch(message);
      expect((error as Error).message, what).not.toContain(PASSWORD);
    }
  });

  it("a token service's 5xx is UNAVAILABLE; a failed fetch is not cached", async () => {
    let status = 503;
    const service = tokenService(() => (status === 200 ? { status, body: { token: "t" } } : { status, body: {} }));
    const auth = new RegistryAuthorizer(withPassword, service.fetchToken);
    const error = await auth.challenged(HOST, ["repository:a:pull"], CHALLENGE, undefined, "GET").catch((err: unknown) => err);
    expect((error as RegistryError).code).toBe("UNAVAILABLE");
    status = 200;
    expect(await auth.authorization(HOST, ["repository:a:pull"])).toBe("Bearer t-1");
  });

  it("stops waiting for a token when the caller's signal aborts, without failing the others", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const service = tokenService();
    const slow = async (url: URL, init: { method: "GET" | "POST"; headers: Record<string, string> }) => {
      await gate;
      return service.fetchToken(url, init);
    };
    const auth = new RegistryAuthorizer(withPassword, slow);
    const controller = new AbortController();
    const waiting = auth.challenged(HOST, ["repository:a:pull"], CHALLENGE, undefined, "GET", controller.signal);
    const other = auth.authorization(HOST, ["repository:a:pull"]);
    controller.abort(new Error("stop"));
    await expect(waiting).rejects.toBeInstanceOf(AbortError);
    release();
    expect(await other).toBe("Bearer t-1");
  });
});
