// DeFi: a quote with its route, a swap within a slippage tolerance, and the lending position
// with its health factor (supply, borrow, repay, withdraw).
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useClient, useMutation, useQuery } from "urql";
import { Empty, Errors, Loading, Pager, Panel, when, type PageInfo } from "../components/common";
import { healthBand, minimumOut, newIdempotencyKey, slippageBps } from "../lib/defi";
import { money } from "../lib/desk";
import { fromCombined, type ShownError } from "../lib/errors";

interface Token { symbol: string; address: string; decimals: number }
const TOKEN = "symbol name address decimals";
const CHAINS = `query DefiChains { defiChains { chainId name embedded explorerUrl } }`;
const POOLS = `query DefiPools($chain: String!) { defiPools(chain: $chain) { address protocol tokens { ${TOKEN} } fee } }`;
const ROUTE = `path { symbol } hops { pool protocol tokenIn { symbol } tokenOut { symbol } amountIn amountOut fee }
  amountOut priceImpact gasEstimate`;
const QUOTE = `query DefiQuote($chain: String!, $tokenIn: String!, $tokenOut: String!, $amountIn: String!) {
  defiQuote(chain: $chain, tokenIn: $tokenIn, tokenOut: $tokenOut, amountIn: $amountIn) { chain block
  tokenIn { symbol } tokenOut { symbol } amountIn amountOut priceImpact fees gasEstimate route { ${ROUTE} }
  alternatives { ${ROUTE} } } }`;
const SWAP = `mutation DefiSwap($input: DefiSwapInput!) { defiSwap(input: $input) { id status errorCode quotedOut minOut amountOut
  slippageBps txHashes blockNumber tokenIn { symbol } tokenOut { symbol } amountIn createdAt } }`;
const SWAPS = `query DefiSwaps($after: String) { defiSwaps(first: 10, after: $after) { edges { node { id chain status errorCode
  tokenIn { symbol } tokenOut { symbol } amountIn quotedOut minOut amountOut slippageBps createdAt } }
  pageInfo { hasNextPage endCursor } } }`;
const POSITION = `query DefiPosition($chain: String!) { defiPosition(chain: $chain) { chain pool account collateralValue debtValue
  borrowCapacity healthFactor healthFactorFloor liquidationPrice liquidationToken
  assets { token price supplied borrowed collateralFactor liquidationThreshold } } }`;
const ACCOUNT = `query DefiAccount($chain: String!) { defiAccount(chain: $chain) { address nativeBalance
  balances { token { symbol } amount } } }`;
const LEND: Record<string, string> = Object.fromEntries(["defiSupply", "defiBorrow", "defiRepay", "defiWithdraw"].map((m) => [m,
  `mutation Lend($input: DefiLendingInput!) { ${m}(input: $input) { id action status token amount healthFactorBefore
  healthFactorAfter } }`]));

interface Route { path: { symbol: string }[]; hops: { pool: string; protocol: string; tokenIn: { symbol: string };
  tokenOut: { symbol: string }; amountIn: string; amountOut: string; fee: string }[]; amountOut: string; priceImpact: string;
  gasEstimate: number }
interface Quote { chain: string; block: number; tokenIn: { symbol: string }; tokenOut: { symbol: string }; amountIn: string;
  amountOut: string; priceImpact: string; gasEstimate: number; route: Route; alternatives: Route[] }

