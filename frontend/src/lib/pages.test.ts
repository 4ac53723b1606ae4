import { describe, expect, it } from "vitest";
import { controlsInput } from "../pages/DeskPanels";
import { healthBand, minimumOut, slippageBps } from "./defi";
import { amendVariables, denialsOf, money, pnlClass, tradeVariables } from "./desk";
import { base64Bytes, sameOriginPath } from "./download";
import { backendRuns, barShare, compareBackends } from "./optimise";
import { PAGES, pageForKey, pageOf } from "./router";
import { comingDates, firstRound, localDate, localMidnight, secondRound, sessionsQuery } from "./sessions";
import { safeSupportLinks } from "./theme";

const order = { id: "o1", quantity: "10", limitPrice: "100", cumQty: "4" };

describe("amend", () => {
  it("sends only what changed, and refuses what cannot be", () => {
    expect(amendVariables(order, { quantity: "12", limitPrice: "100" })).toEqual({ variables: { id: "o1", quantity: "12" } });
    expect(amendVariables(order, { quantity: "10", limitPrice: "99.5" })).toEqual({ variables: { id: "o1", limitPrice: "99.5" } });
    expect(amendVariables(order, { quantity: "10", limitPrice: "100.0" }).problem).toBe("nothing changed");
    expect(amendVariables(order, { quantity: "3", limitPrice: "" }).problem).toMatch(/filled 4/);
    expect(amendVariables(order, { quantity: "-1", limitPrice: "" }).problem).toMatch(/positive/);
    expect(amendVariables({ ...order, limitPrice: null }, { quantity: "10", limitPrice: "5" }).problem).toMatch(/priced/);
  });
});

describe("trades and P&L", () => {
  it("turns the filter into variables, `to` inclusive of its day", () => {
    expect(tradeVariables({ account: " DESK1 ", side: "", from: "2026-01-02", to: "2026-01-31", symbol: "aapl" })).toEqual({
      account: "DESK1", side: null, symbol: "AAPL", from: "2026-01-02T00:00:00Z", to: "2026-02-01T00:00:00.000Z" });
    expect(tradeVariables({ account: "", side: "BUY", from: "", to: "", symbol: "" }))
      .toEqual({ account: null, side: "BUY", symbol: null, from: null, to: null });
  });
  it("shows money with two decimals and a sign class; a missing figure as a dash", () => {
    expect(money("-1234.5")).toBe("-1,234.50");
    expect(money(null)).toBe("—");
    expect(pnlClass("3")).toBe("gain");
    expect(pnlClass("-0.01")).toBe("loss");
    expect(pnlClass(null)).toBe("");
  });
  it("reads a compliance alert's denials with their rule codes", () => {
    expect(denialsOf([{ code: "COMPLIANCE_KILL_SWITCH", message: "halted" }, { rule: "collar" }])).toEqual([
      { code: "COMPLIANCE_KILL_SWITCH", message: "halted" }, { code: "collar", message: "" }]);
    expect(denialsOf(null)).toEqual([]);
  });
  it("sends only the controls filled in", () => {
    expect(controlsInput({ maxOrderValue: " 1000 ", maxOrderQuantity: "", throttleMaxOrders: "5", restricted: "aapl.xnas, sap.xetr" }))
      .toEqual({ maxOrderValue: "1000", throttleMaxOrders: 5, restricted: ["AAPL.XNAS", "SAP.XETR"] });
  });
});

