// The desk's other panels: trades (filtered, counted, paged), compliance denials as they
// happen, and for compliance officers the controls, the kill switch and mass cancel.
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useMutation, useQuery, useSubscription } from "urql";
import { Empty, Errors, Loading, Pager, Panel, when, type PageInfo } from "../components/common";
import { denialsOf, money, tradeVariables, type TradeFilter } from "../lib/desk";
import { fromCombined, type ShownError } from "../lib/errors";
import { SIDES } from "../lib/orders";

interface Trade { id: string; orderId: string; execId: string; account: string; symbol: string; mic: string; side: string;
  lastQty: string; lastPx: string; fee: string; currency: string; liquidity: string | null; at: string }

const TRADES = `query DeskTrades($account: String, $side: OrderSide, $symbol: String, $from: DateTime, $to: DateTime,
  $after: String) { trades(account: $account, side: $side, symbol: $symbol, from: $from, to: $to, first: 20, after: $after) {
  edges { node { id orderId execId account symbol mic side lastQty lastPx fee currency liquidity at } }
  pageInfo { hasNextPage endCursor } totalCount } }`;

const FILLS = `subscription DeskFills { orderUpdates { sequence order { id cumQty version } } }`;

export function Trades({ accounts }: { accounts: string[] }) {
  const [filter, setFilter] = useState<TradeFilter>({ account: "", side: "", from: "", to: "", symbol: "" });
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const variables = useMemo(() => ({ ...tradeVariables(filter), after: cursors[cursors.length - 1] }), [filter, cursors]);
  const [result, refetch] = useQuery<{ trades: { edges: { node: Trade }[]; pageInfo: PageInfo; totalCount: number } }>({
    query: TRADES, variables, requestPolicy: "network-only",
  });
  const set = (key: keyof TradeFilter, value: string) => { setFilter({ ...filter, [key]: value }); setCursors([null]); };
  // A fill anywhere in the tenant: read the trades again.
  const [fills] = useSubscription<{ orderUpdates: { order: { id: string; cumQty: string; version: number } } }>({ query: FILLS });
  const fill = fills.data?.orderUpdates.order;
  useEffect(() => {
    if (fill && Number(fill.cumQty) > 0) refetch({ requestPolicy: "network-only" });
  }, [fill, refetch]);
  const rows = result.data?.trades.edges.map((e) => e.node) ?? [];
  return (
    <Panel title="Trades" testId="trades"
      actions={<>
        {result.data ? <span className="meta" data-testid="trades-total">{result.data.trades.totalCount} fills</span> : null}
        <button type="button" onClick={() => refetch({ requestPolicy: "network-only" })}>Refresh</button>
      </>}>
      <form className="form inline" aria-label="trade filters" onSubmit={(e) => e.preventDefault()}>
        <label>Account <select name="tradeAccount" value={filter.account} onChange={(e) => set("account", e.target.value)}>
          <option value="">all</option>{accounts.map((a) => <option key={a}>{a}</option>)}</select></label>
        <label>Side <select name="tradeSide" value={filter.side} onChange={(e) => set("side", e.target.value)}>
          <option value="">any</option>{SIDES.map((s) => <option key={s}>{s}</option>)}</select></label>
        <label>Symbol <input name="tradeSymbol" value={filter.symbol} onChange={(e) => set("symbol", e.target.value)} /></label>
        <label>From <input type="date" name="tradeFrom" value={filter.from} onChange={(e) => set("from", e.target.value)} /></label>
        <label>To <input type="date" name="tradeTo" value={filter.to} onChange={(e) => set("to", e.target.value)} /></label>
      </form>
      <Errors errors={fromCombined(result.error)} />
      {result.fetching && !result.data ? <Loading what="trades" /> : !rows.length ? <Empty>No fills match.</Empty> : (
        <table aria-label="trades">
          <thead><tr><th>At</th><th>Account</th><th>Instrument</th><th>Side</th><th>Qty</th><th>Price</th><th>Fee</th>
            <th>Liquidity</th><th>Exec id</th></tr></thead>
          <tbody>{rows.map((t) => (
            <tr key={t.id} data-trade={t.execId}><td>{when(t.at)}</td><td>{t.account}</td><td>{t.symbol}.{t.mic}</td>
              <td>{t.side}</td><td className="num">{t.lastQty}</td><td className="num">{t.lastPx} {t.currency}</td>
              <td className="num">{money(t.fee)}</td><td>{t.liquidity ?? "—"}</td><td><code>{t.execId}</code></td></tr>
          ))}</tbody>
        </table>
      )}
      <Pager pageInfo={result.data?.trades.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}

interface Alert { sequence: number; orderId: string; clientOrderId: string; account: string; symbol: string; mic: string;
  denials: unknown; jurisdictions: string[]; decidedAt: string }
const ALERTS = `subscription DeskComplianceAlerts { complianceAlerts { sequence orderId clientOrderId account symbol mic
  denials jurisdictions decidedAt } }`;

export function ComplianceAlerts() {
  const [alerts] = useSubscription<{ complianceAlerts: Alert }, Alert[]>({ query: ALERTS },
    (list = [], data) => [data.complianceAlerts, ...list.filter((a) => a.sequence !== data.complianceAlerts.sequence)].slice(0, 50));
  const [shown, setShown] = useState(10);
  const list = alerts.data ?? [];
  return (
    <Panel title="Compliance denials" testId="compliance-alerts"
      actions={<span className={`live ${alerts.error ? "down" : "up"}`}>{alerts.error ? "live: off" : "live"}</span>}>
      <Errors errors={fromCombined(alerts.error)} />
      {!list.length ? <Empty>No denial since this page opened.</Empty> : (
        <ul className="alerts">
          {list.slice(0, shown).map((a) => (
            <li key={a.sequence} data-alert={a.clientOrderId}>
              <span className="meta">{when(a.decidedAt)}</span> {a.clientOrderId} · {a.account} · {a.symbol}.{a.mic}
              {a.jurisdictions.length ? ` · ${a.jurisdictions.join(", ")}` : ""}
              <ul>{denialsOf(a.denials).map((d, i) => <li key={i}><code className="code">{d.code}</code> {d.message}</li>)}</ul>
            </li>
          ))}
        </ul>
      )}
      {list.length > shown ? <button type="button" onClick={() => setShown(shown + 10)}>Show more</button> : null}
    </Panel>
  );
}

interface Controls { killSwitch: boolean; restricted: string[]; maxOrderValue: string | null; maxOrderQuantity: string | null;
  collarPct: string; maxPosition: string | null; maxConcentrationPct: string | null; throttleMaxOrders: number | null;
  throttleWindowMs: number; duplicateWindowMs: number | null; killSwitchAccounts: string[] }
interface MassCancel { reason: string; matched: number; canceled: number; refused: number; notSent: number; failed: number }
const CONTROL_FIELDS = `killSwitch restricted maxOrderValue maxOrderQuantity collarPct maxPosition maxConcentrationPct
  throttleMaxOrders throttleWindowMs duplicateWindowMs killSwitchAccounts`;
const MASS = "reason matched canceled refused notSent failed";
const CONTROLS = `query DeskControls { complianceControls { ${CONTROL_FIELDS} } }`;
const SET_CONTROLS = `mutation DeskSetControls($input: ComplianceControlsInput!) { setComplianceControls(input: $input) {
  ${CONTROL_FIELDS} } }`;
const KILL = `mutation DeskKill($on: Boolean!, $account: String) { setKillSwitch(on: $on, account: $account) {
  on account cancel { ${MASS} } } }`;
const CANCEL_MANY = `mutation DeskCancelMany($filter: CancelOrdersFilter!) { cancelOrders(filter: $filter) { ${MASS} } }`;

/** The form's values as ComplianceControlsInput: blank limits are left out (unchanged). */
export function controlsInput(form: Record<string, string>): Record<string, unknown> {
  const input: Record<string, unknown> = {};
  for (const key of ["maxOrderValue", "maxOrderQuantity", "collarPct", "maxPosition", "maxConcentrationPct"]) {
    if (form[key]?.trim()) input[key] = form[key].trim();
  }
  for (const key of ["throttleMaxOrders", "throttleWindowMs", "duplicateWindowMs"]) {
    if (form[key]?.trim()) input[key] = Number.parseInt(form[key], 10);
  }
  if (form.restricted !== undefined)
    input.restricted = form.restricted.split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);
  return input;
}

export function ComplianceControlsPanel({ accounts }: { accounts: string[] }) {
  const [controls, refetch] = useQuery<{ complianceControls: Controls }>({ query: CONTROLS, requestPolicy: "network-only" });
  const c = controls.data?.complianceControls;
  const [form, setForm] = useState<Record<string, string>>({});
  useEffect(() => {
    if (!c) return;
    setForm({ maxOrderValue: c.maxOrderValue ?? "", maxOrderQuantity: c.maxOrderQuantity ?? "", collarPct: c.collarPct,
      maxPosition: c.maxPosition ?? "", maxConcentrationPct: c.maxConcentrationPct ?? "",
      throttleMaxOrders: c.throttleMaxOrders?.toString() ?? "", throttleWindowMs: String(c.throttleWindowMs),
      duplicateWindowMs: c.duplicateWindowMs?.toString() ?? "", restricted: c.restricted.join(", ") });
  }, [c]);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [outcome, setOutcome] = useState<string | null>(null);
  const [scope, setScope] = useState("");
  const [, save] = useMutation(SET_CONTROLS);
  const [, kill] = useMutation<{ setKillSwitch: { on: boolean; account: string | null; cancel: MassCancel | null } }>(KILL);
  const [, cancelMany] = useMutation<{ cancelOrders: MassCancel }>(CANCEL_MANY);
  const [cancelAccount, setCancelAccount] = useState("");
  const [cancelSymbol, setCancelSymbol] = useState("");
  const [cancelSide, setCancelSide] = useState("");

  const switchedOn = c ? (scope ? c.killSwitchAccounts.includes(scope) : c.killSwitch) : false;
  const described = (m: MassCancel | null | undefined) =>
    m ? `${m.matched} open, ${m.canceled} cancelled, ${m.refused} refused, ${m.notSent} not sent, ${m.failed} failed` : "";

  async function submit(e: FormEvent) {
    e.preventDefault();
    setOutcome(null);
    const r = await save({ input: controlsInput(form) });
    setErrors(fromCombined(r.error));
    if (!r.error) { setOutcome("Controls saved."); refetch({ requestPolicy: "network-only" }); }
  }
  async function toggle() {
    setOutcome(null);
    const r = await kill({ on: !switchedOn, account: scope || null });
    setErrors(fromCombined(r.error));
    if (r.data) {
      const k = r.data.setKillSwitch;
      setOutcome(`Kill switch ${k.on ? "on" : "off"}${k.account ? ` for ${k.account}` : " for the tenant"}` +
        (k.cancel ? `: ${described(k.cancel)}` : ""));
      refetch({ requestPolicy: "network-only" });
    }
  }
  async function massCancel(e: FormEvent) {
    e.preventDefault();
    setOutcome(null);
    const filter = { account: cancelAccount || null, symbol: cancelSymbol.trim().toUpperCase() || null,
      side: cancelSide || null, all: !cancelAccount && !cancelSymbol.trim() && !cancelSide };
    const r = await cancelMany({ filter });
    setErrors(fromCombined(r.error));
    if (r.data) setOutcome(`Mass cancel: ${described(r.data.cancelOrders)}`);
  }
  const field = (key: string, label: string) => (
    <label key={key}>{label}<input name={key} value={form[key] ?? ""} onChange={(e) => setForm({ ...form, [key]: e.target.value })} /></label>
  );
  return (
    <Panel title="Compliance controls" testId="compliance-controls">
      <Errors errors={[...fromCombined(controls.error), ...errors]} label="compliance errors" />
      {controls.fetching && !c ? <Loading what="controls" /> : c ? (
        <>
          <div className={`kill ${c.killSwitch ? "on" : "off"}`} data-kill={String(c.killSwitch)}>
            <b>Kill switch {c.killSwitch ? "ON: the tenant's orders are refused" : "off"}</b>
            {c.killSwitchAccounts.length ? <span> · on for {c.killSwitchAccounts.join(", ")}</span> : null}
            <div className="form inline">
              <label>Scope <select aria-label="kill switch scope" value={scope} onChange={(e) => setScope(e.target.value)}>
                <option value="">whole tenant</option>{accounts.map((a) => <option key={a}>{a}</option>)}</select></label>
              <button type="button" className={switchedOn ? "primary" : "danger"} onClick={() => void toggle()}>
                {switchedOn ? "Release kill switch" : "Engage kill switch"}</button>
            </div>
          </div>
          <form className="form" onSubmit={submit} aria-label="compliance limits">
            {field("maxOrderValue", "Max order value")}{field("maxOrderQuantity", "Max order quantity")}
            {field("collarPct", "Price collar %")}{field("maxPosition", "Max position")}
            {field("maxConcentrationPct", "Max concentration %")}{field("throttleMaxOrders", "Throttle: orders")}
            {field("throttleWindowMs", "Throttle window ms")}{field("duplicateWindowMs", "Duplicate window ms")}
            {field("restricted", "Restricted list")}
            <button type="submit" className="primary">Save controls</button>
          </form>
          <form className="form inline" onSubmit={massCancel} aria-label="mass cancel">
            <label>Account <select name="cancelAccount" value={cancelAccount} onChange={(e) => setCancelAccount(e.target.value)}>
              <option value="">any</option>{accounts.map((a) => <option key={a}>{a}</option>)}</select></label>
            <label>Symbol <input name="cancelSymbol" value={cancelSymbol} onChange={(e) => setCancelSymbol(e.target.value)} /></label>
            <label>Side <select name="cancelSide" value={cancelSide} onChange={(e) => setCancelSide(e.target.value)}>
              <option value="">any</option>{SIDES.map((s) => <option key={s}>{s}</option>)}</select></label>
            <button type="submit" className="danger">Cancel open orders</button>
          </form>
        </>
      ) : <Empty>No controls.</Empty>}
      {outcome ? <p className="ok" role="status">{outcome}</p> : null}
    </Panel>
  );
}
