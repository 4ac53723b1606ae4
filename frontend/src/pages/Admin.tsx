import { useState, type FormEvent } from "react";
import { useMutation, useQuery, type CombinedError } from "urql";
import { Empty, Errors, Loading, Pager, Panel, when, type PageInfo } from "../components/common";
import { fromCombined, type ShownError } from "../lib/errors";
import { useSession } from "../session";

interface User { id: string; email: string; displayName: string; active: boolean; roles: string[] }
interface ApiKey { id: string; name: string; keyId: string; createdAt: string; expiresAt: string | null;
  revokedAt: string | null; lastUsedAt: string | null; user: { email: string } | null }

const USERS = `query AdminUsers($after: String) { users(first: 20, after: $after) {
  edges { node { id email displayName active roles } } pageInfo { hasNextPage endCursor } } }`;
const KEYS = `query AdminKeys($after: String) { apiKeys(first: 20, after: $after) {
  edges { node { id name keyId createdAt expiresAt revokedAt lastUsedAt user { email } } }
  pageInfo { hasNextPage endCursor } } }`;
const CREATE = `mutation AdminCreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) {
  key apiKey { id name keyId } } }`;
const REVOKE = `mutation AdminRevokeKey($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }`;
const CREATE_USER = `mutation AdminCreateUser($input: CreateUserInput!) { createUser(input: $input) { id email roles } }`;
const ROLES = ["admin", "trader", "compliance_officer", "viewer"];
const SET_ACTIVE = `mutation AdminSetActive($id: ID!, $active: Boolean!) { setUserActive(userId: $id, active: $active) { id active } }`;
const GRANT = `mutation AdminGrant($id: ID!, $role: String!) { grantRole(userId: $id, role: $role) { id roles } }`;
const REVOKE_ROLE = `mutation AdminRevokeRole($id: ID!, $role: String!) { revokeRole(userId: $id, role: $role) { id roles } }`;
const REQUEST_GRANT = `mutation AdminRequestGrant($id: ID!, $role: String!) { requestRoleGrant(userId: $id, role: $role) {
  id role status } }`;
const DECIDE_GRANT = `mutation AdminDecideGrant($id: ID!, $approve: Boolean!) { decideRoleGrant(id: $id, approve: $approve) {
  id status decidedBy } }`;
const GRANT_REQUESTS = `query AdminGrantRequests($after: String) { roleGrantRequests(first: 20, after: $after) {
  edges { node { id userId role status requestedBy createdAt decidedBy decidedAt } } pageInfo { hasNextPage endCursor } } }`;
/** Roles one admin may not grant alone: a request a second admin decides (ROLE_GRANT_NEEDS_APPROVAL). */
export const FOUR_EYES_ROLES = ["compliance_officer"];

export function Admin() {
  return (
    <div className="page admin">
      <h1>Administration</h1>
      <ApiKeys />
      <Users />
      <RoleGrants />
    </div>
  );
}

