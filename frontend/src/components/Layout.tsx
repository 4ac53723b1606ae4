import type React from "react";
import { useEffect } from "react";
import { DeFi } from "../pages/DeFi";
import { Portfolio } from "../pages/Portfolio";
import { SupportLinks } from "./common";
import { Admin } from "../pages/Admin";
import { Audit } from "../pages/Audit";
import { Desk } from "../pages/Desk";
import { Jobs } from "../pages/Jobs";
import { Lab } from "../pages/Lab";
import { Marketplace } from "../pages/Marketplace";
import { Markets } from "../pages/Markets";
import { PAGES, hrefOf, navigate, pageForKey, usePage, type PagePath } from "../lib/router";
import { safeLogo, type Mode } from "../lib/theme";
import { useSession } from "../session";

const VIEWS: Record<PagePath, () => React.JSX.Element> = {
  markets: Markets, desk: Desk, jobs: Jobs, lab: Lab, portfolio: Portfolio, defi: DeFi, marketplace: Marketplace,
  audit: Audit, admin: Admin,
};

export function Layout({ mode, onMode }: { mode: Mode; onMode: (mode: Mode) => void }) {
  const { viewer, theme, signOut } = useSession();
  const page = usePage();
  const View = VIEWS[page];
  const logo = safeLogo(theme.logoUrl);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = pageForKey(e);
      if (!target) return;
      e.preventDefault();
      navigate(target);
      document.getElementById("main")?.focus();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
  return (
    <div className="shell">
      <a href="#main" className="skip">Skip to content</a>
      <header className="topbar">
        <div className="brand">
          {logo ? <img src={logo} alt="" className="logo" /> : null}
          <span className="product" data-testid="product-name">{theme.productName}</span>
          <span className="tenant">{viewer.tenant.name}</span>
        </div>
        <div className="who">
          <span>{viewer.user.email}</span>
          <span className="roles">{viewer.roles.join(", ")}</span>
          <SupportLinks links={theme.supportLinks} />
          <button type="button" onClick={() => onMode(mode === "dark" ? "light" : "dark")}
            aria-label="switch light and dark">{mode === "dark" ? "Light" : "Dark"}</button>
          <a href="/graphql" className="button">GraphiQL</a>
          <button type="button" onClick={signOut}>Sign out</button>
        </div>
      </header>
      <nav className="sidenav" aria-label="pages">
        {PAGES.map((p, i) => (
          <a key={p.path} href={hrefOf(p.path)} aria-current={p.path === page ? "page" : undefined}
            aria-keyshortcuts={i < 9 ? `Alt+${i + 1}` : undefined} title={i < 9 ? `Alt+${i + 1}` : undefined}
            onClick={(e) => { e.preventDefault(); navigate(p.path); }}>{p.title}</a>
        ))}
      </nav>
      <main className="content" id="main" tabIndex={-1}>
        <View />
      </main>
    </div>
  );
}
