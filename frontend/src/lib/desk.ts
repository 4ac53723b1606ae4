// The desk's logic beyond the ticket: amend input, the trades filter, P&L display.
import type { BlotterOrder } from "./orders";

const DECIMAL = /^\d+(\.\d+)?$/;

export interface AmendDraft { quantity: string; limitPrice: string }

/** The amendOrder variables for a draft: only what changed, checked; or the problem. */
export function amendVariables(order: Pick<BlotterOrder, "id" | "quantity" | "limitPrice" | "cumQty">,
  draft: AmendDraft): { variables?: { id: string; quantity?: string; limitPrice?: string }; problem?: string } {
  const variables: { id: string; quantity?: string; limitPrice?: string } = { id: order.id };
  const q = draft.quantity.trim();
  const p = draft.limitPrice.trim();
  if (q && Number(q) !== Number(order.quantity)) {
    if (!DECIMAL.test(q) || Number(q) <= 0) return { problem: "a positive quantity" };
    if (Number(q) < Number(order.cumQty)) return { problem: `not under the filled ${order.cumQty}` };
    variables.quantity = q;
  }
  if (p && (order.limitPrice === null || Number(p) !== Number(order.limitPrice))) {
    if (order.limitPrice === null) return { problem: "only a priced order's limit can change" };
    if (!DECIMAL.test(p) || Number(p) <= 0) return { problem: "a positive limit price" };
    variables.limitPrice = p;
  }
  if (!variables.quantity && !variables.limitPrice) return { problem: "nothing changed" };
  return { variables };
}

export interface TradeFilter { account: string; side: string; from: string; to: string; symbol: string }

/** The trades query's variables: empty fields left out, dates as the day's UTC midnight
 * (`to` inclusive of its day: the API's `to` is exclusive). */
export function tradeVariables(f: TradeFilter): Record<string, string | null> {
  const dayAfter = (d: string) => new Date(Date.parse(`${d}T00:00:00Z`) + 86_400_000).toISOString();
  return {
    account: f.account.trim() || null,
    side: f.side || null,
    symbol: f.symbol.trim().toUpperCase() || null,
    from: f.from ? `${f.from}T00:00:00Z` : null,
    to: f.to ? dayAfter(f.to) : null,
  };
}

/** A money figure as shown: null (no mark, no rate) is "—"; signs kept; 2 decimals. */
export function money(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

export function pnlClass(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === "") return "";
  const n = Number(value);
  return n > 0 ? "gain" : n < 0 ? "loss" : "";
}

/** A compliance alert's denials (JSON from the API) as rule code and message pairs. */
export function denialsOf(denials: unknown): { code: string; message: string }[] {
  const list = Array.isArray(denials) ? denials : denials && typeof denials === "object" ? [denials] : [];
  return list.map((d) => {
    const o = (d ?? {}) as Record<string, unknown>;
    const code = String(o.code ?? o.rule ?? o.rule_code ?? "COMPLIANCE_DENIED");
    const message = String(o.message ?? o.reason ?? o.text ?? "");
    return { code, message };
  });
}