function ApiKeys() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [keys, refetch] = useQuery<{ apiKeys: { edges: { node: ApiKey }[]; pageInfo: PageInfo } }>({
    query: KEYS, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only",
  });
  const [name, setName] = useState("");
  const [created, setCreated] = useState<{ key: string; name: string } | null>(null);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, create] = useMutation<{ createApiKey: { key: string; apiKey: ApiKey } }>(CREATE);
  const [, revoke] = useMutation(REVOKE);
  async function submit(e: FormEvent) {
    e.preventDefault();
    setErrors([]);
    const r = await create({ input: { name } });
    setErrors(fromCombined(r.error));
    if (r.data) {
      setCreated({ key: r.data.createApiKey.key, name: r.data.createApiKey.apiKey.name });
      setName("");
      refetch({ requestPolicy: "network-only" });
    }
  }
  async function revokeKey(id: string) {
    setErrors([]);
    const r = await revoke({ id });
    setErrors(fromCombined(r.error));
    refetch({ requestPolicy: "network-only" });
  }
  const rows = keys.data?.apiKeys.edges.map((e) => e.node) ?? [];
  return (
    <Panel title="API keys" testId="api-keys">
      <form className="form inline" onSubmit={submit} aria-label="create API key">
        <label>Name <input value={name} onChange={(e) => setName(e.target.value)} name="keyName" required /></label>
        <button type="submit" className="primary">Create key</button>
      </form>
      {created ? (
        <div className="once" role="status" aria-label="new key">
          <p>The key <b>{created.name}</b>, shown this once: copy it now.</p>
          <code data-testid="new-key">{created.key}</code>
          <button type="button" onClick={() => void navigator.clipboard?.writeText(created.key)}>Copy</button>
          <button type="button" onClick={() => setCreated(null)}>Done</button>
        </div>
      ) : null}
      <Errors errors={[...fromCombined(keys.error), ...errors]} />
      {keys.fetching && !keys.data ? <Loading /> : !rows.length ? <Empty>No keys.</Empty> : (
        <table>
          <thead><tr><th>Name</th><th>Key id</th><th>User</th><th>Created</th><th>Last used</th><th>Revoked</th><th /></tr></thead>
          <tbody>
            {rows.map((k) => (
              <tr key={k.id} data-key={k.name} data-revoked={k.revokedAt ? "yes" : "no"}>
                <td>{k.name}</td><td><code>{k.keyId}</code></td><td>{k.user?.email ?? "—"}</td>
                <td>{when(k.createdAt)}</td><td>{when(k.lastUsedAt)}</td><td>{k.revokedAt ? when(k.revokedAt) : "—"}</td>
                <td>{k.revokedAt ? null : <button type="button" className="danger" aria-label={`revoke ${k.name}`}
                  onClick={() => void revokeKey(k.id)}>Revoke</button>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Pager pageInfo={keys.data?.apiKeys.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}

function Users() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [users, refetch] = useQuery<{ users: { edges: { node: User }[]; pageInfo: PageInfo } }>({
    query: USERS, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only",
  });
  const [form, setForm] = useState({ email: "", displayName: "", role: "trader" });
  const { viewer } = useSession();
  const [note, setNote] = useState<string | null>(null);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, create] = useMutation(CREATE_USER);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const r = await create({ input: { email: form.email, displayName: form.displayName, roles: [form.role] } });
    setErrors(fromCombined(r.error));
    if (!r.error) { setForm({ email: "", displayName: "", role: "trader" }); refetch({ requestPolicy: "network-only" }); }
  }
  const rows = users.data?.users.edges.map((e) => e.node) ?? [];
  return (
    <Panel title="Users" testId="users">
      <form className="form inline" onSubmit={submit} aria-label="create user">
        <label>Email <input type="email" required value={form.email} onChange={(e) => setForm({ ...form, email: e.target.value })} /></label>
        <label>Name <input required value={form.displayName} onChange={(e) => setForm({ ...form, displayName: e.target.value })} /></label>
        <label>Role <select value={form.role} onChange={(e) => setForm({ ...form, role: e.target.value })}>
          {ROLES.map((r) => <option key={r}>{r}</option>)}</select></label>
        <button type="submit">Add user</button>
      </form>
      <Errors errors={[...fromCombined(users.error), ...errors]} />
      {users.fetching && !users.data ? <Loading /> : !rows.length ? <Empty>No users.</Empty> : (
        <table>
          <thead><tr><th>Email</th><th>Name</th><th>Roles</th><th>Active</th><th>Grant / revoke</th><th /></tr></thead>
          <tbody>{rows.map((u) => <UserRow key={u.id} user={u} me={viewer.user.id} onChanged={(note) => {
            setNote(note); refetch({ requestPolicy: "network-only" }); }} onErrors={setErrors} />)}</tbody>
        </table>
      )}
      {note ? <p className="ok" role="status">{note}</p> : null}
      <Pager pageInfo={users.data?.users.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}

function UserRow({ user, me, onChanged, onErrors }: { user: User; me: string; onChanged: (note: string) => void;
  onErrors: (e: ShownError[]) => void }) {
  const [role, setRole] = useState("trader");
  const [, setActive] = useMutation(SET_ACTIVE);
  const [, grant] = useMutation(GRANT);
  const [, revoke] = useMutation(REVOKE_ROLE);
  const [, request] = useMutation(REQUEST_GRANT);
  const has = user.roles.includes(role);
  async function run(p: Promise<{ error?: CombinedError }>, note: string) {
    const r = await p;
    onErrors(fromCombined(r.error));
    if (!r.error) onChanged(note);
  }
  const change = () => {
    if (has) return run(revoke({ id: user.id, role }), `${role} revoked from ${user.email}.`);
    if (FOUR_EYES_ROLES.includes(role))
      return run(request({ id: user.id, role }), `${role} for ${user.email} requested: a second admin must approve it.`);
    return run(grant({ id: user.id, role }), `${role} granted to ${user.email}.`);
  };
  return (
    <tr data-user={user.email} data-active={String(user.active)}>
      <td>{user.email}</td><td>{user.displayName}</td><td>{user.roles.join(", ")}</td><td>{user.active ? "yes" : "no"}</td>
      <td className="row-actions">
        <select aria-label={`role for ${user.email}`} value={role} onChange={(e) => setRole(e.target.value)}>
          {ROLES.map((r) => <option key={r}>{r}</option>)}</select>
        <button type="button" onClick={() => void change()}>
          {has ? "Revoke" : FOUR_EYES_ROLES.includes(role) ? "Request grant" : "Grant"}</button>
      </td>
      <td>{user.id === me ? <span className="meta">you</span> : (
        <button type="button" className={user.active ? "danger" : ""} aria-label={`${user.active ? "disable" : "enable"} ${user.email}`}
          onClick={() => void run(setActive({ id: user.id, active: !user.active }),
            `${user.email} ${user.active ? "disabled" : "enabled"}.`)}>{user.active ? "Disable" : "Enable"}</button>)}</td>
    </tr>
  );
}

interface GrantRequest { id: string; userId: string; role: string; status: string; requestedBy: string; createdAt: string;
  decidedBy: string | null; decidedAt: string | null }

function RoleGrants() {
  const { viewer } = useSession();
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [list, refetch] = useQuery<{ roleGrantRequests: { edges: { node: GrantRequest }[]; pageInfo: PageInfo } }>({
    query: GRANT_REQUESTS, variables: { after: cursors[cursors.length - 1] }, requestPolicy: "network-only" });
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [, decide] = useMutation(DECIDE_GRANT);
  async function answer(id: string, approve: boolean) {
    const r = await decide({ id, approve });
    setErrors(fromCombined(r.error));
    refetch({ requestPolicy: "network-only" });
  }
  const rows = list.data?.roleGrantRequests.edges.map((e) => e.node) ?? [];
  return (
    <Panel title="Role grant requests (four eyes)" testId="role-grants"
      actions={<button type="button" onClick={() => refetch({ requestPolicy: "network-only" })}>Refresh</button>}>
      <Errors errors={[...fromCombined(list.error), ...errors]} label="role grant errors" />
      {list.fetching && !list.data ? <Loading what="requests" /> : !rows.length ? <Empty>No role grant requests.</Empty> : (
        <table>
          <thead><tr><th>Requested</th><th>User</th><th>Role</th><th>Status</th><th>By</th><th>Decided</th><th /></tr></thead>
          <tbody>{rows.map((g) => (
            <tr key={g.id} data-grant={g.id} data-status={g.status} data-role={g.role}><td>{when(g.createdAt)}</td>
              <td><code>{g.userId.slice(0, 8)}</code></td><td>{g.role}</td>
              <td><span className={`status s-${g.status}`}>{g.status}</span></td>
              <td>{g.requestedBy === viewer.user.id ? "you" : <code>{g.requestedBy.slice(0, 8)}</code>}</td>
              <td>{g.decidedAt ? when(g.decidedAt) : "—"}</td>
              <td className="row-actions">{g.status !== "PENDING" ? null : g.requestedBy === viewer.user.id
                ? <span className="meta">awaiting a second admin</span> : <>
                  <button type="button" className="primary" onClick={() => void answer(g.id, true)}
                    aria-label={`approve ${g.role} grant`}>Approve</button>
                  <button type="button" className="danger" onClick={() => void answer(g.id, false)}>Reject</button></>}</td></tr>
          ))}</tbody>
        </table>
      )}
      <Pager pageInfo={list.data?.roleGrantRequests.pageInfo} cursors={cursors} onPage={setCursors} />
    </Panel>
  );
}
