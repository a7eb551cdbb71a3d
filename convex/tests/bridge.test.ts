// @vitest-environment node
// The bridge as a caller sees it: a real `node bridge/main.mjs` process, spoken to over HTTP.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { stringifyWithFloats } from "../bridge/encoding";
import { holdsAdminKey } from "../bridge/server";

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "bridge", "main.mjs");
const READY = /^convex-bridge listening on (http:\/\/127\.0\.0\.1:(\d+))$/;

// Made up for these tests; the bridge takes any key of 16+ printable characters.
const ADMIN_KEY = "bridge-test-admin-key-0123456789";
const ADMIN = { Authorization: `Convex ${ADMIN_KEY}` };

type Running = {
  proc: ChildProcessWithoutNullStreams;
  url: string;
  stdout: () => string;
  stderr: () => string;
};

/** Starts `main.mjs`; `adminKey` goes in CONVEX_BRIDGE_ADMIN_KEY (null: none, so generated). */
async function startBridge(
  args: string[] = [],
  adminKey: string | null = ADMIN_KEY,
): Promise<Running> {
  const env = { ...process.env };
  delete env.CONVEX_BRIDGE_ADMIN_KEY;
  if (adminKey !== null) env.CONVEX_BRIDGE_ADMIN_KEY = adminKey;
  const proc = spawn(process.execPath, [MAIN, "--port", "0", ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env,
  });
  let stdout = "";
  let stderr = "";
  proc.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  proc.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bridge did not start: ${stderr}`)), 20_000);
    proc.stdout.on("data", () => {
      const line = stdout.split("\n")[0];
      const match = READY.exec(line);
      if (stdout.includes("\n") && match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`bridge exited ${code}: ${stderr}`));
    });
  });
  return { proc, url, stdout: () => stdout, stderr: () => stderr };
}

async function stopBridge(running: Running): Promise<number | null> {
  if (running.proc.exitCode !== null) return running.proc.exitCode;
  const exited = new Promise<number | null>((resolve) => running.proc.on("exit", resolve));
  running.proc.kill("SIGTERM");
  return await exited;
}

/** A call as the Python sync makes it: with the admin key unless `headers` says otherwise. */
async function post(
  url: string,
  kind: string,
  body: unknown,
  headers: Record<string, string> = ADMIN,
) {
  const response = await fetch(`${url}/api/${kind}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, text, json: JSON.parse(text) };
}

function event(seq: number, extra: Record<string, unknown> = {}) {
  return {
    eventId: `evt-${seq}`,
    sessionId: "s-1",
    seq,
    type: "device.online",
    occurredAt: 1_760_000_000 + seq,
    payload: { n: seq },
    ...extra,
  };
}

const appendEvents = (events: unknown[]) => ({
  path: "production:appendEvents",
  format: "convex_encoded_json",
  args: { events },
});

describe("stringifyWithFloats", () => {
  test("whole numbers are written as floats and other numbers as JavaScript writes them", () => {
    expect(stringifyWithFloats({ a: 1, b: [0, -3, 2.5, 1e21, 1e-7], c: "7", d: null })).toBe(
      '{"a":1.0,"b":[0.0,-3.0,2.5,1e+21,1e-7],"c":"7","d":null}',
    );
  });
});

describe("holdsAdminKey", () => {
  test("only `Convex <the key>` is the admin", () => {
    expect(holdsAdminKey(`Convex ${ADMIN_KEY}`, ADMIN_KEY)).toBe(true);
    expect(holdsAdminKey(undefined, ADMIN_KEY)).toBe(false);
    expect(holdsAdminKey("", ADMIN_KEY)).toBe(false);
    expect(holdsAdminKey(`Convex ${ADMIN_KEY.slice(1)}`, ADMIN_KEY)).toBe(false);
    expect(holdsAdminKey(`Bearer ${ADMIN_KEY}`, ADMIN_KEY)).toBe(false);
    expect(holdsAdminKey(ADMIN_KEY, ADMIN_KEY)).toBe(false);
    expect(holdsAdminKey("Convex ", "")).toBe(false);
  });
});

