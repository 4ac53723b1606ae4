// Files to the user's disk without a URL that carries the credential: fetched with the
// Authorization header (or decoded from base64) and saved through an object URL.
import { authorization } from "./auth";

export function base64Bytes(base64: string): Uint8Array {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A relative same-origin path only: a download URL from the API never sends the key elsewhere. */
export function sameOriginPath(url: string): string | null {
  return /^\/(?!\/)[A-Za-z0-9/_.\-]+$/.test(url) ? url : null;
}

export function saveBlob(blob: Blob, filename: string): void {
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

export async function downloadWithKey(credential: string, url: string, filename: string): Promise<string | null> {
  const path = sameOriginPath(url);
  if (!path) return `not a download path of this gateway: ${url}`;
  const response = await fetch(path, { headers: { Authorization: authorization(credential) } });
  if (!response.ok) {
    let code = `HTTP_${response.status}`;
    try { code = ((await response.json()) as { errors?: { extensions?: { code?: string } }[] }).errors?.[0]?.extensions?.code ?? code; } catch { /* not JSON */ }
    return code;
  }
  saveBlob(await response.blob(), filename);
  return null;
}
