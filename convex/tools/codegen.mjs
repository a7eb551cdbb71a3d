// Regenerates convex/_generated with the Convex CLI's own code generator, without a deployment.
//
// The CLI wants a project root whose convex/ holds only functions, but this folder also holds
// node_modules/, tests/ and bridge/. So this script stages the function modules (the top-level
// *.ts files the CLI would bundle) in a temporary project, runs
// `convex codegen --system-udfs --typecheck disable` there, and copies _generated back.
//
//   node tools/codegen.mjs          rewrite _generated/
//   node tools/codegen.mjs --check  exit 1 if _generated/ differs from what codegen produces
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const check = process.argv.includes("--check");

// The CLI's own rule: a module is a top-level .ts/.js file whose name has one dot.
const modules = fs
  .readdirSync(here, { withFileTypes: true })
  .filter((e) => e.isFile() && /^[A-Za-z0-9_]+\.(ts|js)$/.test(e.name))
  .map((e) => e.name);

const stage = fs.mkdtempSync(path.join(os.tmpdir(), "motionmix-codegen-"));
try {
  fs.mkdirSync(path.join(stage, "convex"));
  for (const name of modules) {
    fs.copyFileSync(path.join(here, name), path.join(stage, "convex", name));
  }
  fs.copyFileSync(path.join(here, "package.json"), path.join(stage, "package.json"));
  fs.symlinkSync(path.join(here, "node_modules"), path.join(stage, "node_modules"), "dir");
  const env = { ...process.env };
  delete env.CONVEX_DEPLOYMENT;
  delete env.CONVEX_DEPLOY_KEY;
  const run = spawnSync(
    process.execPath,
    [
      path.join(here, "node_modules", "convex", "bin", "main.js"),
      "codegen",
      "--system-udfs",
      "--typecheck",
      "disable",
    ],
    { cwd: stage, env, stdio: "inherit" },
  );
  if (run.status !== 0) {
    console.error(`convex codegen failed (exit ${run.status})`);
    process.exit(1);
  }
  const fresh = path.join(stage, "convex", "_generated");
  const target = path.join(here, "_generated");
  const names = fs.readdirSync(fresh).sort();
  if (check) {
    const stale = names.filter((name) => {
      const current = path.join(target, name);
      return (
        !fs.existsSync(current) ||
        fs.readFileSync(current, "utf8") !== fs.readFileSync(path.join(fresh, name), "utf8")
      );
    });
    if (stale.length > 0) {
      console.error(`_generated is stale (${stale.join(", ")}): run \`npm run codegen\`.`);
      process.exit(1);
    }
    console.log("_generated is up to date");
  } else {
    fs.mkdirSync(target, { recursive: true });
    for (const name of names) {
      fs.copyFileSync(path.join(fresh, name), path.join(target, name));
    }
    console.log(`wrote ${names.length} files to _generated/`);
  }
} finally {
  fs.rmSync(stage, { recursive: true, force: true });
}
