// Portfolio optimisation results (job kind portfolio.optimize): each backend's run, with its
// approximation ratio and the probability its answer put on the optimum, for the chart.
export interface BackendRun {
  optimiser: string; kind: string; role: string; status: string;
  ratio: number | null; probability: number | null; reason: string | null;
}

function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** The runs of one optimisation result (the requested backend, the reference, fallbacks). */
export function backendRuns(result: unknown): BackendRun[] {
  const runs = (result as { runs?: unknown } | null)?.runs;
  if (!Array.isArray(runs)) return [];
  return runs.map((r) => {
    const o = (r ?? {}) as Record<string, unknown>;
    return {
      optimiser: String(o.optimiser ?? "?"), kind: String(o.kind ?? ""), role: String(o.role ?? ""),
      status: String(o.status ?? ""), ratio: num(o.approximation_ratio),
      probability: num(o.probability_of_optimum), reason: typeof o.reason === "string" ? o.reason : null,
    };
  });
}

/** Several jobs' runs, one bar group per backend (its best answered run): what the chart shows. */
export function compareBackends(results: unknown[]): BackendRun[] {
  const best = new Map<string, BackendRun>();
  for (const result of results) {
    for (const run of backendRuns(result)) {
      const seen = best.get(run.optimiser);
      if (!seen || (run.ratio ?? -1) > (seen.ratio ?? -1)) best.set(run.optimiser, run);
    }
  }
  return [...best.values()].sort((a, b) => a.optimiser.localeCompare(b.optimiser));
}

/** Bar height as a share of the chart, clamped to [0, 1]; null shows as no bar. */
export function barShare(value: number | null): number {
  return value === null ? 0 : Math.max(0, Math.min(1, value));
}
