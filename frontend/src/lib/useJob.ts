// A job followed live: `jobUpdated` sends its current state first, then every change.
import { useSubscription } from "urql";
import type { JobRow } from "./jobs";

export const JOB_FIELDS = "id kind status progress message result error { code message } createdAt updatedAt";
const JOB_UPDATED = `subscription JobUpdated($id: ID!) { jobUpdated(id: $id) { sequence job { ${JOB_FIELDS} } } }`;

export function useJob(id: string | null, pause = false): { job: JobRow | null; error: unknown } {
  const [result] = useSubscription<{ jobUpdated: { job: JobRow } }>({
    query: JOB_UPDATED, variables: { id }, pause: !id || pause,
  });
  return { job: result.data?.jobUpdated.job ?? null, error: result.error };
}
