import { useEffect, useState, type FormEvent } from "react";
import { useClient, useMutation, useQuery } from "urql";
import { Empty, Errors, Loading, Pager, Panel, Progress, when, type PageInfo } from "../components/common";
import { downloadWithKey } from "../lib/download";
import { fromCombined, type ShownError } from "../lib/errors";
import { percent } from "../lib/jobs";
import { JOB_FIELDS, useJob } from "../lib/useJob";
import { useSession } from "../session";

interface Verification {
  ok: boolean; checked: number; firstBadSeq: number | null; chain: string | null; chains: number;
  problem: string | null; code: string | null;
  checkpointsChecked: number; crossChecked: number; mismatchCount: number;
  mismatches: { code: string; orderId: string; field: string | null; problem: string }[];
}
interface AuditRecord { chain: string; seq: number; at: string; kind: string; subject: string; actor: string | null; hash: string }

const VERIFY = `query AuditVerify { verifyAuditTrail { ok checked firstBadSeq chain chains problem code checkpointsChecked
  crossChecked mismatchCount mismatches { code orderId field problem } } }`;
const RECORDS = `query AuditRecords($kind: String, $after: String) { auditRecords(kind: $kind, first: 25, after: $after) {
  edges { node { chain seq at kind subject actor hash } } pageInfo { hasNextPage endCursor } } }`;

// A tenant's trail is several hash chains (lanes): lane 0 is named by the tenant id, lane k "<tenant id>/k".
function lane(chain: string): string {
  const at = chain.lastIndexOf("/");
  return at < 0 ? "0" : chain.slice(at + 1);
}

export function Audit() {
  const client = useClient();
  const [verification, setVerification] = useState<Verification | null>(null);
  const [busy, setBusy] = useState(false);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [kind, setKind] = useState("");
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [records] = useQuery<{ auditRecords: { edges: { node: AuditRecord }[]; pageInfo: PageInfo } }>({
    query: RECORDS, variables: { kind: kind || null, after: cursors[cursors.length - 1] }, requestPolicy: "network-only",
  });
  async function verify() {
    setBusy(true);
    const r = await client.query(VERIFY, {}, { requestPolicy: "network-only" }).toPromise();
    setBusy(false);
    setErrors(fromCombined(r.error));
    setVerification(r.data?.verifyAuditTrail ?? null);
  }
  const rows = records.data?.auditRecords.edges.map((e) => e.node) ?? [];
  return (
    <div className="page audit">
      <h1>Audit</h1>
      <Panel title="Verify the audit chain" testId="audit-verify"
        actions={<button type="button" className="primary" disabled={busy} onClick={() => void verify()}>
          {busy ? "Verifying…" : "Verify"}</button>}>
        <Errors errors={errors} />
        {verification ? (
          <div className={`verdict ${verification.ok ? "good" : "bad"}`} role="status" data-ok={String(verification.ok)}>
            <b>{verification.ok ? "Chain intact" : `Broken${verification.code ? ` (${verification.code})` : ""}`}</b>
            {" "}· {verification.checked} records in {verification.chains} lanes, {verification.checkpointsChecked} checkpoints,{" "}
            {verification.crossChecked} orders cross-checked
            {verification.problem ? <p>First bad record {verification.firstBadSeq}
              {verification.chain ? ` (lane ${lane(verification.chain)})` : ""}: {verification.problem}</p> : null}
            {verification.mismatches.length ? (
              <ul>{verification.mismatches.map((m, i) => <li key={i}><code className="code">{m.code}</code> order {m.orderId}
                {m.field ? ` ${m.field}` : ""}: {m.problem}</li>)}</ul>
            ) : null}
          </div>
        ) : <Empty>Not verified yet in this session.</Empty>}
      </Panel>
      <Reports />
      <Panel title="Records" testId="audit-records"
        actions={<input type="search" aria-label="record kind" placeholder="kind (e.g. order.submitted)" value={kind}
          onChange={(e) => { setKind(e.target.value); setCursors([null]); }} />}>
        <Errors errors={fromCombined(records.error)} />
        {records.fetching && !records.data ? <Loading /> : !rows.length ? <Empty>No records.</Empty> : (
          <table>
            <thead><tr><th>Lane</th><th>Seq</th><th>At</th><th>Kind</th><th>Subject</th><th>Actor</th><th>Hash</th></tr></thead>
            <tbody>{rows.map((r) => <tr key={`${r.chain}:${r.seq}`}><td className="num">{lane(r.chain)}</td><td className="num">{r.seq}</td><td>{when(r.at)}</td><td>{r.kind}</td>
              <td>{r.subject}</td><td>{r.actor ?? "—"}</td><td><code>{r.hash.slice(0, 12)}…</code></td></tr>)}</tbody>
          </table>
        )}
        <Pager pageInfo={records.data?.auditRecords.pageInfo} cursors={cursors} onPage={setCursors} />
      </Panel>
    </div>
  );
}

interface ReportFile { id: string; jobId: string; kind: string; filename: string; mediaType: string; size: number; rows: number;
  sha256: string; createdAt: string; downloadUrl: string }
