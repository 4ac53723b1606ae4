// GraphiQL at /graphql, from the gateway's own assets (no CDN). It sends the credential the
// console signed in with (this tab's sessionStorage) as Authorization: Bearer over HTTP and in
// graphql-ws's connection_init for subscriptions; without one it asks for it here.
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import "graphiql/style.css";
import { createClient } from "graphql-ws";
import { StrictMode, useMemo, useState, type FormEvent } from "react";
import { createRoot } from "react-dom/client";
import { authorization, clearCredential, credentialKind, readCredential, storeCredential } from "./lib/auth";
import { websocketUrl } from "./lib/client";
import "./graphiql.css";

function Explorer() {
  const [credential, setCredential] = useState<string | null>(() => readCredential());
  const [draft, setDraft] = useState("");
  const fetcher = useMemo(() => {
    if (!credential) return null;
    const header = authorization(credential);
    return createGraphiQLFetcher({
      url: "/graphql",
      headers: { Authorization: header },
      wsClient: createClient({ url: websocketUrl(window.location), connectionParams: { Authorization: header }, lazy: true }),
    });
  }, [credential]);

  function signIn(e: FormEvent) {
    e.preventDefault();
    if (!credentialKind(draft)) return;
    storeCredential(draft);
    setCredential(draft.trim());
  }

  return (
    <div className="explorer">
      <div className="explorer-bar">
        <a href="/console/">← Console</a>
        {credential ? (
          <>
            <span>Signed in ({credentialKind(credential) === "apiKey" ? "API key" : "JWT"})</span>
            <button type="button" onClick={() => { clearCredential(); setCredential(null); }}>Sign out</button>
          </>
        ) : (
          <form onSubmit={signIn} aria-label="sign in">
            <input type="password" aria-label="API key or JWT" placeholder="API key (alp_…) or JWT" value={draft}
              onChange={(e) => setDraft(e.target.value)} autoComplete="off" />
            <button type="submit">Use</button>
          </form>
        )}
      </div>
      {fetcher ? (
        <div className="explorer-main"><GraphiQL fetcher={fetcher} key={credential ?? ""} /></div>
      ) : (
        <p className="explorer-hint">Sign in (here or in the console) to explore this tenant's schema: every request
          needs Authorization: Bearer &lt;API key or token&gt;.</p>
      )}
    </div>
  );
}

createRoot(document.getElementById("graphiql")!).render(<StrictMode><Explorer /></StrictMode>);
