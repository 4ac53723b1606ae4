// The Form itself: the package index also exports a test registry that imports ajv8.
import Form from "@rjsf/core/lib/components/Form.js";
import type { RJSFSchema } from "@rjsf/utils";
import type React from "react";
import { useMemo, useState } from "react";
import { useMutation, useQuery } from "urql";
import { Empty, Errors, Loading, Pager, Panel, when, type PageInfo } from "../components/common";
import { fromCombined, type ShownError } from "../lib/errors";
import { uiSchemaFor, withoutSecrets, type JsonSchema } from "../lib/schemaForm";
import { validator } from "../lib/validator";
import { useSession } from "../session";

interface PluginVersion { id: string; version: string; status: string; configSchema: JsonSchema; capabilities: string[] }
interface Installation {
  pluginId: string; version: string; previousVersion: string | null; active: boolean;
  config: Record<string, unknown>; secretFields: { path: string; configured: boolean }[]; updatedAt: string;
}
interface Plugin {
  id: string; name: string; vendor: string; category: string; tier: string; description: string;
  latestVersion: string | null; installCount: number; ratings: { average: string | null; count: number };
  versions: PluginVersion[]; installation: Installation | null;
}

const INSTALLATION = "pluginId version previousVersion active config secretFields { path configured } updatedAt";
const CATALOGUE = `query Catalogue($search: String, $after: String) { marketplace { plugins(search: $search, first: 12, after: $after) {
  edges { node { id name vendor category tier description latestVersion installCount ratings { average count }
    versions { id version status configSchema capabilities } installation { ${INSTALLATION} } } }
  pageInfo { hasNextPage endCursor } } } }`;
const INSTALL = `mutation Install($input: InstallPluginInput!) { installPlugin(input: $input) { ${INSTALLATION} } }`;
const CONFIGURE = `mutation Configure($id: String!, $config: JSON!) { configurePlugin(pluginId: $id, config: $config) { ${INSTALLATION} } }`;
const UNINSTALL = `mutation Uninstall($id: String!) { uninstallPlugin(pluginId: $id) { pluginId active } }`;
const ROLLBACK = `mutation Rollback($id: String!) { rollbackPlugin(pluginId: $id) { ${INSTALLATION} } }`;
const UPGRADE = `mutation Upgrade($id: String!, $version: String!) { upgradePlugin(pluginId: $id, version: $version) { ${INSTALLATION} } }`;
const RATE = `mutation Rate($id: String!, $rating: Int!, $comment: String) { ratePlugin(pluginId: $id, rating: $rating, comment: $comment) {
  average count } }`;

export function Marketplace() {
  const [search, setSearch] = useState("");
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [result, refetch] = useQuery<{ marketplace: { plugins: { edges: { node: Plugin }[]; pageInfo: PageInfo } } }>({
    query: CATALOGUE, variables: { search: search || null, after: cursors[cursors.length - 1] },
    requestPolicy: "network-only",
  });
  const [open, setOpen] = useState<string | null>(null);
  const plugins = result.data?.marketplace.plugins.edges.map((e) => e.node) ?? [];
  const chosen = plugins.find((p) => p.id === open) ?? null;
  return (
    <div className="page marketplace">
      <h1>Marketplace</h1>
      <Panel title="Catalogue" testId="catalogue"
        actions={<input type="search" placeholder="Search plugins" aria-label="search plugins" value={search}
          onChange={(e) => { setSearch(e.target.value); setCursors([null]); }} />}>
        <Errors errors={fromCombined(result.error)} />
        {result.fetching && !result.data ? <Loading what="plugins" /> : !plugins.length ? <Empty>No plugins match.</Empty> : (
          <div className="cards">
            {plugins.map((p) => (
              <article key={p.id} className={`card${p.id === open ? " open" : ""}`} data-plugin={p.id}>
                <h3>{p.name}</h3>
                <p className="meta">{p.vendor} · {p.category} · {p.tier} · {p.latestVersion ?? "—"}</p>
                <p>{p.description}</p>
                <p className="meta">{p.installCount} installs · rating {p.ratings.average ?? "—"} ({p.ratings.count})</p>
                {p.installation ? <p className="ok">Installed {p.installation.version}</p> : null}
                <button type="button" onClick={() => setOpen(p.id === open ? null : p.id)}>
                  {p.installation ? "Manage" : "Install"}</button>
              </article>
            ))}
          </div>
        )}
        <Pager pageInfo={result.data?.marketplace.plugins.pageInfo} cursors={cursors} onPage={setCursors} />
      </Panel>
      {chosen ? <InstallPanel plugin={chosen} onDone={() => refetch({ requestPolicy: "network-only" })} /> : null}
      <VendorAndReview />
    </div>
  );
}

