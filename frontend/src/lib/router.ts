// The console's routes under /console/ (the gateway answers every /console/* path with the
// page, so a reload or a bookmarked page works). History API; no hash.
import { useEffect, useState } from "react";

export const BASE = "/console";

export const PAGES = [
  { path: "markets", title: "Markets" },
  { path: "desk", title: "Trading desk" },
  { path: "jobs", title: "Jobs" },
  { path: "lab", title: "Strategy lab" },
  { path: "portfolio", title: "Portfolio & FX" },
  { path: "defi", title: "DeFi" },
  { path: "marketplace", title: "Marketplace" },
  { path: "audit", title: "Audit" },
  { path: "admin", title: "Administration" },
] as const;

export type PagePath = (typeof PAGES)[number]["path"];

/** The page a location path names, or the default page (the desk). */
export function pageOf(pathname: string): PagePath {
  const rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname;
  const first = rest.split("/").filter(Boolean)[0];
  const found = PAGES.find((p) => p.path === first);
  return found ? found.path : "desk";
}

export function hrefOf(page: PagePath): string {
  return `${BASE}/${page}`;
}

export function navigate(page: PagePath): void {
  const href = hrefOf(page);
  if (window.location.pathname !== href) window.history.pushState({}, "", href);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

export function usePage(): PagePath {
  const [page, setPage] = useState<PagePath>(() => pageOf(window.location.pathname));
  useEffect(() => {
    const update = () => setPage(pageOf(window.location.pathname));
    window.addEventListener("popstate", update);
    return () => window.removeEventListener("popstate", update);
  }, []);
  return page;
}

/** Keyboard: Alt+1…Alt+9 open the pages in the navigation's order (none while typing in a box). */
export function pageForKey(event: { altKey: boolean; ctrlKey: boolean; metaKey: boolean; key: string;
  code?: string }): PagePath | null {
  if (!event.altKey || event.ctrlKey || event.metaKey) return null;
  const digit = /^Digit([1-9])$/.exec(event.code ?? "")?.[1] ?? (/^[1-9]$/.test(event.key) ? event.key : null);
  if (!digit) return null;
  return PAGES[Number(digit) - 1]?.path ?? null;
}