export function DeFi() {
  const [chains] = useQuery<{ defiChains: { chainId: string; name: string; embedded: boolean }[] }>({ query: CHAINS });
  const list = chains.data?.defiChains ?? [];
  const [chain, setChain] = useState("");
  useEffect(() => { if (!chain && list.length) setChain(list[0].chainId); }, [chain, list]);
  const [pools] = useQuery<{ defiPools: { address: string; protocol: string; tokens: Token[] }[] }>({
    query: POOLS, variables: { chain }, pause: !chain });
  const tokens = useMemo(() => {
    const seen = new Map<string, Token>();
    for (const p of pools.data?.defiPools ?? []) for (const t of p.tokens) seen.set(t.symbol, t);
    return [...seen.values()].sort((a, b) => a.symbol.localeCompare(b.symbol));
  }, [pools.data]);
  return (
    <div className="page defi">
      <h1>DeFi</h1>
      <Errors errors={[...fromCombined(chains.error), ...fromCombined(pools.error)]} />
      <div className="form inline">
        <label>Chain <select aria-label="chain" value={chain} onChange={(e) => setChain(e.target.value)}>
          {list.map((c) => <option key={c.chainId} value={c.chainId}>{c.name}{c.embedded ? " (embedded)" : ""}</option>)}
        </select></label>
        <span className="meta">{pools.data ? `${pools.data.defiPools.length} pools, ${tokens.length} tokens` : ""}</span>
      </div>
      {chains.fetching && !chains.data ? <Loading what="chains" /> : !list.length ? <Empty>No chain is configured.</Empty> : (
        <>
          <div className="grid two">
            <Swap chain={chain} tokens={tokens} />
            <Lending chain={chain} tokens={tokens} />
          </div>
          <Swaps />
        </>
      )}
    </div>
  );
}

function Swap({ chain, tokens }: { chain: string; tokens: Token[] }) {
  const [tokenIn, setTokenIn] = useState("");
  const [tokenOut, setTokenOut] = useState("");
  useEffect(() => {
    if (tokens.length >= 2 && !tokenIn) { setTokenIn(tokens.find((t) => t.symbol === "WETH")?.symbol ?? tokens[0].symbol);
      setTokenOut(tokens.find((t) => t.symbol === "USDC")?.symbol ?? tokens[1].symbol); }
  }, [tokens, tokenIn]);
  const [amount, setAmount] = useState("1");
  const [slippage, setSlippage] = useState("0.5");
  const [quote, setQuote] = useState<Quote | null>(null);
  const [swap, setSwap] = useState<Record<string, unknown> | null>(null);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [busy, setBusy] = useState(false);
  const client = useClient();
  const [quoting, setQuoting] = useState(false);
  async function askQuote() {
    setSwap(null);
    setQuoting(true);
    const r = await client.query<{ defiQuote: Quote }>(QUOTE, { chain, tokenIn, tokenOut, amountIn: amount },
      { requestPolicy: "network-only" }).toPromise();
    setQuoting(false);
    setErrors(fromCombined(r.error));
    setQuote(r.data?.defiQuote ?? null);
  }
  const [, doSwap] = useMutation(SWAP);
  const bps = slippageBps(slippage);
  async function send() {
    if (!quote || bps === null) return;
    setBusy(true);
    const r = await doSwap({ input: { chain, tokenIn, tokenOut, amountIn: amount, slippageBps: bps,
      idempotencyKey: newIdempotencyKey("web-swap"), expectedAmountOut: quote.amountOut } });
    setBusy(false);
    setErrors(fromCombined(r.error));
    if (r.data) setSwap(r.data.defiSwap);
  }
  const select = (value: string, set: (v: string) => void, label: string) => (
    <label>{label} <select aria-label={label} value={value} onChange={(e) => { set(e.target.value); setQuote(null); }}>
      {tokens.map((t) => <option key={t.symbol}>{t.symbol}</option>)}</select></label>
  );
  return (
    <Panel title="Swap" testId="defi-swap">
      <form className="form inline" aria-label="quote" onSubmit={(e: FormEvent) => { e.preventDefault(); void askQuote(); }}>
        {select(tokenIn, setTokenIn, "token in")}{select(tokenOut, setTokenOut, "token out")}
        <label>Amount <input name="amountIn" value={amount} inputMode="decimal" onChange={(e) => { setAmount(e.target.value); setQuote(null); }} /></label>
        <button type="submit" disabled={!tokenIn || !tokenOut || quoting}>Quote</button>
      </form>
      {quoting ? <Loading what="quote" /> : null}
      {quote ? (
        <div className="quote-box" data-testid="defi-quote">
          <p><b>{quote.amountIn} {quote.tokenIn.symbol} → {quote.amountOut} {quote.tokenOut.symbol}</b> · impact{" "}
            {(Number(quote.priceImpact) * 100).toFixed(3)} % · gas {quote.gasEstimate} · block {quote.block}</p>
          <p className="route" aria-label="route">Route: {quote.route.path.map((t) => t.symbol).join(" → ")}</p>
          <table aria-label="route hops">
            <thead><tr><th>Pool</th><th>Protocol</th><th>In</th><th>Out</th><th>Fee</th></tr></thead>
            <tbody>{quote.route.hops.map((h, i) => (
              <tr key={i}><td><code>{h.pool.slice(0, 10)}…</code></td><td>{h.protocol}</td>
                <td className="num">{h.amountIn} {h.tokenIn.symbol}</td><td className="num">{h.amountOut} {h.tokenOut.symbol}</td>
                <td className="num">{h.fee}</td></tr>))}</tbody>
          </table>
          {quote.alternatives.length ? <p className="meta">Alternatives: {quote.alternatives.map((a) =>
            `${a.path.map((t) => t.symbol).join("→")} ${a.amountOut}`).join("; ")}</p> : null}
          <div className="form inline">
            <label>Slippage % <input name="slippage" value={slippage} inputMode="decimal" onChange={(e) => setSlippage(e.target.value)}
              aria-invalid={bps === null} /></label>
            <span className="meta">{bps === null ? "between 0 and 50 %" : `at least ${minimumOut(quote.amountOut, bps).toPrecision(8)} ${quote.tokenOut.symbol}`}</span>
            <button type="button" className="primary" disabled={bps === null || busy} onClick={() => void send()}>Swap</button>
          </div>
        </div>
      ) : null}
      <Errors errors={errors} label="swap errors" />
      {swap ? <p className={swap.status === "EXECUTED" ? "ok" : "field-problem"} role="status" data-swap={String(swap.status)}>
        Swap {String(swap.status)}{swap.errorCode ? ` (${String(swap.errorCode)})` : ""}: got {String(swap.amountOut ?? "—")}
        {" "}(min {String(swap.minOut)}, {String(swap.slippageBps)} bps)</p> : null}
    </Panel>
  );
}

