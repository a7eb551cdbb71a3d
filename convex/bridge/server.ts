// A local stand-in for a Convex deployment's function API, for tests and the embedded default.
//
// It runs the real functions of convex/ inside convex-test and answers the requests that the
// Python `convex` package's ConvexHttpClient makes:
//
//   POST /api/query | /api/mutation | /api/action
//     body    {"path": "production:appendEvents", "format": "convex_encoded_json", "args": {...}}
//     headers Convex-Client: python-<version>; Authorization: Convex <admin key> | Bearer <jwt>
//   Internal functions (all of production.ts) answer only a call whose `Convex <admin key>`
//   is the bridge's own key; any other call is told what a deployment tells it: "Could not find
//   public function". A `Bearer` token is a user's identity, never admin: it is ignored.
//   200 {"status": "success", "value": <encoded>, "logLines": [...]}
//   200 {"status": "error", "errorMessage": "...", "errorData"?: <encoded>, "logLines": [...]}
//   400/404/405/413 {"code": "...", "message": "..."} for a request that is not a function call
//   GET /health -> 200 {"status": "ok"}
//
// Values are Convex-encoded JSON with every whole float64 written as `3.0` (see encoding.ts).
// Calls run one at a time, in arrival order; with a data file, a mutation's answer is sent only
// after the snapshot that holds it is on disk.
import { createHash, timingSafeEqual } from "node:crypto";
import http from "node:http";
import { format } from "node:util";
import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import type { JSONValue, Value } from "convex/values";
import { argumentError, type ValidatorJSON } from "./argsValidation.ts";
import { decodeArgs, encodeValue, stringifyWithFloats } from "./encoding.ts";
import { functionModules, moduleLoader, type ModuleMap } from "./modules.ts";
import { readSnapshot, restore, takeSnapshot, writeAtomically, type Runner } from "./store.ts";

const MAX_BODY_BYTES = 16 * 1024 * 1024;

type Kind = "query" | "mutation" | "action";
const KIND_LABEL: Record<Kind, string> = { query: "Query", mutation: "Mutation", action: "Action" };
const KIND_LETTER: Record<Kind, string> = { query: "Q", mutation: "M", action: "A" };

type RegisteredFunction = {
  isQuery?: boolean;
  isMutation?: boolean;
  isAction?: boolean;
  isPublic?: boolean;
  isInternal?: boolean;
  exportArgs?: () => string;
};

type Answer = { status: number; body: JSONValue };

export type BridgeOptions = {
  /** The admin key: internal functions answer only `Authorization: Convex <adminKey>`. */
  adminKey: string;
  /** JSON file that keeps every table across restarts; none keeps data in memory only. */
  dataFile?: string;
  /** Log one line per call to stderr. */
  verbose?: boolean;
};

