// The order ticket's input and the blotter's state: pure functions, unit-tested.
export const SIDES = ["BUY", "SELL", "SELL_SHORT"] as const;
export const ORDER_TYPES = ["MARKET", "LIMIT", "STOP", "STOP_LIMIT"] as const;
export const TIMES_IN_FORCE = ["DAY", "GTC", "IOC", "FOK", "GTD"] as const;
export const OPEN_STATUSES = ["NEW", "PENDING", "ACCEPTED", "PARTIALLY_FILLED"];

export interface Ticket {
  account: string;
  symbol: string;
  mic: string;
  side: (typeof SIDES)[number];
  quantity: string;
  ordType: (typeof ORDER_TYPES)[number];
  timeInForce: (typeof TIMES_IN_FORCE)[number];
  limitPrice: string;
  stopPrice: string;
  expireAt: string; // datetime-local value, for GTD
  clientOrderId: string;
}

export interface TicketProblem {
  field: keyof Ticket;
  message: string;
}

const DECIMAL = /^\d+(\.\d+)?$/;

/** What the form can tell before sending; the gateway checks everything again and its codes
 * (validation, compliance) are shown as it gives them. */
export function checkTicket(t: Ticket): TicketProblem[] {
  const problems: TicketProblem[] = [];
  if (!t.account.trim()) problems.push({ field: "account", message: "an account is needed" });
  if (!t.symbol.trim()) problems.push({ field: "symbol", message: "a symbol is needed" });
  if (!/^[A-Z0-9]{4}$/.test(t.mic.trim())) problems.push({ field: "mic", message: "a MIC is four letters" });
  if (!DECIMAL.test(t.quantity.trim()) || Number(t.quantity) <= 0)
    problems.push({ field: "quantity", message: "a positive quantity" });
  const needsLimit = t.ordType === "LIMIT" || t.ordType === "STOP_LIMIT";
  const needsStop = t.ordType === "STOP" || t.ordType === "STOP_LIMIT";
  if (needsLimit && (!DECIMAL.test(t.limitPrice.trim()) || Number(t.limitPrice) <= 0))
    problems.push({ field: "limitPrice", message: `a ${t.ordType} order needs a limit price` });
  if (needsStop && (!DECIMAL.test(t.stopPrice.trim()) || Number(t.stopPrice) <= 0))
    problems.push({ field: "stopPrice", message: `a ${t.ordType} order needs a stop price` });
  if (t.timeInForce === "GTD" && !t.expireAt) problems.push({ field: "expireAt", message: "GTD needs an expiry" });
  return problems;
}

export function newClientOrderId(now: Date = new Date(), random: () => number = Math.random): string {
  const stamp = now.toISOString().replace(/[-:.TZ]/g, "").slice(0, 14);
  return `web-${stamp}-${Math.floor(random() * 0xffffff).toString(16).padStart(6, "0")}`;
}

/** The SubmitOrderInput for a ticket: prices only where the order type takes them. */
export function toInput(t: Ticket): Record<string, unknown> {
  const input: Record<string, unknown> = {
    clientOrderId: t.clientOrderId,
    account: t.account.trim(),
    symbol: t.symbol.trim().toUpperCase(),
    mic: t.mic.trim().toUpperCase(),
    side: t.side,
    quantity: t.quantity.trim(),
    ordType: t.ordType,
    timeInForce: t.timeInForce,
  };
  if (t.ordType === "LIMIT" || t.ordType === "STOP_LIMIT") input.limitPrice = t.limitPrice.trim();
  if (t.ordType === "STOP" || t.ordType === "STOP_LIMIT") input.stopPrice = t.stopPrice.trim();
  if (t.timeInForce === "GTD" && t.expireAt) input.expireAt = new Date(t.expireAt).toISOString();
  return input;
}

export interface BlotterOrder {
  id: string;
  clientOrderId: string;
  account: string;
  symbol: string;
  mic: string;
  side: string;
  ordType: string;
  timeInForce: string;
  quantity: string;
  limitPrice: string | null;
  status: string;
  cumQty: string;
  leavesQty: string;
  avgPx: string;
  rejectCode: string | null;
  rejectText: string | null;
  createdAt: string;
  updatedAt: string;
  version: number;
}

/** The blotter after one update: an order replaces its older self (a lower `version` never
 * overwrites a newer one, whatever order the updates arrive in); newest first. */
export function mergeOrder(list: BlotterOrder[], order: BlotterOrder, limit = 200): BlotterOrder[] {
  const current = list.find((o) => o.id === order.id);
  if (current && current.version > order.version) return list;
  const rest = list.filter((o) => o.id !== order.id);
  return [order, ...rest]
    .sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0))
    .slice(0, limit);
}

export function isOpen(order: { status: string }): boolean {
  return OPEN_STATUSES.includes(order.status);
}
