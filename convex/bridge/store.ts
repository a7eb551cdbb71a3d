// Optional persistence for the bridge: every table as JSON in one file, loaded at start and
// rewritten after each mutation, atomically (temp file, fsync, rename), so a crash leaves
// either the old snapshot or the new one.
//
// Documents are re-inserted on load, oldest first. Their fields survive; `_creationTime` is the
// time of the load, and `_id` is only reproduced while no document was ever deleted. The
// ledger's functions key everything on sessionId/eventId, never on `_id`.
import fs from "node:fs/promises";
import path from "node:path";
import { convexToJson, jsonToConvex, type JSONValue, type Value } from "convex/values";

const FORMAT = "motionmix-convex-bridge";
const VERSION = 1;

type Doc = Record<string, Value> & { _id: string; _creationTime: number };
type Snapshot = { format: string; version: number; tables: Record<string, JSONValue[]> };

// The slice of convex-test's accessor that this file uses.
export type Runner = {
  run<T>(fn: (ctx: { db: any }) => Promise<T>): Promise<T>;
};

export async function readSnapshot(file: string): Promise<Snapshot | null> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
  let snapshot: Snapshot;
  try {
    snapshot = JSON.parse(text) as Snapshot;
  } catch (error) {
    throw new Error(
      `${file} is not valid JSON (${(error as Error).message}); ` +
        "move it away to start with an empty database.",
    );
  }
  if (snapshot?.format !== FORMAT || snapshot.version !== VERSION) {
    throw new Error(
      `${file} is not a ${FORMAT} v${VERSION} data file; move it away or pass another --data.`,
    );
  }
  return snapshot;
}

/** Insert every document of the snapshot; answers how many were loaded. */
export async function restore(t: Runner, snapshot: Snapshot, tableNames: string[]) {
  const rows: { table: string; doc: Doc }[] = [];
  for (const [table, docs] of Object.entries(snapshot.tables)) {
    if (!tableNames.includes(table)) {
      throw new Error(`the data file has a table "${table}" that schema.ts no longer defines`);
    }
    for (const json of docs) rows.push({ table, doc: jsonToConvex(json) as Doc });
  }
  rows.sort((a, b) => a.doc._creationTime - b.doc._creationTime);
  await t.run(async (ctx) => {
    for (const { table, doc } of rows) {
      const { _id, _creationTime, ...fields } = doc;
      await ctx.db.insert(table, fields);
    }
  });
  return rows.length;
}

export async function takeSnapshot(t: Runner, tableNames: string[]): Promise<Snapshot> {
  const tables = await t.run(async (ctx) => {
    const out: Record<string, JSONValue[]> = {};
    for (const table of tableNames) {
      const docs: Value[] = await ctx.db.query(table).collect();
      out[table] = docs.map((doc) => convexToJson(doc));
    }
    return out;
  });
  return { format: FORMAT, version: VERSION, tables };
}

export async function writeAtomically(file: string, text: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  await fs.mkdir(dir, { recursive: true });
  const temp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const handle = await fs.open(temp, "w");
  try {
    await handle.writeFile(text, "utf8");
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(temp, file);
}
