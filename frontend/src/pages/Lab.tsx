import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useClient, useMutation, useQuery } from "urql";
import { LineChart, drawdown, type LinePoint } from "../components/Chart";
import { Empty, Errors, Loading, Pager, Panel, Progress, when, type PageInfo } from "../components/common";
import { base64Bytes, saveBlob } from "../lib/download";
import { fromCombined, type ShownError } from "../lib/errors";
import { percent } from "../lib/jobs";
import { EXAMPLE_STRATEGY, documentProblems, parseDocument } from "../lib/strategy";
import { JOB_FIELDS, useJob } from "../lib/useJob";
import { useSession } from "../session";

interface Version { id: string; version: number; canTrade: boolean; createdAt: string; approvedAt: string | null;
  createdById: string | null; approvedById: string | null; origin: string; document: unknown }
interface Strategy { id: string; name: string; latestVersion: number; updatedAt: string; versions: Version[] }

const STRATEGIES = `query LabStrategies($after: String) { strategies(first: 10, after: $after) {
  edges { node { id name latestVersion updatedAt versions { id version canTrade createdAt approvedAt createdById
    approvedById origin document } } }
  pageInfo { hasNextPage endCursor } } }`;
const CREATE = `mutation LabCreate($doc: JSON!) { createStrategy(input: { document: $doc }) { id name latestVersion } }`;
const APPROVE = `mutation LabApprove($id: ID!) { approveStrategyVersion(id: $id) { id canTrade approvedAt } }`;
const BACKTEST = `mutation LabBacktest($v: ID!, $start: DateTime!, $end: DateTime!) {
  backtest(strategyVersionId: $v, start: $start, end: $end) { ${JOB_FIELDS} } }`;
const RESULT = `query LabBacktestResult($id: ID!) { backtestResult(id: $id) { id metrics decisionCount
  equityCurve { at equity } } }`;
const NEW_VERSION = `mutation LabNewVersion($id: ID!, $doc: JSON!) { createStrategyVersion(strategyId: $id, document: $doc) {
  id version } }`;
const EXPLANATIONS = `query LabExplanations($v: ID!, $b: ID, $after: String) {
  decisionExplanations(strategyVersionId: $v, backtestId: $b, first: 10, after: $after) {
  edges { node { id instrument at action probability sentence contributions { feature value contribution } } }
  pageInfo { hasNextPage endCursor } } }`;
const SYNTHESIZE = `mutation LabSynthesize($input: SynthesizeStrategyInput!) { synthesizeStrategy(input: $input) { ${JOB_FIELDS} } }`;
const PROVIDERS = `query LabProviders { llmProviders { name isLlm models } }`;
const REPORT = `query LabReport($id: ID!) { strategyReport(strategyId: $id, format: PDF) { filename contentType base64 } }`;

export function Lab() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [list, refetch] = useQuery<{ strategies: { edges: { node: Strategy }[]; pageInfo: PageInfo } }>({
    query: STRATEGIES, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only",
  });
  const [selected, setSelected] = useState<string>("");
  const [editing, setEditing] = useState<{ strategyId: string; name: string; document: unknown } | null>(null);
  const { viewer } = useSession();
  const strategies = list.data?.strategies.edges.map((e) => e.node) ?? [];
  const versions = strategies.flatMap((s) => s.versions.map((v) => ({ ...v, strategy: s.name })));
  useEffect(() => {
    if (!selected && versions.length) setSelected(versions[0].id);
  }, [selected, versions]);
  return (
    <div className="page lab">
      <h1>Strategy lab</h1>
      <div className="grid two">
        <Editor editing={editing} onStopEditing={() => setEditing(null)}
          onCreated={() => refetch({ requestPolicy: "network-only" })} />
        <Panel title="Strategies" testId="strategies">
          <Errors errors={fromCombined(list.error)} />
          {list.fetching && !list.data ? <Loading /> : !strategies.length ? <Empty>No strategies yet.</Empty> : (
            <StrategyTable strategies={strategies} selected={selected} onSelect={setSelected} me={viewer.user.id}
              onEdit={(s, v) => setEditing({ strategyId: s.id, name: s.name, document: v.document })}
              onChanged={() => refetch({ requestPolicy: "network-only" })} />
          )}
          <Pager pageInfo={list.data?.strategies.pageInfo} cursors={cursors} onPage={setCursors} />
        </Panel>
      </div>
      <BacktestPanel versions={versions} selected={selected} onSelect={setSelected} />
      <Synthesis onDone={() => refetch({ requestPolicy: "network-only" })} />
    </div>
  );
}