const START = `mutation StartReport($kind: RegulatoryReportKind!, $from: DateTime!, $to: DateTime!, $format: ReportFormat,
  $lei: String, $counterparty: String) { startRegulatoryReport(kind: $kind, from: $from, to: $to, format: $format,
  reportingLei: $lei, counterpartyLei: $counterparty) { ${JOB_FIELDS} } }`;
const FILES = `query ReportFiles($after: String) { reportFiles(first: 10, after: $after) {
  edges { node { id jobId kind filename mediaType size rows sha256 createdAt downloadUrl } } pageInfo { hasNextPage endCursor } } }`;

function Reports() {
  const { credential } = useSession();
  const today = new Date().toISOString().slice(0, 10);
  const [kind, setKind] = useState("BEST_EXECUTION");
  const [format, setFormat] = useState("CSV");
  const [from, setFrom] = useState(() => new Date(Date.now() - 30 * 86_400_000).toISOString().slice(0, 10));
  const [to, setTo] = useState(() => new Date(Date.now() + 86_400_000).toISOString().slice(0, 10));
  const [lei, setLei] = useState("");
  const [counterparty, setCounterparty] = useState("");
  const [jobId, setJobId] = useState<string | null>(null);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [files, refetch] = useQuery<{ reportFiles: { edges: { node: ReportFile }[]; pageInfo: PageInfo } }>({
    query: FILES, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only" });
  const [, start] = useMutation<{ startRegulatoryReport: { id: string } }>(START);
  const { job } = useJob(jobId);
  useEffect(() => {
    if (job?.status === "SUCCEEDED") refetch({ requestPolicy: "network-only" });
  }, [job?.status, refetch]);
  async function submit(e: FormEvent) {
    e.preventDefault();
    setErrors([]);
    const r = await start({ kind, from: `${from}T00:00:00Z`, to: `${to}T00:00:00Z`,
      format: kind === "BEST_EXECUTION" ? null : format, lei: lei || null, counterparty: counterparty || null });
    setErrors(fromCombined(r.error));
    if (r.data) setJobId(r.data.startRegulatoryReport.id);
  }
  async function download(f: ReportFile) {
    const problem = await downloadWithKey(credential, f.downloadUrl, f.filename);
    setErrors(problem ? [{ code: problem, message: `${f.filename} could not be downloaded` }] : []);
  }
  const rows = files.data?.reportFiles.edges.map((e) => e.node) ?? [];
  return (
    <Panel title="Regulatory reports" testId="reports">
      <form className="form inline" onSubmit={submit} aria-label="start report">
        <label>Kind <select name="reportKind" value={kind} onChange={(e) => setKind(e.target.value)}>
          {["BEST_EXECUTION", "MIFID_TRANSACTIONS", "CFTC_SWAPS"].map((k) => <option key={k}>{k}</option>)}</select></label>
        {kind === "MIFID_TRANSACTIONS" ? <label>Format <select name="reportFormat" value={format} onChange={(e) => setFormat(e.target.value)}>
          <option>XML</option><option>CSV</option></select></label> : null}
        <label>From <input type="date" name="reportFrom" value={from} max={today} onChange={(e) => setFrom(e.target.value)} /></label>
        <label>To (exclusive) <input type="date" name="reportTo" value={to} onChange={(e) => setTo(e.target.value)} /></label>
        {kind !== "BEST_EXECUTION" ? <label>Reporting LEI <input name="lei" value={lei} onChange={(e) => setLei(e.target.value)} /></label> : null}
        {kind === "CFTC_SWAPS" ? <label>Counterparty LEI <input name="counterpartyLei" value={counterparty}
          onChange={(e) => setCounterparty(e.target.value)} /></label> : null}
        <button type="submit" className="primary">Start report</button>
      </form>
      {job ? (
        <div className="job-status" data-status={job.status}>
          <Progress value={percent(job)} label="report progress" />
          <span>{job.status} {job.message}</span>
          {job.error ? <span><code className="code">{job.error.code}</code> {job.error.message}</span> : null}
        </div>
      ) : null}
      <Errors errors={[...fromCombined(files.error), ...errors]} label="report errors" />
      {files.fetching && !files.data ? <Loading what="report files" /> : !rows.length ? <Empty>No report files yet.</Empty> : (
        <table aria-label="report files">
          <thead><tr><th>Created</th><th>Kind</th><th>File</th><th>Rows</th><th>Size</th><th>SHA-256</th><th /></tr></thead>
          <tbody>{rows.map((f) => (
            <tr key={f.id} data-file={f.filename} data-job={f.jobId}><td>{when(f.createdAt)}</td><td>{f.kind}</td><td>{f.filename}</td>
              <td className="num">{f.rows}</td><td className="num">{f.size}</td><td><code>{f.sha256.slice(0, 12)}…</code></td>
              <td><button type="button" onClick={() => void download(f)} aria-label={`download ${f.filename}`}>Download</button></td></tr>
          ))}</tbody>
        </table>
      )}
      <Pager pageInfo={files.data?.reportFiles.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}