interface Position { pool: string; account: string; collateralValue: string; debtValue: string; borrowCapacity: string;
  healthFactor: string | null; healthFactorFloor: string; liquidationPrice: string | null; liquidationToken: string | null;
  assets: { token: string; price: string; supplied: string; borrowed: string; collateralFactor: string }[] }

function Lending({ chain, tokens }: { chain: string; tokens: Token[] }) {
  const [position, refetch] = useQuery<{ defiPosition: Position }>({ query: POSITION, variables: { chain }, pause: !chain,
    requestPolicy: "network-only" });
  const [account, refetchAccount] = useQuery<{ defiAccount: { address: string | null; nativeBalance: string;
    balances: { token: { symbol: string }; amount: string }[] } }>({ query: ACCOUNT, variables: { chain }, pause: !chain,
    requestPolicy: "network-only" });
  const [action, setAction] = useState("defiSupply");
  const [token, setToken] = useState("");
  useEffect(() => { if (!token && tokens.length) setToken(tokens.find((t) => t.symbol === "WETH")?.symbol ?? tokens[0].symbol); }, [tokens, token]);
  const [amount, setAmount] = useState("1");
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [done, setDone] = useState<string | null>(null);
  const [, supply] = useMutation(LEND.defiSupply);
  const [, borrow] = useMutation(LEND.defiBorrow);
  const [, repay] = useMutation(LEND.defiRepay);
  const [, withdraw] = useMutation(LEND.defiWithdraw);
  async function send(e: FormEvent) {
    e.preventDefault();
    setDone(null);
    const run = { defiSupply: supply, defiBorrow: borrow, defiRepay: repay, defiWithdraw: withdraw }[action]!;
    const r = await run({ input: { chain, token, amount, idempotencyKey: newIdempotencyKey("web-lend") } });
    setErrors(fromCombined(r.error));
    if (r.data) {
      const a = r.data[action] as { action: string; status: string; healthFactorAfter: string | null };
      setDone(`${a.action} ${a.status}; health factor now ${a.healthFactorAfter ?? "— (no debt)"}`);
      refetch({ requestPolicy: "network-only" });
      refetchAccount({ requestPolicy: "network-only" });
    }
  }
  const p = position.data?.defiPosition;
  // No account on the chain yet is the empty state, not an error: the first write opens it.
  const noAccount = (e: ShownError) => e.code === "DEFI_ACCOUNT_NOT_FOUND";
  const positionErrors = fromCombined(position.error);
  const band = healthBand(p?.healthFactor, p?.healthFactorFloor);
  return (
    <Panel title="Lending" testId="defi-lending">
      <Errors errors={[...positionErrors.filter((e) => !noAccount(e)), ...fromCombined(account.error)]} />
      {account.data ? <p className="meta">Account {account.data.defiAccount.address ?? "not opened yet (made on the first write)"}
        {account.data.defiAccount.balances.length ? ` · ${account.data.defiAccount.balances.map((b) =>
          `${b.amount} ${b.token.symbol}`).join(", ")}` : ""}</p> : null}
      {position.fetching && !p ? <Loading what="position" /> : p ? (
        <>
          <p className={`health ${band}`} data-testid="health-factor" data-band={band}>
            Health factor <b>{p.healthFactor ?? "∞ (no debt)"}</b> · floor {p.healthFactorFloor}
            {p.liquidationPrice ? ` · liquidation at ${p.liquidationPrice} (${p.liquidationToken})` : ""}</p>
          <p className="meta">Collateral {money(p.collateralValue)} USD · debt {money(p.debtValue)} USD · can borrow {money(p.borrowCapacity)} USD</p>
          {p.assets.length ? (
            <table aria-label="lending assets">
              <thead><tr><th>Token</th><th>Price</th><th>Supplied</th><th>Borrowed</th><th>CF</th></tr></thead>
              <tbody>{p.assets.map((a) => <tr key={a.token}><td>{a.token}</td><td className="num">{money(a.price)}</td>
                <td className="num">{a.supplied}</td><td className="num">{a.borrowed}</td><td className="num">{a.collateralFactor}</td></tr>)}</tbody>
            </table>
          ) : <Empty>Nothing supplied or borrowed.</Empty>}
        </>
      ) : positionErrors.some(noAccount) ? <Empty>No account on this chain yet: the first supply or swap opens it.</Empty>
        : <Empty>No lending pool on this chain.</Empty>}
      <form className="form inline" onSubmit={send} aria-label="lending action">
        <label>Action <select name="lendAction" value={action} onChange={(e) => setAction(e.target.value)}>
          <option value="defiSupply">supply</option><option value="defiBorrow">borrow</option>
          <option value="defiRepay">repay</option><option value="defiWithdraw">withdraw</option></select></label>
        <label>Token <select name="lendToken" value={token} onChange={(e) => setToken(e.target.value)}>
          {tokens.map((t) => <option key={t.symbol}>{t.symbol}</option>)}</select></label>
        <label>Amount <input name="lendAmount" value={amount} onChange={(e) => setAmount(e.target.value)} /></label>
        <button type="submit" className="primary">Send</button>
      </form>
      <Errors errors={errors} label="lending errors" />
      {done ? <p className="ok" role="status">{done}</p> : null}
    </Panel>
  );
}

