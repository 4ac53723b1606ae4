// Errors as the API gives them: a message with its code (extensions.code), and where the
// error carries them the compliance rule codes and JSON paths of invalid input.
import type { CombinedError } from "urql";
import type { GraphQLErrorLike } from "./client";

export interface ShownError {
  code: string;
  message: string;
  path?: string;
  details?: unknown;
}

export function fromGraphQLErrors(errors: ReadonlyArray<GraphQLErrorLike> | undefined): ShownError[] {
  return (errors ?? []).map((e) => {
    const ext = e.extensions ?? {};
    const code = typeof ext.code === "string" ? ext.code : "ERROR";
    const shown: ShownError = { code, message: e.message };
    if (e.path && e.path.length) shown.path = e.path.join(".");
    const { code: _code, requestId: _rid, request_id: _rid2, ...rest } = ext as Record<string, unknown>;
    if (Object.keys(rest).length) shown.details = rest;
    return shown;
  });
}

export function fromCombined(error: CombinedError | undefined | null): ShownError[] {
  if (!error) return [];
  if (error.graphQLErrors.length) return fromGraphQLErrors(error.graphQLErrors as GraphQLErrorLike[]);
  if (error.networkError) return [{ code: "NETWORK_ERROR", message: error.networkError.message }];
  return [{ code: "ERROR", message: error.message }];
}
