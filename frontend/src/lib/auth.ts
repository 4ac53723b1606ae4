// The signed-in credential: an API key (alp_…) or a JWT, kept in this tab's sessionStorage
// (never in a URL, never in localStorage) so a reload and GraphiQL in the same tab share it.
const KEY = "alphintra.credential";

export function readCredential(storage: Storage = sessionStorage): string | null {
  const value = storage.getItem(KEY);
  return value && value.trim() ? value.trim() : null;
}

export function storeCredential(value: string, storage: Storage = sessionStorage): void {
  storage.setItem(KEY, value.trim());
}

export function clearCredential(storage: Storage = sessionStorage): void {
  storage.removeItem(KEY);
}

/** What the credential looks like: an API key reads alp_<16 hex>_<secret>; anything with two
 * dots is taken as a JWT; else null (the form says why before anything is sent). */
export function credentialKind(value: string): "apiKey" | "jwt" | null {
  const v = value.trim();
  if (/^alp_[0-9a-fA-F]{16}_\S{32,}$/.test(v)) return "apiKey";
  if (/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(v)) return "jwt";
  return null;
}

export function authorization(credential: string): string {
  return `Bearer ${credential}`;
}
