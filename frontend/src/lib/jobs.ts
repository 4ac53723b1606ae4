// Jobs: progress as the bar shows it, and a job's snapshot merged into the list.
export interface JobRow {
  id: string;
  kind: string;
  status: string;
  progress: number;
  message: string;
  result: unknown;
  error: { code: string; message: string } | null;
  createdAt: string;
  updatedAt: string;
}

export const TERMINAL = ["SUCCEEDED", "FAILED", "CANCELED"];

/** Whole percent, 0..100; a SUCCEEDED job is 100 whatever its last report said. */
export function percent(job: Pick<JobRow, "progress" | "status">): number {
  if (job.status === "SUCCEEDED") return 100;
  const p = Number.isFinite(job.progress) ? job.progress : 0;
  return Math.max(0, Math.min(100, Math.round(p * 100)));
}

export function isTerminal(job: Pick<JobRow, "status">): boolean {
  return TERMINAL.includes(job.status);
}

export function mergeJob(list: JobRow[], job: JobRow): JobRow[] {
  const index = list.findIndex((j) => j.id === job.id);
  if (index < 0) return [job, ...list];
  const current = list[index];
  if (current.updatedAt > job.updatedAt) return list; // an older snapshot arriving late
  const copy = list.slice();
  copy[index] = job;
  return copy;
}