// Each start loads TypeScript through tsx: allow a slow machine some seconds.
describe("the bridge", { timeout: 30_000 }, () => {
  let bridge: Running;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "convex-bridge-test-"));

  beforeAll(async () => {
    bridge = await startBridge();
  }, 30_000);
  afterAll(async () => {
    expect(await stopBridge(bridge)).toBe(0);
    // Only the one "listening" line ever reaches stdout.
    expect(bridge.stdout()).toMatch(/^convex-bridge listening on http:\/\/127\.0\.0\.1:\d+\n$/);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  test("GET /health answers 200", async () => {
    const response = await fetch(`${bridge.url}/health`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: "ok" });
  });

  test("a mutation answers success with whole numbers written as floats", async () => {
    const { status, text, json } = await post(
      bridge.url,
      "mutation",
      appendEvents([event(2), event(1)]),
      { ...ADMIN, "Convex-Client": "python-0.8.1" },
    );
    expect(status).toBe(200);
    expect(json).toEqual({
      status: "success",
      value: { inserted: 2, duplicates: 0 },
      logLines: [],
    });
    expect(text).toContain('"inserted":2.0');
    expect(text).toContain('"duplicates":0.0');
  });

  test("a query answers the real function's result", async () => {
    const { text, json } = await post(bridge.url, "query", {
      path: "production:sessionTimeline",
      format: "convex_encoded_json",
      args: { sessionId: "s-1" },
    });
    expect(json.status).toBe("success");
    expect(json.value.map((e: { seq: number }) => e.seq)).toEqual([1, 2]);
    expect(text).toContain('"seq":1.0');
    expect(text).toContain('"occurredAt":1760000001.0');
  });

  test("values plain JSON cannot hold round-trip in Convex's encoding", async () => {
    const payload = {
      big: { $integer: "KgAAAAAAAAA=" }, // 42n
      notANumber: { $float: "AAAAAAAA+H8=" }, // NaN
      raw: { $bytes: "AQID" },
    };
    await post(bridge.url, "mutation", appendEvents([event(9, { payload })]));
    const { json } = await post(bridge.url, "query", {
      path: "production:sessionTimeline",
      format: "convex_encoded_json",
      args: { sessionId: "s-1", afterSeq: 8 },
    });
    expect(json.value[0].payload).toEqual(payload);
  });

  test("a wrongly typed argument is refused with the path of the bad value", async () => {
    const { status, json } = await post(
      bridge.url,
      "mutation",
      appendEvents([event(3, { seq: "3" })]),
    );
    expect(status).toBe(200);
    expect(json.status).toBe("error");
    expect(json.errorMessage).toContain("ArgumentValidationError: Value does not match validator.");
    expect(json.errorMessage).toContain("Path: .events[0].seq");
    expect(json.errorMessage).toContain("Validator: v.float64()");
    expect(json).not.toHaveProperty("errorData");
  });

  test("a missing field and an extra field are named", async () => {
    const { type: _type, ...noType } = event(3);
    const missing = await post(bridge.url, "mutation", appendEvents([noType]));
    expect(missing.json.errorMessage).toContain("missing the required field `type`");
    expect(missing.json.errorMessage).toContain("Path: .events[0]");
    const extra = await post(bridge.url, "mutation", appendEvents([event(3, { status: "x" })]));
    expect(extra.json.errorMessage).toContain("extra field `status`");
  });

  test("a ConvexError answers its message and its data", async () => {
    const batch = Array.from({ length: 101 }, (_, i) => event(100 + i));
    const { json } = await post(bridge.url, "mutation", appendEvents(batch));
    expect(json.status).toBe("error");
    expect(json.errorMessage).toContain("Uncaught ConvexError: appendEvents takes at most 100");
    expect(json.errorData).toBe(
      "appendEvents takes at most 100 events per call, got 101: split the batch.",
    );
  });

  test("an unknown function and a function called as the wrong kind are errors", async () => {
    const unknown = await post(bridge.url, "query", { path: "production:nope", args: {} });
    expect(unknown.json.errorMessage).toContain(
      "Could not find public function for 'production:nope'",
    );
    const wrongKind = await post(bridge.url, "query", {
      path: "production:appendEvents",
      args: { events: [] },
    });
    expect(wrongKind.json.errorMessage).toContain("defined as Mutation");
  });

  test("an internal function without the admin key answers as one that does not exist", async () => {
    const unknown = await post(bridge.url, "mutation", { path: "production:nope", args: {} }, {});
    for (const headers of <Record<string, string>[]>[
      {},
      { Authorization: "Convex not-the-bridge-admin-key" },
      { Authorization: `Convex ${ADMIN_KEY}x` },
      { Authorization: `convex ${ADMIN_KEY}` },
      // A user's token is an identity, never admin.
      { Authorization: `Bearer ${ADMIN_KEY}` },
    ]) {
      const refused = await post(
        bridge.url,
        "mutation",
        appendEvents([event(1, { eventId: "forged", sessionId: "s-forged" })]),
        headers,
      );
      // Word for word what a deployment says, the same as for a function that is not there.
      expect(refused.status).toBe(200);
      expect(refused.json).toEqual({
        status: "error",
        errorMessage:
          "Could not find public function for 'production:appendEvents'. " +
          "Did you forget to run `npx convex dev` or `npx convex deploy`?",
        logLines: [],
      });
      expect(refused.json.errorMessage.replace("appendEvents", "nope")).toBe(
        unknown.json.errorMessage,
      );
    }
    for (const path of ["production:sessionTimeline", "production:sessionSummary"]) {
      const read = await post(bridge.url, "query", { path, args: { sessionId: "s-1" } }, {});
      expect(read.json.errorMessage).toContain(`Could not find public function for '${path}'`);
    }
    const upsert = await post(
      bridge.url,
      "mutation",
      {
        path: "production:upsertSession",
        args: { sessionId: "s-forged", name: "x", status: "live", operator: "x" },
      },
      { Authorization: "Convex not-the-bridge-admin-key" },
    );
    expect(upsert.json.errorMessage).toContain("Could not find public function");
    // Nothing of the refused calls was stored.
    const { json } = await post(bridge.url, "query", {
      path: "production:sessionSummary",
      args: { sessionId: "s-forged" },
    });
    expect(json.value).toMatchObject({ session: null, eventCount: 0 });
  });

  test("the admin key opens the internal functions", async () => {
    const { json } = await post(bridge.url, "query", {
      path: "production:sessionSummary",
      format: "convex_encoded_json",
      args: { sessionId: "s-1" },
    });
    expect(json.status).toBe("success");
    expect(json.value.eventCount).toBeGreaterThan(0);
  });

  test("a body that is not a function call answers 400 with a code and a message", async () => {
    const notJson = await post(bridge.url, "mutation", "{nope");
    expect(notJson.status).toBe(400);
    expect(notJson.json).toMatchObject({ code: "BadJsonBody" });
    const badFormat = await post(bridge.url, "mutation", {
      path: "production:appendEvents",
      format: "xml",
      args: {},
    });
    expect(badFormat.status).toBe(400);
    expect(badFormat.json.message).toContain("Unsupported format");
  });

  test("an unknown route answers 404 and a GET on a function route 405", async () => {
    expect((await fetch(`${bridge.url}/api/run`)).status).toBe(404);
    expect((await fetch(`${bridge.url}/api/query`)).status).toBe(405);
  });

  test("with --data the tables survive a restart", async () => {
    const dataFile = path.join(dir, "nested", "ledger.json");
    const first = await startBridge(["--data", dataFile]);
    await post(first.url, "mutation", appendEvents([event(1), event(2)]));
    await post(first.url, "mutation", {
      path: "production:upsertSession",
      format: "convex_encoded_json",
      args: { sessionId: "s-1", name: "Shoot", status: "live", operator: "ada" },
    });
    expect(await stopBridge(first)).toBe(0);
    expect(fs.readdirSync(path.dirname(dataFile))).toEqual(["ledger.json"]);

    const second = await startBridge(["--data", dataFile]);
    try {
      const { json } = await post(second.url, "query", {
        path: "production:sessionSummary",
        format: "convex_encoded_json",
        args: { sessionId: "s-1" },
      });
      expect(json.value).toMatchObject({
        session: { sessionId: "s-1", status: "live" },
        eventCount: 2,
        firstSeq: 1,
        lastSeq: 2,
      });
      const replay = await post(second.url, "mutation", appendEvents([event(1)]));
      expect(replay.json.value).toEqual({ inserted: 0, duplicates: 1 });
    } finally {
      expect(await stopBridge(second)).toBe(0);
    }
  });

  test("without a key given the bridge makes one and tells it on stderr only", async () => {
    const running = await startBridge([], null);
    try {
      const told = /admin key \(generated for this run\): (\S+)\n/.exec(running.stderr());
      expect(told).not.toBeNull();
      const key = told![1];
      expect(key.length).toBeGreaterThanOrEqual(40);
      expect(running.stdout()).not.toContain(key);
      const refused = await post(running.url, "mutation", appendEvents([event(1)]), {});
      expect(refused.json.errorMessage).toContain("Could not find public function");
      const done = await post(running.url, "mutation", appendEvents([event(1)]), {
        Authorization: `Convex ${key}`,
      });
      expect(done.json.value).toEqual({ inserted: 1, duplicates: 0 });
    } finally {
      expect(await stopBridge(running)).toBe(0);
    }
    // Each start without a key makes another one.
    const again = await startBridge([], null);
    await stopBridge(again);
    expect(again.stderr()).not.toContain(
      /admin key \(generated for this run\): (\S+)/.exec(running.stderr())![1],
    );
  });

  test("--admin-key gives the key on the command line, and is not echoed", async () => {
    const key = "command-line-admin-key-42";
    const running = await startBridge(["--admin-key", key], "environment-admin-key-17");
    try {
      const timeline = { path: "production:sessionTimeline", args: { sessionId: "s-1" } };
      const flag = await post(running.url, "query", timeline, { Authorization: `Convex ${key}` });
      expect(flag.json).toMatchObject({ status: "success", value: [] });
      const env = await post(running.url, "query", timeline, {
        Authorization: "Convex environment-admin-key-17",
      });
      expect(env.json.errorMessage).toContain("Could not find public function");
    } finally {
      expect(await stopBridge(running)).toBe(0);
    }
    expect(running.stderr()).not.toContain(key);
  });

  test("an admin key too short to be a secret stops the start without repeating it", async () => {
    const error = await startBridge([], "short-key").then(
      () => null,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(/the admin key must be 16 to 512 printable ASCII characters/);
    expect(error?.message).not.toContain("short-key");
  });

  test("a data file that is not JSON stops the start with a message naming it", async () => {
    const dataFile = path.join(dir, "broken.json");
    fs.writeFileSync(dataFile, "{not json");
    await expect(startBridge(["--data", dataFile])).rejects.toThrow(
      /broken\.json is not valid JSON/,
    );
  });
});