function Editor({ onCreated, editing, onStopEditing }: {
  onCreated: () => void; editing: { strategyId: string; name: string; document: unknown } | null; onStopEditing: () => void;
}) {
  const [text, setText] = useState(() => JSON.stringify(EXAMPLE_STRATEGY, null, 2));
  const [, newVersion] = useMutation(NEW_VERSION);
  const [saved, setSaved] = useState<string | null>(null);
  useEffect(() => {
    if (editing) setText(JSON.stringify(editing.document, null, 2));
  }, [editing]);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [parseProblem, setParseProblem] = useState<string | null>(null);
  const [, create] = useMutation(CREATE);
  async function save() {
    const parsed = parseDocument(text);
    setParseProblem(parsed.problem ?? null);
    setErrors([]);
    if (parsed.problem) return;
    setSaved(null);
    const r = editing ? await newVersion({ id: editing.strategyId, doc: parsed.value }) : await create({ doc: parsed.value });
    setErrors(fromCombined(r.error));
    if (!r.error) {
      setSaved(editing ? `Saved ${editing.name} v${r.data.createStrategyVersion.version}: it needs a second approval.`
        : "Strategy created.");
      onCreated();
    }
  }
  const problems = documentProblems(errors);
  return (
    <Panel title={editing ? `Edit ${editing.name} (a new version)` : "Strategy document"} testId="strategy-editor"
      actions={<>
        {editing ? <button type="button" onClick={onStopEditing}>New strategy instead</button> : null}
        <button type="button" className="primary" onClick={() => void save()}>
          {editing ? "Save as new version" : "Create strategy"}</button>
      </>}>
      <textarea className="code-editor" aria-label="strategy document" spellCheck={false} rows={18} value={text}
        onChange={(e) => setText(e.target.value)} />
      {parseProblem ? <div className="field-problem" role="alert">{parseProblem}</div> : null}
      {problems.length ? (
        <ul className="doc-problems" aria-label="document errors">
          {problems.map((p, i) => <li key={i}><code>{p.path}</code> {p.message}</li>)}
        </ul>
      ) : <Errors errors={errors} />}
      {saved ? <p className="ok" role="status">{saved}</p> : null}
    </Panel>
  );
}

function StrategyTable({ strategies, selected, onSelect, onChanged, onEdit, me }: {
  strategies: Strategy[]; selected: string; onSelect: (id: string) => void; onChanged: () => void;
  onEdit: (s: Strategy, v: Version) => void; me: string;
}) {
  const client = useClient();
  async function report(s: Strategy) {
    setErrors([]);
    const r = await client.query(REPORT, { id: s.id }, { requestPolicy: "network-only" }).toPromise();
    if (r.error || !r.data) { setErrors(fromCombined(r.error)); return; }
    const file = r.data.strategyReport as { filename: string; contentType: string; base64: string };
    saveBlob(new Blob([base64Bytes(file.base64) as BlobPart], { type: file.contentType }), file.filename);
  }
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, approve] = useMutation(APPROVE);
  async function approveVersion(id: string) {
    const r = await approve({ id });
    setErrors(fromCombined(r.error));
    if (!r.error) onChanged();
  }
  return (
    <>
      <Errors errors={errors} label="approval errors" />
      <table>
        <thead><tr><th>Strategy</th><th>Version</th><th>Origin</th><th>Four eyes</th><th /></tr></thead>
        <tbody>
          {strategies.flatMap((s) => s.versions.map((v) => (
            <tr key={v.id} aria-selected={v.id === selected} onClick={() => onSelect(v.id)} tabIndex={0}
              onKeyDown={(e) => { if (e.key === "Enter") onSelect(v.id); }} data-version={`${s.name} v${v.version}`}>
              <td>{s.name}</td><td>v{v.version}</td><td>{v.origin}</td>
              <td data-approved={v.approvedAt ? "yes" : "no"}>{v.approvedAt
                ? `approved ${when(v.approvedAt)}${v.approvedById === me ? " by you" : ""}; written by ${v.createdById === me ? "you" : "another user"}`
                : v.createdById === me ? "awaiting a second person (you wrote it)" : "awaiting approval (you may approve)"}</td>
              <td className="row-actions">
                {v.approvedAt ? null : <button type="button" onClick={() => void approveVersion(v.id)}>Approve</button>}
                {v.version === s.latestVersion ? <button type="button" onClick={(e) => { e.stopPropagation(); onEdit(s, v); }}
                  aria-label={`edit ${s.name}`}>Edit</button> : null}
                {v.version === s.latestVersion ? <button type="button" onClick={(e) => { e.stopPropagation(); void report(s); }}
                  aria-label={`PDF report ${s.name}`}>PDF</button> : null}
              </td>
            </tr>
          )))}
        </tbody>
      </table>
    </>
  );
}

