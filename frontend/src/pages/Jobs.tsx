import { useState } from "react";
import { useMutation, useQuery } from "urql";
import { Empty, Errors, Loading, Pager, Panel, Progress, when, type PageInfo } from "../components/common";
import { fromCombined, type ShownError } from "../lib/errors";
import { isTerminal, percent, type JobRow } from "../lib/jobs";
import { JOB_FIELDS, useJob } from "../lib/useJob";

const JOBS = `query JobsPage($after: String, $status: JobStatus, $kind: String) {
  jobKinds
  jobs(first: 20, after: $after, status: $status, kind: $kind) {
    edges { node { ${JOB_FIELDS} } } pageInfo { hasNextPage endCursor } } }`;
const DIAGNOSTICS = `mutation RunDiagnostics { runDiagnostics { ${JOB_FIELDS} } }`;
const CANCEL = `mutation CancelJob($id: ID!) { cancelJob(id: $id) { ${JOB_FIELDS} } }`;
const STATUSES = ["", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED"];

export function Jobs() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [status, setStatus] = useState("");
  const [kind, setKind] = useState("");
  const [result, refetch] = useQuery<{ jobKinds: string[]; jobs: { edges: { node: JobRow }[]; pageInfo: PageInfo } }>({
    query: JOBS, requestPolicy: "network-only",
    variables: { after: cursors[cursors.length - 1], status: status || null, kind: kind || null },
  });
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, diagnostics] = useMutation(DIAGNOSTICS);
  async function start() {
    const r = await diagnostics({});
    setErrors(fromCombined(r.error));
    refetch({ requestPolicy: "network-only" });
  }
  const rows = result.data?.jobs.edges.map((e) => e.node) ?? [];
  return (
    <div className="page jobs">
      <h1>Jobs</h1>
      <Panel title="Jobs" testId="jobs"
        actions={<>
          <select aria-label="status" value={status} onChange={(e) => { setStatus(e.target.value); setCursors([null]); }}>
            {STATUSES.map((s) => <option key={s} value={s}>{s || "any status"}</option>)}
          </select>
          <select aria-label="kind" value={kind} onChange={(e) => { setKind(e.target.value); setCursors([null]); }}>
            <option value="">any kind</option>
            {(result.data?.jobKinds ?? []).map((k) => <option key={k}>{k}</option>)}
          </select>
          <button type="button" onClick={() => void start()}>Run diagnostics</button>
        </>}>
        <Errors errors={[...fromCombined(result.error), ...errors]} />
        {result.fetching && !result.data ? <Loading what="jobs" /> : !rows.length ? <Empty>No jobs.</Empty> : (
          <table>
            <thead><tr><th>Kind</th><th>Status</th><th>Progress</th><th>Message</th><th>Result / error</th>
              <th>Created</th><th /></tr></thead>
            <tbody>{rows.map((j) => <JobLine key={j.id} initial={j} />)}</tbody>
          </table>
        )}
        <Pager pageInfo={result.data?.jobs.pageInfo} cursors={cursors} onPage={setCursors} />
      </Panel>
    </div>
  );
}

function JobLine({ initial }: { initial: JobRow }) {
  const { job: live } = useJob(initial.id, isTerminal(initial));
  const job = live ?? initial;
  const [, cancel] = useMutation(CANCEL);
  return (
    <tr data-job={job.id} data-status={job.status}>
      <td>{job.kind}</td>
      <td><span className={`status s-${job.status}`}>{job.status}</span></td>
      <td><Progress value={percent(job)} label={`${job.kind} progress`} /></td>
      <td>{job.message}</td>
      <td>{job.error ? <span><code className="code">{job.error.code}</code> {job.error.message}</span>
        : job.result ? <details><summary>result</summary><pre>{JSON.stringify(job.result, null, 1)}</pre></details> : ""}</td>
      <td>{when(job.createdAt)}</td>
      <td>{isTerminal(job) ? null : <button type="button" onClick={() => void cancel({ id: job.id })}>Cancel</button>}</td>
    </tr>
  );
}
