import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useMutation, useQuery, useSubscription } from "urql";
import { Empty, Errors, Loading, Pager, Panel, when, type PageInfo } from "../components/common";
import { amendVariables, money, pnlClass } from "../lib/desk";
import { fromCombined, fromGraphQLErrors, type ShownError } from "../lib/errors";
import { hasRole, useSession } from "../session";
import { ComplianceAlerts, ComplianceControlsPanel, Trades } from "./DeskPanels";
import {
  ORDER_TYPES, SIDES, TIMES_IN_FORCE, checkTicket, isOpen, mergeOrder, newClientOrderId, toInput,
  type BlotterOrder, type Ticket, type TicketProblem,
} from "../lib/orders";

const ORDER = `id clientOrderId account symbol mic side ordType timeInForce quantity limitPrice status cumQty
  leavesQty avgPx rejectCode rejectText createdAt updatedAt version`;

const ACCOUNTS = `query DeskAccounts { tradingAccounts { code name currency } }`;
const ORDERS = `query DeskOrders($after: String, $filter: OrderFilter) { orders(first: 25, after: $after, filter: $filter) {
  edges { node { ${ORDER} } } pageInfo { hasNextPage endCursor } totalCount } }`;
const AMEND = `mutation DeskAmend($id: ID!, $quantity: String, $limitPrice: String) {
  amendOrder(id: $id, quantity: $quantity, limitPrice: $limitPrice) { ${ORDER} } }`;
const UPDATES = `subscription DeskOrderUpdates { orderUpdates { sequence order { ${ORDER} } } }`;
const SUBMIT = `mutation DeskSubmit($input: SubmitOrderInput!) { submitOrder(input: $input) { ${ORDER} } }`;
const CANCEL = `mutation DeskCancel($id: ID!) { cancelOrder(id: $id) { ${ORDER} } }`;
const PNL = "currency rate realizedPnl unrealizedPnl fees netPnl marketValue complete";
const POSITIONS = `query DeskPositions($accounts: [String!]) { positionSummary(accounts: $accounts) {
  at baseCurrency total { ${PNL} }
  accounts { account inAccountCurrency { ${PNL} } inBaseCurrency { ${PNL} } }
  positions { account instrumentKey currency accountCurrency quantity avgPrice markPrice
    inAccountCurrency { ${PNL} } inBaseCurrency { ${PNL} } updatedAt } } }`;

function emptyTicket(account: string): Ticket {
  return { account, symbol: "AAPL", mic: "XNAS", side: "BUY", quantity: "10", ordType: "LIMIT",
    timeInForce: "GTC", limitPrice: "100", stopPrice: "", expireAt: "", clientOrderId: newClientOrderId() };
}

interface Pnl { currency: string; rate: string | null; realizedPnl: string | null; unrealizedPnl: string | null;
  fees: string | null; netPnl: string | null; marketValue: string | null; complete: boolean }
interface SummaryPosition { account: string; instrumentKey: string; currency: string; accountCurrency: string;
  quantity: string; avgPrice: string; markPrice: string | null; inAccountCurrency: Pnl; inBaseCurrency: Pnl; updatedAt: string }

export function Desk() {
  const { viewer } = useSession();
  const [accounts] = useQuery<{ tradingAccounts: { code: string; name: string; currency: string }[] }>({ query: ACCOUNTS });
  const codes = accounts.data?.tradingAccounts.map((a) => a.code) ?? [];
  const [account, setAccount] = useState<string>("");
  useEffect(() => {
    if (!account && codes.length) setAccount(codes[0]);
  }, [account, codes]);
  return (
    <div className="page desk">
      <h1>Trading desk</h1>
      <Errors errors={fromCombined(accounts.error)} />
      <div className="grid two">
        <OrderTicket accounts={codes} account={account} onAccount={setAccount} />
        <Positions account={account} />
      </div>
      <Blotter />
      <Trades accounts={codes} />
      <div className="grid two">
        <ComplianceAlerts />
        {hasRole(viewer, "compliance_officer") ? <ComplianceControlsPanel accounts={codes} /> : null}
      </div>
    </div>
  );
}

