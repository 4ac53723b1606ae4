import type { ReactNode } from "react";
import type { ShownError } from "../lib/errors";
import { safeSupportLinks, type SupportLink } from "../lib/theme";

export function Errors({ errors, label }: { errors: ShownError[]; label?: string }) {
  if (!errors.length) return null;
  return (
    <div className="errors" role="alert" aria-label={label ?? "errors"}>
      {errors.map((e, i) => (
        <div key={i} className="error">
          <code className="code">{e.code}</code> {e.message}
          {e.path ? <span className="path"> at {e.path}</span> : null}
          {e.details ? <pre className="details">{JSON.stringify(e.details, null, 1)}</pre> : null}
        </div>
      ))}
    </div>
  );
}

export function Loading({ what }: { what?: string }) {
  return <div className="loading" aria-busy="true">Loading{what ? ` ${what}` : ""}…</div>;
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

export function Panel({ title, children, actions, testId }: {
  title: string; children: ReactNode; actions?: ReactNode; testId?: string;
}) {
  return (
    <section className="panel" data-testid={testId} aria-label={title}>
      <header>
        <h2>{title}</h2>
        {actions ? <div className="actions">{actions}</div> : null}
      </header>
      {children}
    </section>
  );
}

export interface PageInfo {
  hasNextPage: boolean;
  endCursor: string | null;
}

/** Cursor pagination: forward with `after`, back through the cursors already seen. */
export function Pager({ pageInfo, cursors, onPage }: {
  pageInfo: PageInfo | undefined;
  cursors: (string | null)[];
  onPage: (cursors: (string | null)[]) => void;
}) {
  if (!pageInfo) return null;
  const page = cursors.length;
  return (
    <nav className="pager" aria-label="pages">
      <button type="button" disabled={page <= 1} onClick={() => onPage(cursors.slice(0, -1))}>‹ Previous</button>
      <span>page {page}</span>
      <button type="button" disabled={!pageInfo.hasNextPage}
        onClick={() => onPage([...cursors, pageInfo.endCursor])}>Next ›</button>
    </nav>
  );
}

export function Progress({ value, label }: { value: number; label: string }) {
  return (
    <div className="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100}
      aria-valuenow={value}>
      <div className="bar" style={{ width: `${value}%` }} />
      <span>{value} %</span>
    </div>
  );
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** The white label's help links (https or mailto only). */
export function SupportLinks({ links }: { links: ReadonlyArray<SupportLink> | null | undefined }) {
  const shown = safeSupportLinks(links);
  if (!shown.length) return null;
  return (
    <nav className="support" aria-label="support">
      {shown.map((l) => <a key={l.url} href={l.url} target="_blank" rel="noopener noreferrer">{l.label}</a>)}
    </nav>
  );
}

/** Which of a list's states to show: loading, error-only, empty, or the rows. */
export function listState(fetching: boolean, hasData: boolean, rows: number): "loading" | "empty" | "rows" {
  if (fetching && !hasData) return "loading";
  return rows ? "rows" : "empty";
}