function BacktestPanel({ versions, selected, onSelect }: {
  versions: (Version & { strategy: string })[]; selected: string; onSelect: (id: string) => void;
}) {
  const [start, setStart] = useState("2023-01-01");
  const [end, setEnd] = useState("2023-09-01");
  const [jobId, setJobId] = useState<string | null>(null);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, run] = useMutation<{ backtest: { id: string } }>(BACKTEST);
  const { job } = useJob(jobId);
  const client = useClient();
  const [result, setResult] = useState<{ metrics: Record<string, unknown>; equityCurve: { at: string; equity: string }[] } | null>(null);
  const backtestId = job?.status === "SUCCEEDED" ? (job.result as { backtest_id?: string } | null)?.backtest_id : undefined;
  useEffect(() => {
    if (!backtestId) return;
    void client.query(RESULT, { id: backtestId }, { requestPolicy: "network-only" }).toPromise().then((r) => {
      setErrors(fromCombined(r.error));
      if (r.data) setResult(r.data.backtestResult);
    });
  }, [backtestId, client]);
  async function start_() {
    setErrors([]);
    setResult(null);
    const r = await run({ v: selected, start: `${start}T00:00:00Z`, end: `${end}T00:00:00Z` });
    setErrors(fromCombined(r.error));
    if (r.data) setJobId(r.data.backtest.id);
  }
  const equity: LinePoint[] = useMemo(() => (result?.equityCurve ?? []).map((p) => ({
    time: Math.floor(new Date(p.at).getTime() / 1000), value: Number(p.equity) })), [result]);
  const series = useMemo(() => [
    { name: "equity", points: equity },
    { name: "drawdown", points: drawdown(equity), separate: true, colour: "#e5484d" },
  ], [equity]);
  return (
    <Panel title="Backtest" testId="backtest">
      <form className="form inline" onSubmit={(e) => { e.preventDefault(); void start_(); }} aria-label="backtest">
        <label>Version
          <select value={selected} onChange={(e) => onSelect(e.target.value)} name="version">
            {versions.map((v) => <option key={v.id} value={v.id}>{v.strategy} v{v.version}</option>)}
          </select>
        </label>
        <label>From <input type="date" value={start} onChange={(e) => setStart(e.target.value)} name="start" /></label>
        <label>To <input type="date" value={end} onChange={(e) => setEnd(e.target.value)} name="end" /></label>
        <button type="submit" className="primary" disabled={!selected}>Run backtest</button>
      </form>
      <Errors errors={errors} />
      {job ? (
        <div className="job-status" data-status={job.status}>
          <Progress value={percent(job)} label="backtest progress" />
          <span>{job.status} {job.message}</span>
          {job.error ? <span><code className="code">{job.error.code}</code> {job.error.message}</span> : null}
        </div>
      ) : null}
      {result ? (
        <div className="grid two wide-left">
          <LineChart series={series} label="equity curve" />
          <table className="metrics" aria-label="metrics">
            <tbody>
              {Object.entries(result.metrics).filter(([, v]) => v === null || typeof v !== "object").map(([k, v]) => (
                <tr key={k}><th>{k.replace(/_/g, " ")}</th>
                  <td className="num">{typeof v === "number" ? Number(v.toFixed(4)).toString() : String(v ?? "—")}</td></tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {result && backtestId ? <Explanations versionId={selected} backtestId={backtestId} /> : null}
    </Panel>
  );
}

function Explanations({ versionId, backtestId }: { versionId: string; backtestId: string }) {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [list] = useQuery<{ decisionExplanations: { edges: { node: { id: string; instrument: string; at: string; action: string;
    probability: number; sentence: string; contributions: { feature: string; value: number | null; contribution: number }[] } }[];
    pageInfo: PageInfo } }>({ query: EXPLANATIONS, variables: { v: versionId, b: backtestId, after: cursors[cursors.length - 1] } });
  const rows = list.data?.decisionExplanations.edges.map((e) => e.node) ?? [];
  return (
    <section className="explanations" aria-label="decision explanations" data-testid="explanations">
      <h3>Decision explanations</h3>
      <Errors errors={fromCombined(list.error)} />
      {list.fetching && !list.data ? <Loading what="explanations" /> : !rows.length ? <Empty>No decisions explained.</Empty> : (
        <table>
          <thead><tr><th>At</th><th>Instrument</th><th>Action</th><th>P</th><th>Why</th><th>Top features</th></tr></thead>
          <tbody>{rows.map((x) => (
            <tr key={x.id}><td>{when(x.at)}</td><td>{x.instrument}</td><td>{x.action}</td>
              <td className="num">{x.probability.toFixed(2)}</td><td className="wrap">{x.sentence}</td>
              <td className="wrap">{[...x.contributions].sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution)).slice(0, 3)
                .map((c) => `${c.feature} ${c.contribution >= 0 ? "+" : ""}${c.contribution.toFixed(3)}`).join(", ")}</td></tr>
          ))}</tbody>
        </table>
      )}
      <Pager pageInfo={list.data?.decisionExplanations.pageInfo} cursors={cursors} onPage={setCursors} />
    </section>
  );
}

function Synthesis({ onDone }: { onDone: () => void }) {
  const [objective, setObjective] = useState("Trend following on large caps with a tight stop");
  const [maxDrawdown, setMaxDrawdown] = useState("0.2");
  const [provider, setProvider] = useState("");
  const [providers] = useQuery<{ llmProviders: { name: string; isLlm: boolean; models: string[] }[] }>({ query: PROVIDERS });
  const [jobId, setJobId] = useState<string | null>(null);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, run] = useMutation<{ synthesizeStrategy: { id: string } }>(SYNTHESIZE);
  const { job } = useJob(jobId);
  useEffect(() => {
    if (job?.status === "SUCCEEDED") onDone();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [job?.status]);
  async function start(e: FormEvent) {
    e.preventDefault();
    setErrors([]);
    const constraints = maxDrawdown.trim() ? { maxDrawdown: Number(maxDrawdown) } : null;
    const r = await run({ input: { objective, constraints, provider: provider || null, backtestDays: 365 } });
    setErrors(fromCombined(r.error));
    if (r.data) setJobId(r.data.synthesizeStrategy.id);
  }
  const out = job?.status === "SUCCEEDED" ? job.result as { version?: number; provider?: string; model?: string;
    is_llm?: boolean; metrics?: Record<string, unknown> } : null;
  return (
    <Panel title="Synthesise from an objective" testId="synthesis">
      <form className="form inline" onSubmit={start} aria-label="synthesise">
        <label className="grow">Objective <input name="objective" value={objective} onChange={(e) => setObjective(e.target.value)}
          required /></label>
        <label>Max drawdown <input name="maxDrawdown" value={maxDrawdown} inputMode="decimal"
          onChange={(e) => setMaxDrawdown(e.target.value)} /></label>
        <label>Provider <select name="provider" value={provider} onChange={(e) => setProvider(e.target.value)}>
          <option value="">default</option>
          {(providers.data?.llmProviders ?? []).map((p) => <option key={p.name} value={p.name}>{p.name}{p.isLlm ? "" : " (rules)"}</option>)}
        </select></label>
        <button type="submit" className="primary">Synthesise</button>
      </form>
      <Errors errors={[...fromCombined(providers.error), ...errors]} />
      {job ? (
        <div className="job-status" data-status={job.status}>
          <Progress value={percent(job)} label="synthesis progress" />
          <span>{job.status} {job.message}</span>
          {job.error ? <span><code className="code">{job.error.code}</code> {job.error.message}</span> : null}
        </div>
      ) : null}
      {out ? <p className="ok" role="status">A new strategy version v{out.version} by {out.provider}
        {out.model ? ` (${out.model})` : ""}: listed above, awaiting approval.</p> : null}
    </Panel>
  );
}
