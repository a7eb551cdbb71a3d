import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Convex runs queries and mutations in a V8 isolate, not Node: edge-runtime is the closest
    // stand-in. The bridge test opts into "node" with a file comment.
    environment: "edge-runtime",
    include: ["tests/**/*.test.ts"],
    server: { deps: { inline: ["convex-test"] } },
  },
});
