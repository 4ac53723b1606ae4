// One supergraph for every tenant: fetch the gateway's `_service { sdl }` once, compose a
// supergraph from it with @apollo/composition, load it into an in-process @apollo/gateway whose
// data source forwards each operation's Authorization header, and run the same operation for
// each API key given. Prints one JSON document on stdout.
//
//   node supergraph.mjs <graphql url> <operation> <api key> [<api key> ...]
//
// Offline after `npm ci`: the only requests go to <graphql url>; Apollo's own telemetry is off.
import { createHash } from "node:crypto";

process.env.APOLLO_TELEMETRY_DISABLED = "true"; // before the gateway loads: no exporter, no cloud probes

const { composeServices } = await import("@apollo/composition");
const { ApolloGateway, RemoteGraphQLDataSource } = await import("@apollo/gateway");
const { parse } = await import("graphql");

const [url, operation, ...keys] = process.argv.slice(2);
if (!url || !operation || keys.length === 0) {
  console.error("usage: node supergraph.mjs <graphql url> <operation> <api key> [<api key> ...]");
  process.exit(2);
}

async function fetchSdl() {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${keys[0]}` },
    body: JSON.stringify({ query: "{ _service { sdl } }" }),
  });
  const body = await response.json();
  if (!body.data?._service?.sdl) {
    throw new Error(`_service answered ${response.status}: ${JSON.stringify(body).slice(0, 500)}`);
  }
  return body.data._service.sdl;
}

const sdl = await fetchSdl();
const composed = composeServices([{ name: "alphintra", typeDefs: parse(sdl), url }]);
if (composed.errors?.length) {
  console.log(JSON.stringify({ compositionErrors: composed.errors.map((e) => e.message) }));
  process.exit(1);
}

const gateway = new ApolloGateway({
  supergraphSdl: composed.supergraphSdl,
  logger: { debug() {}, info() {}, warn: console.error, error: console.error },
  buildService: ({ url: serviceUrl }) =>
    new RemoteGraphQLDataSource({
      url: serviceUrl,
      willSendRequest({ request, context }) {
        if (context?.authorization) request.http.headers.set("authorization", context.authorization);
      },
    }),
});
const { schema, executor } = await gateway.load();

async function run(key) {
  const document = parse(operation);
  const requestContext = {
    request: { query: operation, variables: {} },
    source: operation,
    document,
    queryHash: createHash("sha256").update(operation).digest("hex"),
    operationName: null,
    context: { authorization: `Bearer ${key}` }, // what an HTTP router takes from the client
    logger: { debug() {}, info() {}, warn() {}, error: console.error },
    metrics: {},
  };
  const result = await executor(requestContext);
  return JSON.parse(JSON.stringify({ data: result.data ?? null, errors: result.errors }));
}

const results = [];
for (const key of keys) results.push(await run(key));
await gateway.stop();

const queryType = schema.getQueryType();
console.log(JSON.stringify({
  sdlSha256: createHash("sha256").update(sdl).digest("hex"),
  hints: composed.hints?.length ?? 0,
  supergraphQueryFields: Object.keys(queryType.getFields()).sort(),
  results,
}));
