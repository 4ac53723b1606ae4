import { describe, expect, it } from "vitest";
import type { RJSFSchema } from "@rjsf/utils";
import { secretPaths, uiSchemaFor, withoutSecrets, type JsonSchema } from "./schemaForm";
import { toRjsfErrors, validator } from "./validator";

const NEWS = {
  type: "object", additionalProperties: false, required: ["api_key"],
  properties: {
    api_key: { type: "string", minLength: 8, "x-secret": true },
    tickers: { type: "array", items: { type: "string", pattern: "^[A-Z0-9]+\\.[A-Z]{4}$" } },
    auth: { type: "object", properties: { token: { type: "string", "x-secret": true }, user: { type: "string" } } },
  },
} as unknown as RJSFSchema & JsonSchema;

describe("secret fields", () => {
  it("finds x-secret fields through nested objects", () => {
    expect(secretPaths(NEWS)).toEqual(["$.api_key", "$.auth.token"]);
  });
  it("masks them with a password widget", () => {
    const ui = uiSchemaFor(NEWS) as Record<string, Record<string, unknown>>;
    expect(ui.api_key["ui:widget"]).toBe("password");
    expect((ui.auth.token as Record<string, unknown>)["ui:widget"]).toBe("password");
    expect(ui.tickers).toBeUndefined();
  });
  it("never starts a form from a secret's value", () => {
    expect(withoutSecrets({ api_key: "x", tickers: ["A.XNAS"], auth: { token: "t", user: "u" } }, NEWS))
      .toEqual({ tickers: ["A.XNAS"], auth: { user: "u" } });
  });
});

describe("the eval-free validator", () => {
  it("puts a missing required field under its own name", () => {
    const { errors, errorSchema } = validator.validateFormData({}, NEWS);
    expect(errors.map((e) => e.property)).toEqual([".api_key"]);
    expect((errorSchema as Record<string, { __errors: string[] }>).api_key.__errors).toEqual(["is a required property"]);
  });
  it("reports leaf errors at their paths", () => {
    const { errors } = validator.validateFormData({ api_key: "short", tickers: ["AAPL.XNAS", "bad"] }, NEWS);
    expect(errors.map((e) => `${e.property}:${e.name}`).sort()).toEqual([".api_key:minLength", ".tickers.1:pattern"]);
  });
  it("says valid for valid data", () => {
    expect(validator.isValid(NEWS, { api_key: "long-enough" }, NEWS)).toBe(true);
    expect(validator.validateFormData({ api_key: "long-enough", tickers: ["VOD.XLON"] }, NEWS).errors).toEqual([]);
  });
  it("maps JSON pointers to rjsf property paths", () => {
    expect(toRjsfErrors([{ keyword: "type", keywordLocation: "#/x", instanceLocation: "#/a~1b/0", error: "bad" }])[0].property)
      .toBe(".a/b.0");
  });
});