function InstallPanel({ plugin, onDone }: { plugin: Plugin; onDone: () => void }) {
  const { refreshTheme } = useSession();
  const approved = plugin.versions.filter((v) => v.status === "APPROVED");
  const [versionId, setVersionId] = useState(() =>
    (approved.find((v) => v.version === plugin.latestVersion) ?? approved[0])?.id ?? "");
  const version = approved.find((v) => v.id === versionId);
  const schema = (version?.configSchema ?? { type: "object" }) as JsonSchema;
  const installation = plugin.installation;
  const uiSchema = useMemo(() => uiSchemaFor(schema), [schema]);
  const initial = useMemo(() => withoutSecrets(installation?.config ?? {}, schema), [installation, schema]);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [done, setDone] = useState<string | null>(null);
  const [, install] = useMutation(INSTALL);
  const [, configure] = useMutation(CONFIGURE);
  const [, uninstall] = useMutation(UNINSTALL);
  const [, rollback] = useMutation(ROLLBACK);
  const [, upgrade] = useMutation(UPGRADE);
  const [, rate] = useMutation(RATE);
  const newer = approved.filter((v) => installation && v.version !== installation.version);
  const [target, setTarget] = useState("");
  const [stars, setStars] = useState("5");
  const [comment, setComment] = useState("");
  async function upgradeTo() {
    const version = target || newer[0]?.version;
    if (!version) return;
    setErrors([]);
    const r = await upgrade({ id: plugin.id, version });
    setErrors(fromCombined(r.error));
    if (!r.error) { setDone(`Now on ${version}.`); onDone(); refreshTheme(); }
  }
  async function sendRating() {
    setErrors([]);
    const r = await rate({ id: plugin.id, rating: Number(stars), comment: comment || null });
    setErrors(fromCombined(r.error));
    if (r.data) { setDone(`Rated ${stars}/5: average now ${r.data.ratePlugin.average} (${r.data.ratePlugin.count}).`); onDone(); }
  }

  async function submit(config: Record<string, unknown>) {
    setErrors([]);
    setDone(null);
    const r = installation
      ? await configure({ id: plugin.id, config })
      : await install({ input: { pluginId: plugin.id, version: version?.version, config } });
    setErrors(fromCombined(r.error));
    if (!r.error) {
      setDone(installation ? "Configuration saved." : `Installed ${plugin.name} ${version?.version}.`);
      onDone();
      refreshTheme();
    }
  }
  async function act(what: "uninstall" | "rollback") {
    setErrors([]);
    const r = what === "uninstall" ? await uninstall({ id: plugin.id }) : await rollback({ id: plugin.id });
    setErrors(fromCombined(r.error));
    if (!r.error) { setDone(what === "uninstall" ? "Uninstalled." : "Rolled back."); onDone(); refreshTheme(); }
  }

  return (
    <Panel title={`${installation ? "Configure" : "Install"} ${plugin.name}`} testId="install-panel">
      {!installation ? (
        <label>Version{" "}
          <select value={versionId} onChange={(e) => setVersionId(e.target.value)} aria-label="version">
            {approved.map((v) => <option key={v.id} value={v.id}>{v.version}</option>)}
          </select>
        </label>
      ) : (
        <p className="meta">Installed {installation.version} on {when(installation.updatedAt)}
          {installation.secretFields.length ? ` · secrets: ${installation.secretFields.map((s) =>
            `${s.path} ${s.configured ? "set" : "not set"}`).join(", ")}` : ""}</p>
      )}
      {version ? <p className="meta">Capabilities: {version.capabilities.join(", ") || "none"}</p> : null}
      {/* Remounted after each save: a secret typed in is never kept in the page. */}
      <Form key={`${plugin.id}@${installation?.updatedAt ?? versionId}`} schema={schema as RJSFSchema} uiSchema={{ ...uiSchema, "ui:submitButtonOptions": {
        submitText: installation ? "Save configuration" : "Install" } }}
        formData={initial} validator={validator} noHtml5Validate showErrorList="top"
        onSubmit={({ formData }) => void submit((formData ?? {}) as Record<string, unknown>)} />
      {installation ? (
        <div className="actions">
          {installation.previousVersion ? <button type="button" onClick={() => void act("rollback")}>
            Roll back to {installation.previousVersion}</button> : null}
          <button type="button" className="danger" onClick={() => void act("uninstall")}>Uninstall</button>
          {newer.length ? <>
            <select aria-label="upgrade to" value={target || newer[0].version} onChange={(e) => setTarget(e.target.value)}>
              {newer.map((v) => <option key={v.id}>{v.version}</option>)}</select>
            <button type="button" onClick={() => void upgradeTo()}>Change version</button></> : null}
        </div>
      ) : null}
      {installation ? (
        <div className="actions" aria-label="rate">
          <label>Rating <select aria-label="rating" value={stars} onChange={(e) => setStars(e.target.value)}>
            {["5", "4", "3", "2", "1"].map((n) => <option key={n}>{n}</option>)}</select></label>
          <input aria-label="rating comment" placeholder="comment (optional)" value={comment} onChange={(e) => setComment(e.target.value)} />
          <button type="button" onClick={() => void sendRating()}>Rate</button>
        </div>
      ) : null}
      <Errors errors={errors} label="install errors" />
      {done ? <p className="ok" role="status">{done}</p> : null}
    </Panel>
  );
}

