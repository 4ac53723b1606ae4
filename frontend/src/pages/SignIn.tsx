import { useState, type FormEvent } from "react";
import { Errors, SupportLinks } from "../components/common";
import { credentialKind } from "../lib/auth";
import type { ShownError } from "../lib/errors";
import { safeLogo, type WhiteLabel } from "../lib/theme";

export function SignIn({ theme, busy, errors, onSignIn }: {
  theme: WhiteLabel; busy: boolean; errors: ShownError[]; onSignIn: (credential: string) => void;
}) {
  const [value, setValue] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const logo = safeLogo(theme.logoUrl);

  function submit(event: FormEvent) {
    event.preventDefault();
    const kind = credentialKind(value);
    if (!kind) {
      setProblem("paste an API key (alp_…) or a JWT");
      return;
    }
    setProblem(null);
    onSignIn(value);
  }

  return (
    <main className="signin">
      <form onSubmit={submit} aria-label="sign in">
        <div className="brand">
          {logo ? <img src={logo} alt="" className="logo" /> : null}
          <h1 data-testid="product-name">{theme.productName}</h1>
        </div>
        <label htmlFor="credential">API key or JWT</label>
        <textarea id="credential" name="credential" rows={3} autoComplete="off" spellCheck={false}
          value={value} onChange={(e) => setValue(e.target.value)} placeholder="alp_… or eyJ…" autoFocus />
        {problem ? <div className="field-problem" role="alert">{problem}</div> : null}
        <Errors errors={errors} label="sign-in errors" />
        <button type="submit" className="primary" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
        <p className="hint">The key stays in this tab (session storage) and is sent only to this gateway.</p>
        <SupportLinks links={theme.supportLinks} />
      </form>
    </main>
  );
}