describe("venue calendars", () => {
  it("finds local midnight and the local day across time zones", () => {
    const t = localMidnight("2026-03-10", "Asia/Tokyo");
    expect(new Date(t).toISOString()).toBe("2026-03-09T15:00:00.000Z");
    expect(localDate(t, "Asia/Tokyo")).toBe("2026-03-10");
    expect(new Date(localMidnight("2026-03-09", "America/New_York")).toISOString()).toBe("2026-03-09T04:00:00.000Z");
    expect(comingDates(Date.parse("2026-03-06T20:00:00Z"), "Asia/Tokyo", 3)).toEqual(["2026-03-07", "2026-03-08", "2026-03-09"]);
  });
  it("tells trading days, holidays and weekends, and finds the lunch break", () => {
    const dates = ["2026-03-13", "2026-03-14", "2026-03-16", "2026-03-17"]; // Fri, Sat, Mon (holiday here), Tue
    const closed = { status: "CLOSED", opensAt: null, closesAt: null, nextClose: null };
    const answers = [
      { ...closed, nextOpen: "2026-03-13T00:00:00Z", nextClose: "2026-03-13T02:30:00Z" },
      { ...closed, nextOpen: "2026-03-17T00:00:00Z" },
      { ...closed, nextOpen: "2026-03-17T00:00:00Z" },
      { ...closed, nextOpen: "2026-03-17T00:00:00Z", nextClose: "2026-03-17T02:30:00Z" },
    ];
    const round = firstRound(dates, answers, "Asia/Tokyo");
    expect(round.days.map((d) => d.kind)).toEqual(["trading", "weekend", "holiday", "trading"]);
    expect(round.probes).toEqual([{ day: 0, at: Date.parse("2026-03-13T02:30:01Z") }, { day: 3, at: Date.parse("2026-03-17T02:30:01Z") }]);
    const days = secondRound(round.days, round.probes, [
      { status: "BREAK", opensAt: "2026-03-13T00:00:00Z", closesAt: "2026-03-13T06:30:00Z", nextOpen: "2026-03-13T03:30:00Z", nextClose: "2026-03-13T06:30:00Z" },
      { status: "CLOSED", opensAt: "2026-03-17T00:00:00Z", closesAt: "2026-03-17T02:30:00Z", nextOpen: "2026-03-18T00:00:00Z", nextClose: null },
    ]);
    expect(days[0].breaks).toEqual([{ start: "2026-03-13T02:30:00Z", end: "2026-03-13T03:30:00Z" }]);
    expect(days[0].closes).toBe("2026-03-13T06:30:00Z");
    expect(days[3].breaks).toEqual([]);
    expect(days[3].closes).toBe("2026-03-17T02:30:00Z");
    expect(sessionsQuery("XTKS", [0])).toContain('d0: session(at: "1970-01-01T00:00:00.000Z")');
  });
});

describe("optimisation", () => {
  const result = (ratio: number, p: number | null) => ({ runs: [
    { optimiser: "qaoa", kind: "quantum", role: "requested", status: "answered", approximation_ratio: ratio, probability_of_optimum: p },
    { optimiser: "classical-exact", kind: "classical", role: "reference", status: "answered", approximation_ratio: 1 },
  ] });
  it("reads each backend's ratio and probability, the best of several runs", () => {
    expect(backendRuns(result(0.8, 0.3))[0]).toMatchObject({ optimiser: "qaoa", ratio: 0.8, probability: 0.3 });
    expect(backendRuns({})).toEqual([]);
    const compared = compareBackends([result(0.8, 0.3), result(0.9, 0.1)]);
    expect(compared.map((r) => [r.optimiser, r.ratio, r.probability])).toEqual([["classical-exact", 1, null], ["qaoa", 0.9, 0.1]]);
    expect(barShare(1.4)).toBe(1);
    expect(barShare(null)).toBe(0);
  });
});

describe("DeFi", () => {
  it("slippage in basis points, the minimum out, the health band", () => {
    expect(slippageBps("0.5")).toBe(50);
    expect(slippageBps("0")).toBeNull();
    expect(slippageBps("80")).toBeNull();
    expect(minimumOut("2000", 50)).toBeCloseTo(1990);
    expect(healthBand(null)).toBe("safe");
    expect(healthBand("0.97")).toBe("danger");
    expect(healthBand("1.15", "1.1")).toBe("warning");
    expect(healthBand("2.5", "1.1")).toBe("safe");
  });
});

describe("downloads, links and keys", () => {
  it("downloads only from this gateway's paths, and decodes base64", () => {
    expect(sameOriginPath("/reports/abc-123")).toBe("/reports/abc-123");
    expect(sameOriginPath("//evil.example/x")).toBeNull();
    expect(sameOriginPath("https://evil.example/x")).toBeNull();
    expect(Array.from(base64Bytes("JVBERg=="))).toEqual([37, 80, 68, 70]);
  });
  it("keeps https and mailto support links only", () => {
    expect(safeSupportLinks([{ label: "Help", url: "https://h.example/help" }, { label: "x", url: "javascript:alert(1)" },
      { label: " ", url: "https://h.example" }, { label: "Mail", url: "mailto:a@h.example" }, { label: "Plain", url: "http://h.example" }]))
      .toEqual([{ label: "Help", url: "https://h.example/help" }, { label: "Mail", url: "mailto:a@h.example" }]);
    expect(safeSupportLinks(null)).toEqual([]);
  });
  it("opens pages with Alt+digit, not while another modifier is held", () => {
    expect(pageForKey({ altKey: true, ctrlKey: false, metaKey: false, key: "2", code: "Digit2" })).toBe(PAGES[1].path);
    expect(pageForKey({ altKey: true, ctrlKey: false, metaKey: false, key: "™", code: "Digit1" })).toBe("markets");
    expect(pageForKey({ altKey: false, ctrlKey: false, metaKey: false, key: "2" })).toBeNull();
    expect(pageForKey({ altKey: true, ctrlKey: true, metaKey: false, key: "2" })).toBeNull();
    expect(pageOf("/console/defi")).toBe("defi");
    expect(pageOf("/console/portfolio")).toBe("portfolio");
  });
});
