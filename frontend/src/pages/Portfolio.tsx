// Portfolio optimisation (compare backends: approximation ratio and probability on the optimum)
// and FX: exposure per currency and hedge proposals.
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useMutation, useQuery } from "urql";
import { BarChart } from "../components/BarChart";
import { Empty, Errors, Loading, Pager, Panel, Progress, type PageInfo } from "../components/common";
import { money } from "../lib/desk";
import { fromCombined, type ShownError } from "../lib/errors";
import { percent } from "../lib/jobs";
import { compareBackends, type BackendRun } from "../lib/optimise";
import { JOB_FIELDS, useJob } from "../lib/useJob";

const OPTIMISERS = `query Optimisers { portfolioOptimisers { name kind maxAssets maxQubits plugin } }`;
const OPTIMISE = `mutation Optimise($input: OptimizePortfolioInput!) { optimizePortfolio(input: $input) { ${JOB_FIELDS} } }`;

export function Portfolio() {
  return (
    <div className="page portfolio">
      <h1>Portfolio &amp; FX</h1>
      <Optimisation />
      <Fx />
    </div>
  );
}

function Optimisation() {
  const [optimisers] = useQuery<{ portfolioOptimisers: { name: string; kind: string; maxAssets: number; maxQubits: number | null }[] }>({
    query: OPTIMISERS });
  const [instruments, setInstruments] = useState("AAPL.XNAS, MSFT.XNAS, SAP.XETR, NESN.XSWX, 7203.XTKS, HSBA.XLON");
  const [budget, setBudget] = useState("3");
  const [riskAversion, setRiskAversion] = useState("1");
  const [chosen, setChosen] = useState<string[]>([]);
  const [jobs, setJobs] = useState<{ backend: string; id: string }[]>([]);
  const [results, setResults] = useState<Record<string, unknown>>({});
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, optimise] = useMutation<{ optimizePortfolio: { id: string } }>(OPTIMISE);
  const list = optimisers.data?.portfolioOptimisers ?? [];
  useEffect(() => {
    if (!chosen.length && list.length) setChosen(list.slice(0, 2).map((o) => o.name));
  }, [list, chosen.length]);

  async function run(e: FormEvent) {
    e.preventDefault();
    setErrors([]);
    setResults({});
    const started: { backend: string; id: string }[] = [];
    const found: ShownError[] = [];
    for (const backend of chosen) {
      const r = await optimise({ input: {
        instruments: instruments.split(/[\s,]+/).filter(Boolean), budget: Number.parseInt(budget, 10),
        riskAversion: Number(riskAversion), backend, lookbackDays: 365 } });
      if (r.error) found.push(...fromCombined(r.error).map((x) => ({ ...x, message: `${backend}: ${x.message}` })));
      if (r.data) started.push({ backend, id: r.data.optimizePortfolio.id });
    }
    setErrors(found);
    setJobs(started);
  }
  const runs: BackendRun[] = useMemo(() => compareBackends(Object.values(results)), [results]);
  const done = jobs.length > 0 && jobs.every((j) => j.id in results);
  return (
    <Panel title="Portfolio optimisation" testId="optimisation">
      <form className="form inline" onSubmit={run} aria-label="optimise">
        <label className="grow">Instruments <input name="instruments" value={instruments}
          onChange={(e) => setInstruments(e.target.value)} /></label>
        <label>Budget (holdings) <input name="budget" value={budget} inputMode="numeric" onChange={(e) => setBudget(e.target.value)} /></label>
        <label>Risk aversion <input name="riskAversion" value={riskAversion} inputMode="decimal"
          onChange={(e) => setRiskAversion(e.target.value)} /></label>
        <fieldset aria-label="backends" className="checks">
          <legend>Backends</legend>
          {optimisers.fetching && !optimisers.data ? <Loading what="backends" /> : list.map((o) => (
            <label key={o.name}><input type="checkbox" checked={chosen.includes(o.name)} onChange={(e) =>
              setChosen(e.target.checked ? [...chosen, o.name] : chosen.filter((x) => x !== o.name))} />
              {o.name} <span className="meta">({o.kind}{o.maxQubits ? `, ≤${o.maxQubits} qubits` : ""})</span></label>
          ))}
        </fieldset>
        <button type="submit" className="primary" disabled={!chosen.length}>Run and compare</button>
      </form>
      <Errors errors={[...fromCombined(optimisers.error), ...errors]} />
      {jobs.map((j) => <OptimisationJob key={j.id} backend={j.backend} id={j.id}
        onResult={(result) => setResults((r) => ({ ...r, [j.id]: result }))} />)}
      {done && runs.length ? (
        <div className="grid two wide-left" data-testid="backend-comparison">
          <BarChart label="backends compared: approximation ratio and probability on the optimum"
            groups={runs.map((r) => ({ name: r.optimiser, values: [r.ratio, r.probability] }))}
            series={[{ name: "approximation ratio", colour: "var(--primary)" },
              { name: "probability on the optimum", colour: "var(--secondary)" }]} />
          <table aria-label="backend runs">
            <thead><tr><th>Backend</th><th>Role</th><th>Status</th><th>Ratio</th><th>P(optimum)</th></tr></thead>
            <tbody>{runs.map((r) => (
              <tr key={r.optimiser} title={r.reason ?? ""}><td>{r.optimiser}</td><td>{r.role}</td><td>{r.status}</td>
                <td className="num">{r.ratio === null ? "—" : r.ratio.toFixed(4)}</td>
                <td className="num">{r.probability === null ? "—" : r.probability.toFixed(4)}</td></tr>
            ))}</tbody>
          </table>
        </div>
      ) : null}
    </Panel>
  );
}

