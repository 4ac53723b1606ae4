// The strategy lab's document errors: STRATEGY_INVALID answers extensions.errors, a list of
// {path, message} with JSON paths into the document; shown next to the line they name.
import type { ShownError } from "./errors";

export interface DocumentProblem { path: string; message: string }

export function documentProblems(errors: ShownError[]): DocumentProblem[] {
  const found: DocumentProblem[] = [];
  for (const e of errors) {
    const list = (e.details as { errors?: unknown } | undefined)?.errors;
    if (e.code === "STRATEGY_INVALID" && Array.isArray(list)) {
      for (const item of list) {
        if (item && typeof item === "object" && "message" in item)
          found.push({ path: String((item as DocumentProblem).path || "/"), message: String((item as DocumentProblem).message) });
      }
    }
  }
  return found;
}

/** The JSON text, or the parse problem (with its position) before anything is sent. */
export function parseDocument(text: string): { value?: unknown; problem?: string } {
  try {
    return { value: JSON.parse(text) };
  } catch (e) {
    return { problem: `not JSON: ${(e as Error).message}` };
  }
}

export const EXAMPLE_STRATEGY = {
  name: "Trend with RSI guard",
  interval: "1d",
  universe: { instruments: ["AAPL.XNAS", "SAP.XETR"] },
  signals: [
    { name: "fast", indicator: "sma", window: 5 },
    { name: "slow", indicator: "sma", window: 20 },
    { name: "strength", indicator: "rsi", window: 14 },
  ],
  entry: { op: "and", args: [{ op: "gt", left: "fast", right: "slow" }, { op: "lt", left: "strength", right: 75 }] },
  exit: { op: "lt", left: "fast", right: "slow" },
  sizing: { method: "fixed_fraction", fraction: 0.3 },
  risk: { max_position: 0.4, stop_loss: 0.1 },
};
