import { describe, expect, it } from "vitest";
import { DEFAULT_THEME, applyTheme, colour, readableOn, safeLogo, themeVariables } from "./theme";

describe("theme", () => {
  it("takes only hex colours", () => {
    expect(colour("#ABCDEF", "#000")).toBe("#abcdef");
    expect(colour("#abc", "#000")).toBe("#abc");
    expect(colour("red; background: url(x)", "#000")).toBe("#000");
    expect(colour(null, "#123456")).toBe("#123456");
  });
  it("picks readable text on a colour", () => {
    expect(readableOn("#0a2540")).toBe("#ffffff");
    expect(readableOn("#ffcc00")).toBe("#111111");
  });
  it("accepts only https logos", () => {
    expect(safeLogo("https://cdn.example/logo.svg")).toBe("https://cdn.example/logo.svg");
    expect(safeLogo("javascript:alert(1)")).toBeNull();
    expect(safeLogo("http://plain.example/logo.png")).toBeNull();
    expect(safeLogo("not a url")).toBeNull();
  });
  it("turns a light brand dark in dark mode, keeping its colours", () => {
    const light = themeVariables({ ...DEFAULT_THEME, primaryColour: "#003366" }, "light");
    const dark = themeVariables({ ...DEFAULT_THEME, primaryColour: "#003366" }, "dark");
    expect(light["--bg"]).toBe("#ffffff");
    expect(dark["--bg"]).not.toBe("#ffffff");
    expect(dark["--primary"]).toBe("#003366");
    expect(dark["--text"]).not.toBe("#111111");
  });
  it("sets the variables and the title", () => {
    const root = document.createElement("div");
    applyTheme({ ...DEFAULT_THEME, productName: "Blue Harbour", primaryColour: "#003366" }, "light", root);
    expect(root.style.getPropertyValue("--primary")).toBe("#003366");
    expect(root.dataset.mode).toBe("light");
    expect(document.title).toBe("Blue Harbour");
  });
});
