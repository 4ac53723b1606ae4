// The GraphQL client: urql over HTTP (POST, Authorization: Bearer) and graphql-ws for
// subscriptions (the same credential in connection_init: gateway/http/websocket.py reads
// {"Authorization": "Bearer …"} from the payload).
import { createClient as createWsClient, type Client as WsClient } from "graphql-ws";
import { Client, cacheExchange, fetchExchange, subscriptionExchange } from "urql";
import { authorization } from "./auth";

export function websocketUrl(location: { protocol: string; host: string }, path = "/graphql"): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

export function makeWsClient(credential: string): WsClient {
  return createWsClient({
    url: websocketUrl(window.location),
    connectionParams: () => ({ Authorization: authorization(credential) }),
    lazy: true,
    retryAttempts: 5,
  });
}

export function makeClient(credential: string, ws: WsClient): Client {
  return new Client({
    url: "/graphql",
    preferGetMethod: false,
    requestPolicy: "cache-and-network",
    fetchOptions: () => ({ headers: { Authorization: authorization(credential) } }),
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || "" };
          return {
            subscribe(sink) {
              const dispose = ws.subscribe(input, sink);
              return { unsubscribe: dispose };
            },
          };
        },
      }),
    ],
  });
}

/** One query over plain fetch, before a client exists (sign-in) or outside React. */
export async function fetchGraphQL<T>(credential: string | null, query: string,
  variables?: Record<string, unknown>): Promise<{ data?: T; errors?: GraphQLErrorLike[] }> {
  const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "application/json" };
  if (credential) headers.Authorization = authorization(credential);
  const response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  try {
    return await response.json();
  } catch {
    return { errors: [{ message: `HTTP ${response.status}`, extensions: { code: `HTTP_${response.status}` } }] };
  }
}

export interface GraphQLErrorLike {
  message: string;
  path?: ReadonlyArray<string | number>;
  extensions?: Record<string, unknown>;
}
