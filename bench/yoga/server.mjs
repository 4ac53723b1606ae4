// graphql-yoga serving the throughput benchmark's query from the data the benchmark dumped.
//
//   node server.mjs <port> <data.json>
//
// The schema has the shape of the gateway's `jobs` connection (only what the query selects);
// the resolvers read the jobs and their creators from memory, loaded once at start, so this
// measures yoga + graphql-js, not a database. Started and stopped by bench/graphql_throughput.py.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createSchema, createYoga } from 'graphql-yoga';

const [port, dataPath] = process.argv.slice(2);
const { jobs, users } = JSON.parse(readFileSync(dataPath, 'utf8'));

const schema = createSchema({
  typeDefs: /* GraphQL */ `
    type User { email: String! }
    type Job {
      id: ID!
      kind: String!
      status: String!
      progress: Float!
      createdAt: String!
      createdBy: User
    }
    type JobEdge { node: Job! }
    type JobConnection { edges: [JobEdge!]! }
    type Query { jobs(first: Int = 50): JobConnection! }
  `,
  resolvers: {
    Query: { jobs: (_, { first }) => ({ edges: jobs.slice(0, first).map((node) => ({ node })) }) },
    Job: { createdBy: (job) => (job.createdBy == null ? null : users[job.createdBy]) },
  },
});

// No landing page or GraphiQL; errors masked as in production.
const yoga = createYoga({ schema, graphiql: false, landingPage: false, logging: 'warn' });

createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    return;
  }
  yoga(req, res);
}).listen(Number(port), '127.0.0.1');