function OptimisationJob({ backend, id, onResult }: { backend: string; id: string; onResult: (result: unknown) => void }) {
  const { job } = useJob(id);
  useEffect(() => {
    if (job?.status === "SUCCEEDED") onResult(job.result);
    else if (job?.status === "FAILED" || job?.status === "CANCELED") onResult({ runs: [] });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [job?.status]);
  const selected = (job?.result as { selected?: string[] } | null)?.selected;
  return (
    <div className="job-status" data-status={job?.status ?? "QUEUED"} data-backend={backend}>
      <b>{backend}</b>
      <Progress value={job ? percent(job) : 0} label={`${backend} progress`} />
      <span>{job?.status} {job?.message}</span>
      {selected ? <span>chose {selected.join(", ")}</span> : null}
      {job?.error ? <span><code className="code">{job.error.code}</code> {job.error.message}</span> : null}
    </div>
  );
}

interface Exposure { currency: string; long: string; short: string; cash: string; unsettled: string; hedged: string; net: string;
  spot: string; netInBase: string; hedgeRatio: string | null }
interface FxExposure { baseCurrency: string; at: string; currencies: Exposure[]; netInBase: string; foreignNetInBase: string }
const EXPOSURE_FIELDS = `baseCurrency at netInBase foreignNetInBase currencies { currency long short cash unsettled hedged net
  spot netInBase hedgeRatio }`;
const PORTFOLIOS = `query Portfolios($after: String) { portfolios(first: 10, after: $after) { edges { node { id name baseCurrency } }
  pageInfo { hasNextPage endCursor } } }`;
const EXPOSURE = `query Exposure($id: ID!) { fxExposure(portfolio: $id) { ${EXPOSURE_FIELDS} } }`;
const CREATE_PORTFOLIO = `mutation CreatePortfolio($input: CreatePortfolioInput!) { createPortfolio(input: $input) { id name } }`;
const RECORD = `mutation RecordPosition($input: RecordPositionInput!) { recordPosition(input: $input) { id } }`;
const CASH = `mutation SetCash($input: SetCashBalanceInput!) { setCashBalance(input: $input) { currency amount } }`;
const PROPOSE = `mutation ProposeHedge($id: ID!, $policy: HedgePolicyInput!) { proposeHedge(portfolio: $id, policy: $policy) {
  orders { pair currency side notional notionalInBase tenorDays valueDate spotRate forwardRate targetRatio ratioBefore }
  before { foreignNetInBase } after { foreignNetInBase currencies { currency hedgeRatio } }
  estimates { currency ratio effectiveness observations } } }`;

function Fx() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [portfolios, refetchPortfolios] = useQuery<{ portfolios: { edges: { node: { id: string; name: string; baseCurrency: string } }[];
    pageInfo: PageInfo } }>({ query: PORTFOLIOS, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only" });
  const list = portfolios.data?.portfolios.edges.map((e) => e.node) ?? [];
  const [id, setId] = useState("");
  useEffect(() => { if (!id && list.length) setId(list[0].id); }, [id, list]);
  const [exposure, refetchExposure] = useQuery<{ fxExposure: FxExposure }>({ query: EXPOSURE, variables: { id }, pause: !id,
    requestPolicy: "network-only" });
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, create] = useMutation<{ createPortfolio: { id: string } }>(CREATE_PORTFOLIO);
  const [, record] = useMutation(RECORD);
  const [, cash] = useMutation(CASH);
  const [name, setName] = useState("");
  const [base, setBase] = useState("USD");
  const [pos, setPos] = useState({ instrument: "SAP", mic: "XETR", currency: "EUR", quantity: "1000", price: "180" });
  const [cashForm, setCashForm] = useState({ currency: "JPY", amount: "5000000" });
  const refresh = () => refetchExposure({ requestPolicy: "network-only" });

  async function newPortfolio(e: FormEvent) {
    e.preventDefault();
    const r = await create({ input: { name, baseCurrency: base } });
    setErrors(fromCombined(r.error));
    if (r.data) { setId(r.data.createPortfolio.id); setName(""); refetchPortfolios({ requestPolicy: "network-only" }); }
  }
  async function addPosition(e: FormEvent) {
    e.preventDefault();
    const r = await record({ input: { portfolio: id, ...pos } });
    setErrors(fromCombined(r.error));
    if (!r.error) refresh();
  }
  async function setCashBalance(e: FormEvent) {
    e.preventDefault();
    const r = await cash({ input: { portfolio: id, ...cashForm } });
    setErrors(fromCombined(r.error));
    if (!r.error) refresh();
  }
  const x = exposure.data?.fxExposure;
  return (
    <Panel title="FX exposure and hedging" testId="fx">
      <div className="form inline">
        <label>Portfolio <select aria-label="portfolio" value={id} onChange={(e) => setId(e.target.value)}>
          {list.map((p) => <option key={p.id} value={p.id}>{p.name} ({p.baseCurrency})</option>)}</select></label>
        <Pager pageInfo={portfolios.data?.portfolios.pageInfo} cursors={cursors} onPage={setCursors} />
      </div>
      <form className="form inline" onSubmit={newPortfolio} aria-label="new portfolio">
        <label>Name <input name="portfolioName" value={name} onChange={(e) => setName(e.target.value)} required /></label>
        <label>Base <input name="baseCurrency" value={base} onChange={(e) => setBase(e.target.value.toUpperCase())} size={4} /></label>
        <button type="submit">Create portfolio</button>
      </form>
      {id ? (
        <div className="grid two">
          <form className="form inline" onSubmit={addPosition} aria-label="record position">
            {(["instrument", "mic", "currency", "quantity", "price"] as const).map((k) => (
              <label key={k}>{k} <input name={`pos-${k}`} value={pos[k]} onChange={(e) => setPos({ ...pos, [k]: e.target.value })}
                size={8} /></label>))}
            <button type="submit">Record position</button>
          </form>
          <form className="form inline" onSubmit={setCashBalance} aria-label="cash balance">
            <label>currency <input name="cash-currency" value={cashForm.currency} size={4}
              onChange={(e) => setCashForm({ ...cashForm, currency: e.target.value.toUpperCase() })} /></label>
            <label>amount <input name="cash-amount" value={cashForm.amount} size={10}
              onChange={(e) => setCashForm({ ...cashForm, amount: e.target.value })} /></label>
            <button type="submit">Set cash</button>
          </form>
        </div>
      ) : null}
      <Errors errors={[...fromCombined(portfolios.error), ...fromCombined(exposure.error), ...errors]} />
      {!id ? (portfolios.fetching && !portfolios.data ? <Loading what="portfolios" /> : <Empty>No portfolio yet: create one.</Empty>)
        : exposure.fetching && !x ? <Loading what="exposure" /> : !x?.currencies.length ? <Empty>No exposure: record positions or cash.</Empty> : (
          <>
            <table aria-label="fx exposure">
              <thead><tr><th>Ccy</th><th>Long</th><th>Short</th><th>Cash</th><th>Unsettled</th><th>Hedged</th><th>Net</th>
                <th>Spot</th><th>Net in {x.baseCurrency}</th><th>Hedge ratio</th></tr></thead>
              <tbody>{x.currencies.map((c) => (
                <tr key={c.currency} data-currency={c.currency}><td>{c.currency}</td><td className="num">{money(c.long)}</td>
                  <td className="num">{money(c.short)}</td><td className="num">{money(c.cash)}</td><td className="num">{money(c.unsettled)}</td>
                  <td className="num">{money(c.hedged)}</td><td className="num">{money(c.net)}</td><td className="num">{c.spot}</td>
                  <td className="num">{money(c.netInBase)}</td><td className="num">{c.hedgeRatio ?? "—"}</td></tr>
              ))}</tbody>
            </table>
            <p className="meta">Net {money(x.netInBase)} {x.baseCurrency}; foreign net {money(x.foreignNetInBase)} {x.baseCurrency}</p>
            <HedgeProposal portfolio={id} base={x.baseCurrency} />
          </>
        )}
    </Panel>
  );
}

function HedgeProposal({ portfolio, base }: { portfolio: string; base: string }) {
  const [kind, setKind] = useState("STATIC");
  const [ratio, setRatio] = useState("1");
  const [tenor, setTenor] = useState("30");
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, propose] = useMutation(PROPOSE);
  const [proposal, setProposal] = useState<{ orders: Record<string, string>[]; before: { foreignNetInBase: string };
    after: { foreignNetInBase: string }; estimates: { currency: string; ratio: string; effectiveness: string }[] } | null>(null);
  async function send(e: FormEvent) {
    e.preventDefault();
    setProposal(null);
    const policy: Record<string, unknown> = { kind, tenorDays: Number.parseInt(tenor, 10) };
    if (kind === "STATIC") policy.ratio = ratio;
    const r = await propose({ id: portfolio, policy });
    setErrors(fromCombined(r.error));
    if (r.data) setProposal(r.data.proposeHedge);
  }
  return (
    <section aria-label="hedge proposal" data-testid="hedge">
      <form className="form inline" onSubmit={send} aria-label="propose hedge">
        <label>Policy <select name="hedgeKind" value={kind} onChange={(e) => setKind(e.target.value)}>
          {["STATIC", "DYNAMIC", "MINIMUM_VARIANCE"].map((k) => <option key={k}>{k}</option>)}</select></label>
        {kind === "STATIC" ? <label>Ratio <input name="hedgeRatio" value={ratio} onChange={(e) => setRatio(e.target.value)} size={5} /></label> : null}
        <label>Tenor days <input name="tenor" value={tenor} onChange={(e) => setTenor(e.target.value)} size={4} /></label>
        <button type="submit" className="primary">Propose hedge</button>
      </form>
      <Errors errors={errors} label="hedge errors" />
      {proposal ? (proposal.orders.length ? (
        <>
          <table aria-label="hedge orders">
            <thead><tr><th>Pair</th><th>Side</th><th>Notional</th><th>In {base}</th><th>Value date</th><th>Spot</th><th>Forward</th>
              <th>Target</th></tr></thead>
            <tbody>{proposal.orders.map((o, i) => (
              <tr key={i}><td>{o.pair}</td><td>{o.side}</td><td className="num">{money(o.notional)}</td>
                <td className="num">{money(o.notionalInBase)}</td><td>{o.valueDate}</td><td className="num">{o.spotRate}</td>
                <td className="num">{o.forwardRate}</td><td className="num">{o.targetRatio}</td></tr>
            ))}</tbody>
          </table>
          <p className="meta">Foreign net exposure {money(proposal.before.foreignNetInBase)} → {money(proposal.after.foreignNetInBase)} {base}</p>
        </>
      ) : <Empty>Nothing to hedge under this policy.</Empty>) : null}
    </section>
  );
}
