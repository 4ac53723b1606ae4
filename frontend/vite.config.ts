import { resolve } from "node:path";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// The build goes into the Python package: the gateway serves it at /console (and GraphiQL at
// /graphql), so `make run` needs no node. `npm run build` also writes the manifest whose hash
// tests/test_console.py recomputes to catch a stale build (docs/console.md).
export default defineConfig({
  base: "/console/",
  plugins: [react()],
  // `npm run dev`: the API of a gateway running beside it (`make run`)
  server: {
    proxy: {
      "/graphql": { target: process.env.ALPHINTRA_GATEWAY ?? "http://127.0.0.1:8000", ws: true },
      "/white-label": { target: process.env.ALPHINTRA_GATEWAY ?? "http://127.0.0.1:8000" },
    },
  },
  build: {
    outDir: resolve(__dirname, "../gateway/http/console_dist"),
    emptyOutDir: true,
    assetsInlineLimit: 0, // no data: URLs: every asset is a file under the CSP's 'self'
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      input: {
        console: resolve(__dirname, "index.html"),
        graphiql: resolve(__dirname, "graphiql.html"),
      },
    },
  },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
