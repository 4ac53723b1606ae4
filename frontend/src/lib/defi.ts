// DeFi: slippage, minimum received and the health factor's band.

/** Basis points from a percent typed in ("0.5" → 50); null when not a number in (0, 50 %]. */
export function slippageBps(percent: string): number | null {
  const n = Number(percent.trim());
  if (!percent.trim() || !Number.isFinite(n) || n <= 0 || n > 50) return null;
  return Math.round(n * 100);
}

/** The least the swap may return: quoted out less the tolerance. */
export function minimumOut(quotedOut: string | number, bps: number): number {
  return Number(quotedOut) * (1 - bps / 10_000);
}

/** A health factor's band: null (no debt) is safe; under 1 may be liquidated. */
export function healthBand(hf: string | number | null | undefined, floor: string | number = 1.1): "safe" | "warning" | "danger" {
  if (hf === null || hf === undefined || hf === "") return "safe";
  const n = Number(hf);
  if (n < 1) return "danger";
  if (n < Number(floor) * 1.1) return "warning";
  return "safe";
}

export function newIdempotencyKey(prefix: string, random: () => number = Math.random): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(random() * 0xffffffff).toString(16)}`;
}
