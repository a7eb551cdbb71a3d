// @vitest-environment node
// _generated/ is committed output of `convex codegen`; adding a module without regenerating it
// would leave `api` without the new functions' types, so the suite checks it is current.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");

test("_generated matches what convex codegen writes for the current modules", () => {
  const run = spawnSync(process.execPath, [path.join(root, "tools", "codegen.mjs"), "--check"], {
    cwd: root,
    encoding: "utf8",
    timeout: 60_000,
  });
  expect(run.stderr + run.stdout).toContain("_generated is up to date");
  expect(run.status).toBe(0);
}, 60_000);