function Swaps() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [list] = useQuery<{ defiSwaps: { edges: { node: Record<string, any> }[]; pageInfo: PageInfo } }>({
    query: SWAPS, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "cache-and-network" });
  const rows = list.data?.defiSwaps.edges.map((e) => e.node) ?? [];
  return (
    <Panel title="Swaps" testId="defi-swaps">
      <Errors errors={fromCombined(list.error)} />
      {list.fetching && !list.data ? <Loading what="swaps" /> : !rows.length ? <Empty>No swaps yet.</Empty> : (
        <table>
          <thead><tr><th>At</th><th>Pair</th><th>In</th><th>Quoted</th><th>Min</th><th>Out</th><th>Bps</th><th>Status</th></tr></thead>
          <tbody>{rows.map((s) => <tr key={s.id}><td>{when(s.createdAt)}</td><td>{s.tokenIn.symbol}→{s.tokenOut.symbol}</td>
            <td className="num">{s.amountIn}</td><td className="num">{s.quotedOut}</td><td className="num">{s.minOut}</td>
            <td className="num">{s.amountOut ?? "—"}</td><td className="num">{s.slippageBps}</td>
            <td><span className={`status s-${s.status}`}>{s.status}</span>{s.errorCode ? <code className="code"> {s.errorCode}</code> : null}</td></tr>)}</tbody>
        </table>
      )}
      <Pager pageInfo={list.data?.defiSwaps.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}
