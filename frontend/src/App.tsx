import { useCallback, useEffect, useMemo, useState } from "react";
import { Provider, useSubscription } from "urql";
import { Layout } from "./components/Layout";
import { clearCredential, readCredential, storeCredential } from "./lib/auth";
import { fetchGraphQL, makeClient, makeWsClient } from "./lib/client";
import { fromGraphQLErrors, type ShownError } from "./lib/errors";
import { DEFAULT_THEME, applyTheme, type Mode, type WhiteLabel } from "./lib/theme";
import { SignIn } from "./pages/SignIn";
import { SessionContext, type Viewer } from "./session";

const WHO = `query ConsoleSession {
  viewer { user { id email displayName } tenant { id slug name } roles authenticatedBy }
  whiteLabel { name productName primaryColour secondaryColour backgroundColour textColour logoUrl pluginId supportLinks { label url } }
}`;

const THEME = `query ConsoleTheme { whiteLabel { name productName primaryColour secondaryColour backgroundColour
  textColour logoUrl pluginId supportLinks { label url } } }`;

const PLUGIN_EVENTS = `subscription ConsolePluginEvents { pluginEvents { sequence action pluginId } }`;

function initialMode(): Mode {
  const stored = localStorage.getItem("alphintra.mode");
  if (stored === "light" || stored === "dark") return stored;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/** Before sign-in: the branding of the host this console is served on (public, nothing else). */
async function hostTheme(): Promise<WhiteLabel> {
  try {
    const response = await fetch("/white-label", { headers: { Accept: "application/json" } });
    if (response.ok) return { ...DEFAULT_THEME, ...(await response.json()) };
  } catch {
    /* the default theme */
  }
  return DEFAULT_THEME;
}

export function App() {
  const [credential, setCredential] = useState<string | null>(() => readCredential());
  const [viewer, setViewer] = useState<Viewer | null>(null);
  const [theme, setTheme] = useState<WhiteLabel>(DEFAULT_THEME);
  const [mode, setMode] = useState<Mode>(initialMode);
  const [errors, setErrors] = useState<ShownError[]>([]);
  const [busy, setBusy] = useState(false);

  useEffect(() => applyTheme(theme, mode), [theme, mode]);
  useEffect(() => localStorage.setItem("alphintra.mode", mode), [mode]);
  useEffect(() => {
    if (!credential) void hostTheme().then(setTheme);
  }, [credential]);

  const signIn = useCallback(async (value: string) => {
    setBusy(true);
    setErrors([]);
    const body = await fetchGraphQL<{ viewer: Viewer; whiteLabel: WhiteLabel }>(value, WHO);
    setBusy(false);
    if (!body.data?.viewer) {
      setErrors(fromGraphQLErrors(body.errors));
      clearCredential();
      setCredential(null);
      return;
    }
    storeCredential(value);
    setCredential(value);
    setViewer(body.data.viewer);
    setTheme(body.data.whiteLabel);
  }, []);

  // A reload keeps the session (sessionStorage): check it again.
  useEffect(() => {
    if (credential && !viewer) void signIn(credential);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const signOut = useCallback(() => {
    clearCredential();
    setCredential(null);
    setViewer(null);
  }, []);

  const ws = useMemo(() => (credential && viewer ? makeWsClient(credential) : null), [credential, viewer]);
  useEffect(() => () => void ws?.dispose(), [ws]);
  const client = useMemo(() => (credential && ws ? makeClient(credential, ws) : null), [credential, ws]);

  const refreshTheme = useCallback(() => {
    if (!credential) return;
    void fetchGraphQL<{ whiteLabel: WhiteLabel }>(credential, THEME).then((b) => {
      if (b.data?.whiteLabel) setTheme(b.data.whiteLabel);
    });
  }, [credential]);

  if (!credential || !viewer || !client) {
    return <SignIn theme={theme} busy={busy || (!!credential && !viewer && !errors.length)} errors={errors}
      onSignIn={signIn} />;
  }
  return (
    <Provider value={client}>
      <SessionContext.Provider value={{ credential, viewer, theme, refreshTheme, signOut }}>
        <ThemeFollower onChange={refreshTheme} />
        <Layout mode={mode} onMode={setMode} />
      </SessionContext.Provider>
    </Provider>
  );
}

/** The white label follows the tenant's plugins live: any plugin change reads it again. */
function ThemeFollower({ onChange }: { onChange: () => void }) {
  const [result] = useSubscription({ query: PLUGIN_EVENTS });
  useEffect(() => {
    if (result.data) onChange();
  }, [result.data, onChange]);
  return null;
}
