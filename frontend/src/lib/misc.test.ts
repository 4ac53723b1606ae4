import { describe, expect, it } from "vitest";
import { credentialKind, clearCredential, readCredential, storeCredential } from "./auth";
import { websocketUrl } from "./client";
import { fromGraphQLErrors } from "./errors";
import { isTerminal, mergeJob, percent, type JobRow } from "./jobs";
import { pageOf } from "./router";
import { documentProblems, parseDocument } from "./strategy";

describe("credentials", () => {
  it("tells API keys from JWTs and refuses anything else", () => {
    expect(credentialKind(`alp_0123456789abcdef_${"s".repeat(40)}`)).toBe("apiKey");
    expect(credentialKind("alp_0123_short")).toBeNull();
    expect(credentialKind("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln")).toBe("jwt");
    expect(credentialKind("hello")).toBeNull();
  });
  it("keeps the credential in the storage given, trimmed", () => {
    storeCredential("  abc.def.ghi \n", sessionStorage);
    expect(readCredential(sessionStorage)).toBe("abc.def.ghi");
    clearCredential(sessionStorage);
    expect(readCredential(sessionStorage)).toBeNull();
  });
  it("builds the socket URL from the page's origin", () => {
    expect(websocketUrl({ protocol: "https:", host: "desk.example:8443" })).toBe("wss://desk.example:8443/graphql");
    expect(websocketUrl({ protocol: "http:", host: "127.0.0.1:8000" })).toBe("ws://127.0.0.1:8000/graphql");
  });
});

describe("errors", () => {
  it("keeps each code, path and detail but not the request id", () => {
    const shown = fromGraphQLErrors([
      { message: "denied", path: ["submitOrder"], extensions: { code: "COMPLIANCE_MAX_ORDER_VALUE", requestId: "r1", rule: "X" } },
      { message: "plain" },
    ]);
    expect(shown).toEqual([
      { code: "COMPLIANCE_MAX_ORDER_VALUE", message: "denied", path: "submitOrder", details: { rule: "X" } },
      { code: "ERROR", message: "plain" },
    ]);
  });
  it("finds a strategy document's problems at their JSON paths", () => {
    const problems = documentProblems([{ code: "STRATEGY_INVALID", message: "bad",
      details: { errors: [{ path: "/signals/0/window", message: "must be >= 2" }, { path: "", message: "x" }] } }]);
    expect(problems).toEqual([{ path: "/signals/0/window", message: "must be >= 2" }, { path: "/", message: "x" }]);
    expect(documentProblems([{ code: "OTHER", message: "m", details: { errors: [{ path: "/a", message: "b" }] } }])).toEqual([]);
    expect(parseDocument("{").problem).toMatch(/^not JSON/);
    expect(parseDocument('{"a": 1}').value).toEqual({ a: 1 });
  });
});

describe("jobs", () => {
  const job = (over: Partial<JobRow>): JobRow => ({ id: "j", kind: "k", status: "RUNNING", progress: 0, message: "",
    result: null, error: null, createdAt: "t0", updatedAt: "2024-01-01T00:00:01Z", ...over });
  it("shows whole percent, 100 when done", () => {
    expect(percent(job({ progress: 0.456 }))).toBe(46);
    expect(percent(job({ progress: 1.7 }))).toBe(100);
    expect(percent(job({ progress: Number.NaN }))).toBe(0);
    expect(percent(job({ status: "SUCCEEDED", progress: 0.9 }))).toBe(100);
    expect(isTerminal(job({ status: "FAILED" }))).toBe(true);
  });
  it("merges snapshots, ignoring an older one", () => {
    const list = [job({ progress: 0.5, updatedAt: "2024-01-01T00:00:05Z" })];
    expect(mergeJob(list, job({ progress: 0.2, updatedAt: "2024-01-01T00:00:02Z" }))[0].progress).toBe(0.5);
    expect(mergeJob(list, job({ progress: 0.8, updatedAt: "2024-01-01T00:00:09Z" }))[0].progress).toBe(0.8);
    expect(mergeJob(list, job({ id: "other" }))).toHaveLength(2);
  });
});

describe("router", () => {
  it("maps paths under /console to pages, the desk by default", () => {
    expect(pageOf("/console/jobs")).toBe("jobs");
    expect(pageOf("/console/marketplace/acme.news")).toBe("marketplace");
    expect(pageOf("/console/")).toBe("desk");
    expect(pageOf("/console/nope")).toBe("desk");
  });
});