export type Bridge = {
  server: http.Server;
  /** Resolves once every request received so far is answered (and its snapshot written). */
  drain(): Promise<void>;
  /** Documents loaded from the data file at start. */
  restored: number;
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

// Function code runs in this process; its console output must not reach stdout, which carries
// only the "listening" line (a parent that reads that line may never drain the pipe again).
// While a call runs, console output becomes that call's logLines, as on a deployment.
let capture: string[] | null = null;
function routeConsole(): void {
  for (const [method, level] of [
    ["log", "LOG"],
    ["info", "INFO"],
    ["debug", "DEBUG"],
    ["warn", "WARN"],
    ["error", "ERROR"],
  ] as const) {
    console[method] = (...args: unknown[]) => {
      const line = format(...args);
      if (capture !== null) capture.push(`[${level}] ${line}`);
      else process.stderr.write(`${line}\n`);
    };
  }
}

/** "production:appendEvents", "production.js:appendEvents" or "dir/mod" (default export). */
function parseFunctionPath(path: string): {
  modulePath: string;
  exportName: string;
  canonical: string;
} {
  const [rawModule, exportName = "default", ...rest] = path.split(":");
  const modulePath = rawModule.replace(/\.js$/, "");
  if (modulePath === "" || exportName === "" || rest.length > 0) {
    throw new HttpError(
      400,
      "BadFunctionPath",
      `"${path}" is not a function path like "production:appendEvents".`,
    );
  }
  return { modulePath, exportName, canonical: `${modulePath}:${exportName}` };
}

/**
 * Does the request carry this admin key? Compared in constant time (over digests, so the
 * length does not leak either): the bridge is loopback-only, but any local user can connect.
 */
export function holdsAdminKey(authorization: string | undefined, adminKey: string): boolean {
  const match = /^Convex (.+)$/s.exec(authorization ?? "");
  if (match === null || adminKey === "") return false;
  const digest = (text: string) => createHash("sha256").update(text, "utf8").digest();
  return timingSafeEqual(digest(match[1]), digest(adminKey));
}

function errorAnswer(message: string, logLines: string[], errorData?: JSONValue): Answer {
  const body: Record<string, JSONValue> = { status: "error", errorMessage: message, logLines };
  if (errorData !== undefined) body.errorData = errorData;
  return { status: 200, body };
}

export async function createBridge(options: BridgeOptions): Promise<Bridge> {
  if (options.adminKey === "") throw new Error("the bridge needs an admin key");
  routeConsole();
  const modules: ModuleMap = functionModules();
  const schemaModule = await moduleLoader(modules, "schema")?.();
  const schema = schemaModule?.default as { tables: Record<string, unknown> } | undefined;
  const tableNames = schema === undefined ? [] : Object.keys(schema.tables);
  const t = convexTest(schema as never, modules);
  const runner = t as unknown as Runner;
  // Paths arrive as strings at run time, so the accessor is used untyped.
  const caller = t as unknown as Record<Kind, (reference: unknown, args: Value) => Promise<Value>>;

  let restored = 0;
  if (options.dataFile !== undefined) {
    const snapshot = await readSnapshot(options.dataFile);
    if (snapshot !== null) {
      try {
        restored = await restore(runner, snapshot, tableNames);
      } catch (error) {
        throw new Error(
          `cannot load ${options.dataFile}: ${(error as Error).message}. ` +
            "Move the file away to start with an empty database.",
        );
      }
    }
  }

  // One call at a time, in arrival order (convex-test runs one transaction at a time anyway);
  // this also orders the snapshots.
  let queue: Promise<unknown> = Promise.resolve();
  function serially<T>(work: () => Promise<T>): Promise<T> {
    const result = queue.then(work);
    queue = result.catch(() => undefined);
    return result;
  }

  async function resolveFunction(
    kind: Kind,
    path: string,
    admin: boolean,
  ): Promise<RegisteredFunction> {
    const { modulePath, exportName } = parseFunctionPath(path);
    const load = moduleLoader(modules, modulePath);
    const fn = load === undefined ? undefined : ((await load())[exportName] as RegisteredFunction);
    // As on a deployment: an internal function does not exist for a caller without the admin
    // key (none, a wrong one, or a user's token), so the answer tells it nothing more.
    const visible = fn?.isPublic === true || (admin && fn?.isInternal === true);
    if (fn === undefined || fn === null || !visible) {
      throw new Error(
        `Could not find public function for '${path}'. ` +
          "Did you forget to run `npx convex dev` or `npx convex deploy`?",
      );
    }
    const defined: Kind = fn.isQuery ? "query" : fn.isMutation ? "mutation" : "action";
    if (defined !== kind) {
      throw new Error(
        `Trying to execute ${path} as ${KIND_LABEL[kind]}, but it is defined as ` +
          `${KIND_LABEL[defined]}.`,
      );
    }
    return fn;
  }

  async function call(kind: Kind, path: string, args: Value, admin: boolean): Promise<Answer> {
    const logLines: string[] = [];
    const prefix = `[CONVEX ${KIND_LETTER[kind]}(${path})]`;
    let fn: RegisteredFunction;
    try {
      fn = await resolveFunction(kind, path, admin);
    } catch (error) {
      if (error instanceof HttpError) throw error;
      return errorAnswer((error as Error).message, logLines);
    }
    const validator = JSON.parse(fn.exportArgs?.() ?? '{"type":"any"}') as ValidatorJSON;
    const problem = argumentError(validator, args);
    if (problem !== null) return errorAnswer(`${prefix} ${problem}`, logLines);

    const reference = makeFunctionReference<Kind>(parseFunctionPath(path).canonical);
    capture = logLines;
    let value: Value;
    try {
      value = await caller[kind](reference, args);
    } catch (error) {
      const e = error as Error & { data?: Value };
      if (e?.name === "ConvexError" && "data" in e) {
        return errorAnswer(
          `${prefix} Uncaught ConvexError: ${e.message}`,
          logLines,
          encodeValue(e.data),
        );
      }
      return errorAnswer(`${prefix} Uncaught ${e?.name ?? "Error"}: ${e?.message ?? e}`, logLines);
    } finally {
      capture = null;
    }
    if (kind !== "query" && options.dataFile !== undefined) {
      const snapshot = await takeSnapshot(runner, tableNames);
      await writeAtomically(options.dataFile, JSON.stringify(snapshot));
    }
    return { status: 200, body: { status: "success", value: encodeValue(value), logLines } };
  }

  async function readBody(req: http.IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) {
        throw new HttpError(413, "RequestTooLarge", `The body is over ${MAX_BODY_BYTES} bytes.`);
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  async function handleCall(kind: Kind, req: http.IncomingMessage): Promise<Answer> {
    const text = await readBody(req);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (error) {
      throw new HttpError(400, "BadJsonBody", `The body is not JSON: ${(error as Error).message}`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new HttpError(400, "BadJsonBody", 'The body must be {"path", "format", "args"}.');
    }
    const { path, format: wireFormat = "json", args = {} } = body as Record<string, unknown>;
    if (typeof path !== "string") {
      throw new HttpError(
        400,
        "BadJsonBody",
        '"path" must be a string like "production:appendEvents".',
      );
    }
    if (wireFormat !== "json" && wireFormat !== "convex_encoded_json") {
      throw new HttpError(
        400,
        "BadJsonBody",
        `Unsupported format ${JSON.stringify(wireFormat)}: use "convex_encoded_json" or "json".`,
      );
    }
    let decoded: Value;
    try {
      decoded = decodeArgs(args as JSONValue);
    } catch (error) {
      throw new HttpError(
        400,
        "BadConvexValue",
        `"args" is not a Convex value: ${(error as Error).message}`,
      );
    }
    parseFunctionPath(path);
    const started = Date.now();
    const admin = holdsAdminKey(req.headers.authorization, options.adminKey);
    const answer = await serially(() => call(kind, path, decoded, admin));
    if (options.verbose) {
      const outcome = (answer.body as { status: string }).status;
      const who = admin ? "admin" : "no admin key";
      process.stderr.write(`${kind} ${path} (${who}) ${outcome} ${Date.now() - started}ms\n`);
    }
    return answer;
  }

  async function route(req: http.IncomingMessage): Promise<Answer> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const match = /^\/api\/(query|mutation|action)\/?$/.exec(url.pathname);
    if (match !== null) {
      if (req.method !== "POST") {
        throw new HttpError(405, "MethodNotAllowed", `Use POST for ${url.pathname}.`);
      }
      return await handleCall(match[1] as Kind, req);
    }
    if (url.pathname === "/health" || url.pathname === "/version") {
      if (req.method !== "GET" && req.method !== "HEAD") {
        throw new HttpError(405, "MethodNotAllowed", `Use GET for ${url.pathname}.`);
      }
      return { status: 200, body: { status: "ok", bridge: "convex-test" } };
    }
    throw new HttpError(404, "NotFound", `No route for ${req.method} ${url.pathname}.`);
  }

  // Requests whose answer is not yet written: drain() waits for them, so a SIGTERM never cuts
  // off an answer (or the snapshot behind it).
  let open = 0;
  let idle: (() => void)[] = [];
  const server = http.createServer((req, res) => {
    open += 1;
    res.on("close", () => {
      open -= 1;
      if (open === 0) {
        for (const wake of idle) wake();
        idle = [];
      }
    });
    route(req)
      .catch((error: unknown): Answer => {
        if (error instanceof HttpError) {
          return { status: error.status, body: { code: error.code, message: error.message } };
        }
        process.stderr.write(`convex-bridge: ${(error as Error)?.stack ?? error}\n`);
        return {
          status: 500,
          body: {
            code: "InternalServerError",
            message: String((error as Error)?.message ?? error),
          },
        };
      })
      .then(({ status, body }) => {
        const text = stringifyWithFloats(body);
        res.writeHead(status, {
          "Content-Type": "application/json",
          "Content-Length": Buffer.byteLength(text),
        });
        res.end(req.method === "HEAD" ? undefined : text);
      });
  });

  return {
    server,
    restored,
    drain: async () => {
      await queue;
      if (open > 0) await new Promise<void>((resolve) => idle.push(resolve));
    },
  };
}