interface Published { id: string; pluginId: string; version: string; status: string; tier: string; name: string;
  capabilities: string[]; reasons: string[]; publishedAt: string; reviewedAt: string | null }
const PUBLISHED = "id pluginId version status tier name capabilities reasons publishedAt reviewedAt";
const VENDOR_VERSIONS = `query VendorVersions($after: String) { vendorPluginVersions(first: 10, after: $after) {
  edges { node { ${PUBLISHED} } } pageInfo { hasNextPage endCursor } } }`;
const STATEMENT = `query VendorStatement($period: String!) { vendorStatement(period: $period) { vendor period totalCalls totalBytes
  revenueByCurrency lines { pluginId version customer calls bytes pricingModel currency revenue } } }`;
const QUEUE = `query ReviewQueue($after: String) { pluginReviewQueue(first: 10, after: $after) {
  edges { node { ${PUBLISHED} } } pageInfo { hasNextPage endCursor } } }`;
const REVIEW = `mutation Review($id: ID!, $decision: ReviewDecision!, $reasons: [String!]) {
  reviewPluginVersion(versionId: $id, decision: $decision, reasons: $reasons) { ${PUBLISHED} } }`;

function VendorAndReview() {
  const { viewer } = useSession();
  const vendor = viewer.roles.includes("vendor");
  const platform = viewer.roles.includes("platform_admin");
  if (!vendor && !platform) return null;
  return (
    <div className="grid two">
      {vendor ? <VendorPanel /> : null}
      {platform ? <ReviewQueue /> : null}
    </div>
  );
}

function PublishedTable({ rows, actions }: { rows: Published[]; actions?: (p: Published) => React.ReactNode }) {
  return (
    <table>
      <thead><tr><th>Plugin</th><th>Version</th><th>Tier</th><th>Status</th><th>Published</th><th>Capabilities</th>{actions ? <th /> : null}</tr></thead>
      <tbody>{rows.map((p) => (
        <tr key={p.id} data-published={`${p.pluginId}@${p.version}`}><td>{p.name} <span className="meta">{p.pluginId}</span></td>
          <td>{p.version}</td><td>{p.tier}</td><td title={p.reasons.join("; ")}><span className={`status s-${p.status}`}>{p.status}</span></td>
          <td>{when(p.publishedAt)}</td><td className="wrap">{p.capabilities.join(", ") || "none"}</td>
          {actions ? <td className="row-actions">{actions(p)}</td> : null}</tr>
      ))}</tbody>
    </table>
  );
}

