import { describe, expect, it } from "vitest";
import { checkTicket, isOpen, mergeOrder, newClientOrderId, toInput, type BlotterOrder, type Ticket } from "./orders";

const ticket: Ticket = { account: "ACC1", symbol: "aapl", mic: "xnas", side: "BUY", quantity: "10", ordType: "LIMIT",
  timeInForce: "GTC", limitPrice: "101.5", stopPrice: "", expireAt: "", clientOrderId: "c1" };

function order(id: string, version: number, status = "ACCEPTED", createdAt = "2024-01-01T00:00:00Z"): BlotterOrder {
  return { id, clientOrderId: id, account: "A", symbol: "AAPL", mic: "XNAS", side: "BUY", ordType: "LIMIT",
    timeInForce: "GTC", quantity: "1", limitPrice: "1", status, cumQty: "0", leavesQty: "1", avgPx: "0",
    rejectCode: null, rejectText: null, createdAt, updatedAt: createdAt, version };
}

describe("checkTicket", () => {
  it("accepts a complete limit order", () => {
    expect(checkTicket({ ...ticket, mic: "XNAS" })).toEqual([]);
  });
  it("names each missing or malformed field", () => {
    const problems = checkTicket({ ...ticket, account: " ", quantity: "-1", limitPrice: "", mic: "NY" });
    expect(problems.map((p) => p.field).sort()).toEqual(["account", "limitPrice", "mic", "quantity"]);
  });
  it("asks for a stop price on stop orders and an expiry on GTD", () => {
    const problems = checkTicket({ ...ticket, mic: "XNAS", ordType: "STOP_LIMIT", timeInForce: "GTD" });
    expect(problems.map((p) => p.field).sort()).toEqual(["expireAt", "stopPrice"]);
  });
  it("needs no price for a market order", () => {
    expect(checkTicket({ ...ticket, mic: "XNAS", ordType: "MARKET", limitPrice: "" })).toEqual([]);
  });
});

describe("toInput", () => {
  it("sends prices only where the type takes them, in upper case symbols", () => {
    expect(toInput(ticket)).toEqual({ clientOrderId: "c1", account: "ACC1", symbol: "AAPL", mic: "XNAS", side: "BUY",
      quantity: "10", ordType: "LIMIT", timeInForce: "GTC", limitPrice: "101.5" });
    const market = toInput({ ...ticket, ordType: "MARKET", stopPrice: "3" });
    expect(market).not.toHaveProperty("limitPrice");
    expect(market).not.toHaveProperty("stopPrice");
    const gtd = toInput({ ...ticket, ordType: "STOP", stopPrice: "99", timeInForce: "GTD", expireAt: "2030-01-02T03:04" });
    expect(gtd.stopPrice).toBe("99");
    expect(typeof gtd.expireAt).toBe("string");
    expect(gtd).not.toHaveProperty("limitPrice");
  });
});

describe("mergeOrder", () => {
  it("puts a new order on top and replaces an order by a newer version", () => {
    let list = mergeOrder([], order("a", 1, "ACCEPTED", "2024-01-01T00:00:00Z"));
    list = mergeOrder(list, order("b", 1, "ACCEPTED", "2024-01-02T00:00:00Z"));
    expect(list.map((o) => o.id)).toEqual(["b", "a"]);
    list = mergeOrder(list, order("a", 2, "FILLED", "2024-01-01T00:00:00Z"));
    expect(list.find((o) => o.id === "a")?.status).toBe("FILLED");
    expect(list).toHaveLength(2);
  });
  it("never lets an older version overwrite a newer one", () => {
    const list = mergeOrder([order("a", 3, "CANCELED")], order("a", 2, "ACCEPTED"));
    expect(list[0].status).toBe("CANCELED");
  });
  it("keeps at most `limit` orders", () => {
    let list: BlotterOrder[] = [];
    for (let i = 0; i < 5; i++) list = mergeOrder(list, order(`o${i}`, 1, "NEW", `2024-01-0${i + 1}T00:00:00Z`), 3);
    expect(list.map((o) => o.id)).toEqual(["o4", "o3", "o2"]);
  });
});

describe("ids and states", () => {
  it("makes distinct client order ids", () => {
    const now = new Date("2024-05-06T07:08:09Z");
    expect(newClientOrderId(now, () => 0.5)).toBe("web-20240506070809-7fffff");
    expect(newClientOrderId(now, () => 0.25)).not.toBe(newClientOrderId(now, () => 0.5));
  });
  it("tells open orders", () => {
    expect(isOpen({ status: "PARTIALLY_FILLED" })).toBe(true);
    expect(isOpen({ status: "FILLED" })).toBe(false);
  });
});