function OrderTicket({ accounts, account, onAccount }: {
  accounts: string[]; account: string; onAccount: (a: string) => void;
}) {
  const [ticket, setTicket] = useState<Ticket>(() => emptyTicket(account));
  const [problems, setProblems] = useState<TicketProblem[]>([]);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [placed, setPlaced] = useState<BlotterOrder | null>(null);
  const [, submit] = useMutation<{ submitOrder: BlotterOrder }>(SUBMIT);
  useEffect(() => setTicket((t) => ({ ...t, account: t.account || account })), [account]);

  const set = <K extends keyof Ticket>(key: K, value: Ticket[K]) => {
    setTicket((t) => ({ ...t, [key]: value }));
    if (key === "account") onAccount(String(value));
  };
  const problem = (field: keyof Ticket) => problems.find((p) => p.field === field)?.message;

  async function send(event: FormEvent) {
    event.preventDefault();
    const found = checkTicket(ticket);
    setProblems(found);
    setErrors([]);
    setPlaced(null);
    if (found.length) return;
    const result = await submit({ input: toInput(ticket) });
    if (result.error) setErrors(fromCombined(result.error));
    else if (result.data) {
      const order = result.data.submitOrder;
      setPlaced(order);
      if (order.rejectCode) setErrors([{ code: order.rejectCode, message: order.rejectText ?? order.status }]);
    }
    setTicket((t) => ({ ...t, clientOrderId: newClientOrderId() }));
  }

  const showLimit = ticket.ordType === "LIMIT" || ticket.ordType === "STOP_LIMIT";
  const showStop = ticket.ordType === "STOP" || ticket.ordType === "STOP_LIMIT";
  return (
    <Panel title="Order ticket" testId="order-ticket">
      <form className="form ticket" onSubmit={send} aria-label="order ticket">
        <label>Account
          <input list="accounts" value={ticket.account} onChange={(e) => set("account", e.target.value)}
            aria-invalid={!!problem("account")} name="account" />
          <datalist id="accounts">{accounts.map((a) => <option key={a} value={a} />)}</datalist>
          <small>{problem("account")}</small>
        </label>
        <label>Symbol
          <input value={ticket.symbol} onChange={(e) => set("symbol", e.target.value)} name="symbol" />
          <small>{problem("symbol")}</small>
        </label>
        <label>Venue (MIC)
          <input value={ticket.mic} onChange={(e) => set("mic", e.target.value)} name="mic" />
          <small>{problem("mic")}</small>
        </label>
        <label>Side
          <select value={ticket.side} onChange={(e) => set("side", e.target.value as Ticket["side"])} name="side">
            {SIDES.map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        <label>Quantity
          <input value={ticket.quantity} inputMode="decimal" onChange={(e) => set("quantity", e.target.value)}
            name="quantity" />
          <small>{problem("quantity")}</small>
        </label>
        <label>Type
          <select value={ticket.ordType} onChange={(e) => set("ordType", e.target.value as Ticket["ordType"])}
            name="ordType">
            {ORDER_TYPES.map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        <label>Time in force
          <select value={ticket.timeInForce}
            onChange={(e) => set("timeInForce", e.target.value as Ticket["timeInForce"])} name="timeInForce">
            {TIMES_IN_FORCE.map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        {showLimit ? (
          <label>Limit price
            <input value={ticket.limitPrice} inputMode="decimal" onChange={(e) => set("limitPrice", e.target.value)}
              name="limitPrice" />
            <small>{problem("limitPrice")}</small>
          </label>
        ) : null}
        {showStop ? (
          <label>Stop price
            <input value={ticket.stopPrice} inputMode="decimal" onChange={(e) => set("stopPrice", e.target.value)}
              name="stopPrice" />
            <small>{problem("stopPrice")}</small>
          </label>
        ) : null}
        {ticket.timeInForce === "GTD" ? (
          <label>Expires
            <input type="datetime-local" value={ticket.expireAt} onChange={(e) => set("expireAt", e.target.value)}
              name="expireAt" />
            <small>{problem("expireAt")}</small>
          </label>
        ) : null}
        <button type="submit" className="primary">Place order</button>
      </form>
      <Errors errors={errors} label="order errors" />
      {placed && !placed.rejectCode ? (
        <p className="ok" role="status">Order {placed.clientOrderId}: {placed.status}</p>
      ) : null}
    </Panel>
  );
}

function Positions({ account }: { account: string }) {
  const [result, refetch] = useQuery<{ positionSummary: { at: string; baseCurrency: string; total: Pnl;
    accounts: { account: string; inAccountCurrency: Pnl; inBaseCurrency: Pnl }[]; positions: SummaryPosition[] } }>({
    query: POSITIONS, variables: { accounts: account ? [account] : null }, pause: !account, requestPolicy: "network-only",
  });
  // Fills move positions: read again when an order of this account fills.
  const [fills] = useSubscription<{ orderUpdates: { order: BlotterOrder } }>({ query: UPDATES, pause: !account });
  const filled = fills.data?.orderUpdates.order;
  useEffect(() => {
    if (filled && filled.account === account && Number(filled.cumQty) > 0) refetch({ requestPolicy: "network-only" });
  }, [filled, account, refetch]);
  const summary = result.data?.positionSummary;
  const book = summary?.accounts.find((a) => a.account === account);
  return (
    <Panel title={`Positions${account ? ` · ${account}` : ""}`} testId="positions"
      actions={<button type="button" onClick={() => refetch({ requestPolicy: "network-only" })}>Refresh</button>}>
      <Errors errors={fromCombined(result.error)} />
      {!account ? <Empty>No trading account yet.</Empty> : result.fetching && !result.data ? <Loading what="positions" /> :
        !summary?.positions.length ? <Empty>No positions.</Empty> : (
          <>
            <table aria-label="positions">
              <thead><tr><th>Instrument</th><th>Qty</th><th>Avg</th><th>Mark</th>
                <th>Unrealised</th><th>Net P&amp;L (account)</th><th>Net P&amp;L ({summary.baseCurrency})</th></tr></thead>
              <tbody>
                {summary.positions.map((p) => (
                  <tr key={`${p.account}/${p.instrumentKey}`} data-position={p.instrumentKey}>
                    <td>{p.instrumentKey}</td><td className="num">{p.quantity}</td>
                    <td className="num">{money(p.avgPrice)} {p.currency}</td><td className="num">{money(p.markPrice)}</td>
                    <td className={`num ${pnlClass(p.inAccountCurrency.unrealizedPnl)}`}>{money(p.inAccountCurrency.unrealizedPnl)}</td>
                    <td className={`num ${pnlClass(p.inAccountCurrency.netPnl)}`} data-pnl="account">
                      {money(p.inAccountCurrency.netPnl)} {p.inAccountCurrency.currency}</td>
                    <td className={`num ${pnlClass(p.inBaseCurrency.netPnl)}`} data-pnl="base"
                      title={p.inBaseCurrency.complete ? "" : "a rate or mark is missing"}>
                      {money(p.inBaseCurrency.netPnl)} {p.inBaseCurrency.currency}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {book ? (
              <p className="meta" data-testid="account-pnl">Account net P&amp;L {money(book.inAccountCurrency.netPnl)}{" "}
                {book.inAccountCurrency.currency} · in {summary.baseCurrency} {money(book.inBaseCurrency.netPnl)}
                {book.inBaseCurrency.complete ? "" : " (incomplete: a rate or mark is missing)"} · valued {when(summary.at)}</p>
            ) : null}
          </>
        )}
    </Panel>
  );
}

const STATUS_FILTERS = ["NEW", "PENDING", "ACCEPTED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "DENIED", "EXPIRED"];

function Blotter() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const after = cursors[cursors.length - 1];
  const [statuses, setStatuses] = useState<string[]>([]);
  const [side, setSide] = useState("");
  const filter = useMemo(() => (statuses.length || side ? { statuses: statuses.length ? statuses : null, side: side || null }
    : null), [statuses, side]);
  const [page] = useQuery<{ orders: { edges: { node: BlotterOrder }[]; pageInfo: PageInfo; totalCount: number } }>({
    query: ORDERS, variables: { after, filter }, requestPolicy: "network-only",
  });
  const [amending, setAmending] = useState<string | null>(null);
  const [live, setLive] = useState<BlotterOrder[]>([]);
  const [updates] = useSubscription<{ orderUpdates: { order: BlotterOrder } }, BlotterOrder[]>(
    { query: UPDATES },
    (list = [], data) => mergeOrder(list, data.orderUpdates.order),
  );
  useEffect(() => {
    if (updates.data) setLive(updates.data);
  }, [updates.data]);
  const [cancelErrors, setCancelErrors] = useState<ShownError[]>([]);
  const [, cancel] = useMutation(CANCEL);

  // The page's rows with the live updates laid over them (on the first page, new orders on top).
  const rows = useMemo(() => {
    let list = page.data?.orders.edges.map((e) => e.node) ?? [];
    for (const order of live) {
      const fits = (!statuses.length || statuses.includes(order.status)) && (!side || order.side === side);
      if ((after === null && fits) || list.some((o) => o.id === order.id)) list = mergeOrder(list, order, 1000);
    }
    return list;
  }, [page.data, live, after, statuses, side]);

  async function cancelOrder(id: string) {
    setCancelErrors([]);
    const result = await cancel({ id });
    if (result.error) setCancelErrors(fromCombined(result.error));
  }

  return (
    <Panel title="Blotter" testId="blotter"
      actions={<>
        <details className="filter">
          <summary>Statuses{statuses.length ? ` (${statuses.length})` : ""}</summary>
          <fieldset aria-label="statuses">
            {STATUS_FILTERS.map((st) => (
              <label key={st}><input type="checkbox" checked={statuses.includes(st)} onChange={(e) => {
                setStatuses(e.target.checked ? [...statuses, st] : statuses.filter((x) => x !== st)); setCursors([null]);
              }} /> {st}</label>
            ))}
          </fieldset>
        </details>
        <select aria-label="blotter side" value={side} onChange={(e) => { setSide(e.target.value); setCursors([null]); }}>
          <option value="">any side</option>{SIDES.map((x) => <option key={x}>{x}</option>)}
        </select>
        {page.data ? <span className="meta" data-testid="orders-total">{page.data.orders.totalCount} orders</span> : null}
        <span className={`live ${updates.error ? "down" : "up"}`}>{updates.error ? "live: off" : "live"}</span>
      </>}>
      <Errors errors={[...fromCombined(page.error), ...cancelErrors,
        ...(updates.error ? fromGraphQLErrors(updates.error.graphQLErrors) : [])]} />
      {page.fetching && !page.data ? <Loading what="orders" /> : !rows.length
        ? <Empty>{filter ? "No orders match." : "No orders yet."}</Empty> : (
        <table className="blotter">
          <thead>
            <tr><th>Client id</th><th>Account</th><th>Instrument</th><th>Side</th><th>Type</th><th>TIF</th>
              <th>Qty</th><th>Limit</th><th>Filled</th><th>Avg px</th><th>Status</th><th>Code</th><th>Updated</th><th /></tr>
          </thead>
          <tbody>
            {rows.map((o) => (
              <tr key={o.id} data-order={o.clientOrderId} data-status={o.status}>
                <td>{o.clientOrderId}</td><td>{o.account}</td><td>{o.symbol}.{o.mic}</td><td>{o.side}</td>
                <td>{o.ordType}</td><td>{o.timeInForce}</td><td className="num">{o.quantity}</td>
                <td className="num">{o.limitPrice ?? "—"}</td><td className="num">{o.cumQty}</td>
                <td className="num">{o.avgPx}</td><td><span className={`status s-${o.status}`}>{o.status}</span></td>
                <td title={o.rejectText ?? ""}>{o.rejectCode ?? ""}</td><td>{when(o.updatedAt)}</td>
                <td className="row-actions">{isOpen(o) ? <>
                  <button type="button" onClick={() => setAmending(amending === o.id ? null : o.id)}
                    aria-label={`amend ${o.clientOrderId}`} aria-expanded={amending === o.id}>Amend</button>
                  <button type="button" onClick={() => void cancelOrder(o.id)}
                    aria-label={`cancel ${o.clientOrderId}`}>Cancel</button></> : null}</td>
              </tr>
            )).flatMap((row, i) => rows[i].id === amending && isOpen(rows[i])
              ? [row, <AmendRow key={`${rows[i].id}-amend`} order={rows[i]} onDone={() => setAmending(null)} />] : [row])}
          </tbody>
        </table>
      )}
      <Pager pageInfo={page.data?.orders.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}

function AmendRow({ order, onDone }: { order: BlotterOrder; onDone: () => void }) {
  const [quantity, setQuantity] = useState(order.quantity);
  const [limitPrice, setLimitPrice] = useState(order.limitPrice ?? "");
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, amend] = useMutation<{ amendOrder: BlotterOrder }>(AMEND);
  async function send(e: FormEvent) {
    e.preventDefault();
    const checked = amendVariables(order, { quantity, limitPrice });
    if (!checked.variables) { setErrors([{ code: "INPUT", message: checked.problem ?? "" }]); return; }
    const r = await amend(checked.variables);
    if (r.error) setErrors(fromCombined(r.error));
    else onDone();
  }
  return (
    <tr className="amend-row" data-amend={order.clientOrderId}>
      <td colSpan={14}>
        <form className="form inline" onSubmit={send} aria-label={`amend ${order.clientOrderId}`}>
          <label>Quantity <input name="amendQuantity" value={quantity} inputMode="decimal"
            onChange={(e) => setQuantity(e.target.value)} autoFocus /></label>
          {order.limitPrice !== null ? <label>Limit price <input name="amendLimit" value={limitPrice} inputMode="decimal"
            onChange={(e) => setLimitPrice(e.target.value)} /></label> : null}
          <button type="submit" className="primary">Send amend</button>
          <button type="button" onClick={onDone}>Close</button>
        </form>
        <Errors errors={errors} label="amend errors" />
      </td>
    </tr>
  );
}