function VendorPanel() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [versions] = useQuery<{ vendorPluginVersions: { edges: { node: Published }[]; pageInfo: PageInfo } }>({
    query: VENDOR_VERSIONS, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only" });
  const [period, setPeriod] = useState(() => new Date().toISOString().slice(0, 7));
  const [statement] = useQuery<{ vendorStatement: { vendor: string; period: string; totalCalls: number; totalBytes: number;
    revenueByCurrency: Record<string, string>; lines: { pluginId: string; version: string; customer: string; calls: number;
      pricingModel: string; currency: string | null; revenue: string }[] } }>({ query: STATEMENT, variables: { period } });
  const rows = versions.data?.vendorPluginVersions.edges.map((e) => e.node) ?? [];
  const st = statement.data?.vendorStatement;
  return (
    <Panel title="Your plugins (vendor)" testId="vendor">
      <Errors errors={fromCombined(versions.error)} />
      {versions.fetching && !versions.data ? <Loading what="versions" /> : !rows.length ? <Empty>No versions published.</Empty>
        : <PublishedTable rows={rows} />}
      <Pager pageInfo={versions.data?.vendorPluginVersions.pageInfo} cursors={cursors} onPage={setCursors} />
      <h3>Statement <input type="month" aria-label="statement period" value={period} onChange={(e) => setPeriod(e.target.value)} /></h3>
      <Errors errors={fromCombined(statement.error)} />
      {statement.fetching && !st ? <Loading what="statement" /> : st ? (
        <>
          <p className="meta">{st.vendor} · {st.period}: {st.totalCalls} calls · revenue{" "}
            {Object.entries(st.revenueByCurrency ?? {}).map(([c, v]) => `${v} ${c}`).join(", ") || "none"}</p>
          {st.lines.length ? (
            <table aria-label="statement lines">
              <thead><tr><th>Plugin</th><th>Version</th><th>Customer</th><th>Calls</th><th>Pricing</th><th>Revenue</th></tr></thead>
              <tbody>{st.lines.map((l, i) => <tr key={i}><td>{l.pluginId}</td><td>{l.version}</td><td>{l.customer}</td>
                <td className="num">{l.calls}</td><td>{l.pricingModel}</td><td className="num">{l.revenue} {l.currency ?? ""}</td></tr>)}</tbody>
            </table>
          ) : <Empty>No usage in {st.period}.</Empty>}
        </>
      ) : null}
    </Panel>
  );
}

function ReviewQueue() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [queue, refetch] = useQuery<{ pluginReviewQueue: { edges: { node: Published }[]; pageInfo: PageInfo } }>({
    query: QUEUE, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only" });
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, review] = useMutation(REVIEW);
  async function decide(p: Published, decision: string) {
    const reasons = decision === "REJECTED" ? [window.prompt("Why is it rejected?") ?? "rejected"] : null;
    const r = await review({ id: p.id, decision, reasons });
    setErrors(fromCombined(r.error));
    refetch({ requestPolicy: "network-only" });
  }
  const rows = queue.data?.pluginReviewQueue.edges.map((e) => e.node) ?? [];
  return (
    <Panel title="Review queue (platform)" testId="review-queue">
      <Errors errors={[...fromCombined(queue.error), ...errors]} />
      {queue.fetching && !queue.data ? <Loading what="queue" /> : !rows.length ? <Empty>Nothing waits for review.</Empty> : (
        <PublishedTable rows={rows} actions={(p) => <>
          <button type="button" onClick={() => void decide(p, "APPROVED")} aria-label={`approve ${p.pluginId} ${p.version}`}>Approve</button>
          <button type="button" className="danger" onClick={() => void decide(p, "REJECTED")}>Reject</button></>} />
      )}
      <Pager pageInfo={queue.data?.pluginReviewQueue.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}
