// The function modules of convex/, keyed the way `import.meta.glob` keys them in the tests, so
// convex-test runs the same files here as under vitest.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export type ModuleMap = Record<string, () => Promise<Record<string, unknown>>>;

/** convex/, the folder above this one. */
export const FUNCTIONS_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

// The Convex CLI's rule for what it bundles: a top-level .ts/.js file with one dot in its name
// (so vitest.config.ts and *.test.ts are not modules).
const MODULE_FILE = /^[A-Za-z0-9_]+\.(ts|js)$/;

export function functionModules(dir: string = FUNCTIONS_DIR): ModuleMap {
  const modules: ModuleMap = {};
  const add = (relative: string) => {
    const url = pathToFileURL(path.join(dir, relative)).href;
    modules[`./${relative}`] = () => import(url);
  };
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isFile() && MODULE_FILE.test(entry.name)) add(entry.name);
  }
  const generated = path.join(dir, "_generated");
  if (!fs.existsSync(generated)) {
    throw new Error(
      `${generated} is missing: run \`npm run codegen\` in ${dir} (it needs no deployment).`,
    );
  }
  for (const name of fs.readdirSync(generated)) {
    if (name.endsWith(".js")) add(`_generated/${name}`);
  }
  return modules;
}

/** The module for a function path's module part ("production" or "production.js"). */
export function moduleLoader(
  modules: ModuleMap,
  modulePath: string,
): (() => Promise<Record<string, unknown>>) | undefined {
  const bare = modulePath.replace(/\.(js|ts)$/, "");
  return modules[`./${bare}.ts`] ?? modules[`./${bare}.js`];
}
