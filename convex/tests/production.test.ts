import { convexTest } from "convex-test";
import { ConvexError } from "convex/values";
import { describe, expect, test } from "vitest";
import { internal } from "../_generated/api";
import schema from "../schema";
import { modules } from "./modules";

const SESSION = "5f0c8a52-9d7e-4a8b-9a55-1f1f0e4b2c01";
const OTHER_SESSION = "0e6a3c11-2b44-4c1e-8f0b-7d2a9c3e5f02";

type EventArg = {
  eventId: string;
  sessionId?: string | null;
  stream?: string;
  seq: number;
  type: string;
  occurredAt: number;
  deviceId?: string | null;
  payload: unknown;
};

function event(seq: number, overrides: Partial<EventArg> = {}): EventArg {
  return {
    eventId: `evt-${overrides.sessionId ?? SESSION}-${seq}`,
    sessionId: SESSION,
    seq,
    type: "device.online",
    occurredAt: 1_760_000_000.25 + seq,
    deviceId: "dev-1",
    payload: { offline_for_s: 12.5 },
    ...overrides,
  };
}

function setup() {
  return convexTest(schema, modules);
}

describe("appendEvents", () => {
  test("the same eventId sent twice is stored once and counted as a duplicate", async () => {
    const t = setup();
    const first = await t.mutation(internal.production.appendEvents, { events: [event(1)] });
    const second = await t.mutation(internal.production.appendEvents, { events: [event(1)] });
    expect(first).toEqual({ inserted: 1, duplicates: 0 });
    expect(second).toEqual({ inserted: 0, duplicates: 1 });
    const timeline = await t.query(internal.production.sessionTimeline, { sessionId: SESSION });
    expect(timeline).toHaveLength(1);
  });

  test("one batch holding the same eventId twice inserts it once", async () => {
    const t = setup();
    const result = await t.mutation(internal.production.appendEvents, {
      events: [event(1), event(1)],
    });
    expect(result).toEqual({ inserted: 1, duplicates: 1 });
  });

  test("replaying a whole batch inserts nothing", async () => {
    const t = setup();
    const batch = [1, 2, 3, 4, 5].map((seq) => event(seq));
    expect(await t.mutation(internal.production.appendEvents, { events: batch })).toEqual({
      inserted: 5,
      duplicates: 0,
    });
    expect(await t.mutation(internal.production.appendEvents, { events: batch })).toEqual({
      inserted: 0,
      duplicates: 5,
    });
    const summary = await t.query(internal.production.sessionSummary, { sessionId: SESSION });
    expect(summary.eventCount).toBe(5);
  });

  test("a batch that overlaps a stored one inserts only the new events", async () => {
    const t = setup();
    await t.mutation(internal.production.appendEvents, { events: [event(1), event(2)] });
    const result = await t.mutation(internal.production.appendEvents, {
      events: [event(2), event(3)],
    });
    expect(result).toEqual({ inserted: 1, duplicates: 1 });
  });

  test("an event is stored with exactly the fields that were sent", async () => {
    const t = setup();
    await t.mutation(internal.production.appendEvents, {
      events: [event(7, { stream: `session-${SESSION}`, payload: { nested: { list: [1, 2] } } })],
    });
    const [stored] = await t.query(internal.production.sessionTimeline, { sessionId: SESSION });
    expect(stored).toMatchObject({
      eventId: `evt-${SESSION}-7`,
      sessionId: SESSION,
      stream: `session-${SESSION}`,
      seq: 7,
      type: "device.online",
      occurredAt: 1_760_000_007.25,
      deviceId: "dev-1",
      payload: { nested: { list: [1, 2] } },
    });
  });

  test("a null deviceId is accepted and stored as absent", async () => {
    const t = setup();
    await t.mutation(internal.production.appendEvents, { events: [event(1, { deviceId: null })] });
    const [stored] = await t.query(internal.production.sessionTimeline, { sessionId: SESSION });
    expect(stored).not.toHaveProperty("deviceId");
  });

  test("events without a session are stored apart from every session", async () => {
    const t = setup();
    const result = await t.mutation(internal.production.appendEvents, {
      events: [
        event(1, { eventId: "fleet-1", sessionId: null, stream: "fleet", type: "device.offline" }),
        event(2, { eventId: "fleet-2", sessionId: undefined, stream: "fleet" }),
        event(1),
      ],
    });
    expect(result).toEqual({ inserted: 3, duplicates: 0 });
    const timeline = await t.query(internal.production.sessionTimeline, { sessionId: SESSION });
    expect(timeline.map((e) => e.eventId)).toEqual([`evt-${SESSION}-1`]);
    const fleet = await t.run((ctx) =>
      ctx.db
        .query("productionEvents")
        .withIndex("by_session_seq", (q) => q.eq("sessionId", null))
        .collect(),
    );
    expect(fleet.map((e) => e.eventId)).toEqual(["fleet-1", "fleet-2"]);
  });

  test("an empty batch is accepted and inserts nothing", async () => {
    const t = setup();
    expect(await t.mutation(internal.production.appendEvents, { events: [] })).toEqual({
      inserted: 0,
      duplicates: 0,
    });
  });

  test("a batch of 100 events is accepted", async () => {
    const t = setup();
    const batch = Array.from({ length: 100 }, (_, i) => event(i + 1));
    expect(await t.mutation(internal.production.appendEvents, { events: batch })).toEqual({
      inserted: 100,
      duplicates: 0,
    });
  });

  test("a batch of 101 events is refused with a message that says to split it", async () => {
    const t = setup();
    const batch = Array.from({ length: 101 }, (_, i) => event(i + 1));
    const call = t.mutation(internal.production.appendEvents, { events: batch });
    await expect(call).rejects.toThrow(ConvexError);
    await expect(t.mutation(internal.production.appendEvents, { events: batch })).rejects.toThrow(
      /at most 100 events per call, got 101: split the batch/,
    );
    const summary = await t.query(internal.production.sessionSummary, { sessionId: SESSION });
    expect(summary.eventCount).toBe(0);
  });

  test("a seq sent as a string is refused by the argument validator", async () => {
    const t = setup();
    const bad = { ...event(1), seq: "1" } as unknown as EventArg;
    await expect(t.mutation(internal.production.appendEvents, { events: [bad] })).rejects.toThrow(
      /Validator error: Expected `number`, got `1`/,
    );
  });

  test("an event missing its type is refused by the argument validator", async () => {
    const t = setup();
    const { type: _type, ...rest } = event(1);
    await expect(
      t.mutation(internal.production.appendEvents, { events: [rest as EventArg] }),
    ).rejects.toThrow(/Missing required field `type`/);
  });

  test("an event with a field the validator does not know is refused", async () => {
    const t = setup();
    const bad = { ...event(1), status: "pending" } as unknown as EventArg;
    await expect(t.mutation(internal.production.appendEvents, { events: [bad] })).rejects.toThrow(
      /Unexpected field `status`/,
    );
  });

  test("events that are not a list are refused by the argument validator", async () => {
    const t = setup();
    await expect(
      t.mutation(internal.production.appendEvents, { events: event(1) as unknown as EventArg[] }),
    ).rejects.toThrow(/Expected `Array`/);
  });

  test("a fractional seq is refused and nothing of its batch is stored", async () => {
    const t = setup();
    await expect(
      t.mutation(internal.production.appendEvents, { events: [event(1), event(2.5)] }),
    ).rejects.toThrow(/seq must be a whole number/);
    const summary = await t.query(internal.production.sessionSummary, { sessionId: SESSION });
    expect(summary.eventCount).toBe(0);
  });

  test("a type that is not a catalogue name is refused", async () => {
    const t = setup();
    await expect(
      t.mutation(internal.production.appendEvents, { events: [event(1, { type: "$weird" })] }),
    ).rejects.toThrow(/catalogue name/);
  });

  test("an empty eventId is refused", async () => {
    const t = setup();
    await expect(
      t.mutation(internal.production.appendEvents, { events: [event(1, { eventId: "" })] }),
    ).rejects.toThrow(/empty eventId/);
  });
});

describe("sessionTimeline", () => {
  test("events appended out of order come back in seq order", async () => {
    const t = setup();
    await t.mutation(internal.production.appendEvents, { events: [event(3), event(1)] });
    await t.mutation(internal.production.appendEvents, { events: [event(5), event(2), event(4)] });
    const timeline = await t.query(internal.production.sessionTimeline, { sessionId: SESSION });
    expect(timeline.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  test("afterSeq returns only the events after it", async () => {
    const t = setup();
    await t.mutation(internal.production.appendEvents, {
      events: [4, 2, 5, 1, 3].map((seq) => event(seq)),
    });
    const after = await t.query(internal.production.sessionTimeline, {
      sessionId: SESSION,
      afterSeq: 2,
    });
    expect(after.map((e) => e.seq)).toEqual([3, 4, 5]);
    const none = await t.query(internal.production.sessionTimeline, {
      sessionId: SESSION,
      afterSeq: 5,
    });
    expect(none).toEqual([]);
  });

  test("limit and afterSeq page through a session in order", async () => {
    const t = setup();
    await t.mutation(internal.production.appendEvents, {
      events: [7, 3, 6, 1, 5, 2, 4].map((seq) => event(seq)),
    });
    const pages: number[][] = [];
    let afterSeq: number | undefined;
    for (;;) {
      const page = await t.query(internal.production.sessionTimeline, {
        sessionId: SESSION,
        limit: 3,
        ...(afterSeq === undefined ? {} : { afterSeq }),
      });
      if (page.length === 0) break;
      pages.push(page.map((e) => e.seq));
      afterSeq = page[page.length - 1].seq;
    }
    expect(pages).toEqual([[1, 2, 3], [4, 5, 6], [7]]);
  });

  test("the timeline holds only the asked session's events", async () => {
    const t = setup();
    await t.mutation(internal.production.appendEvents, {
      events: [event(1), event(1, { sessionId: OTHER_SESSION }), event(2)],
    });
    const timeline = await t.query(internal.production.sessionTimeline, { sessionId: SESSION });
    expect(timeline.map((e) => e.sessionId)).toEqual([SESSION, SESSION]);
  });

  test("a limit outside 1..1000 is refused", async () => {
    const t = setup();
    await expect(
      t.query(internal.production.sessionTimeline, { sessionId: SESSION, limit: 0 }),
    ).rejects.toThrow(/limit must be a whole number from 1 to 1000/);
    await expect(
      t.query(internal.production.sessionTimeline, { sessionId: SESSION, limit: 1001 }),
    ).rejects.toThrow(/limit must be a whole number/);
  });

  test("an afterSeq sent as a string is refused by the argument validator", async () => {
    const t = setup();
    await expect(
      t.query(internal.production.sessionTimeline, {
        sessionId: SESSION,
        afterSeq: "2" as unknown as number,
      }),
    ).rejects.toThrow(/Validator error/);
  });
});

describe("upsertSession", () => {
  const base = {
    sessionId: SESSION,
    name: "Spring lookbook",
    status: "draft",
    operator: "ada",
  };

  test("a new sessionId is inserted, then the same sessionId is patched", async () => {
    const t = setup();
    expect(await t.mutation(internal.production.upsertSession, base)).toEqual({
      sessionId: SESSION,
      result: "inserted",
    });
    expect(
      await t.mutation(internal.production.upsertSession, {
        ...base,
        status: "live",
        startedAt: 1_760_000_100,
      }),
    ).toEqual({ sessionId: SESSION, result: "updated" });
    const ended = await t.mutation(internal.production.upsertSession, {
      ...base,
      status: "ended",
      endedAt: 1_760_003_700.5,
      summary: { stills: 42, heroSwitches: 7 },
    });
    expect(ended.result).toBe("updated");

    const rows = await t.run((ctx) => ctx.db.query("productionSessions").collect());
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      ...base,
      status: "ended",
      startedAt: 1_760_000_100,
      endedAt: 1_760_003_700.5,
      summary: { stills: 42, heroSwitches: 7 },
    });
  });

  test("an upsert older than the stored row is ignored as stale", async () => {
    const t = setup();
    await t.mutation(internal.production.upsertSession, {
      ...base,
      status: "ended",
      updatedAt: 200,
    });
    const late = await t.mutation(internal.production.upsertSession, {
      ...base,
      status: "live",
      updatedAt: 100,
    });
    expect(late.result).toBe("stale");
    const summary = await t.query(internal.production.sessionSummary, { sessionId: SESSION });
    expect(summary.session).toMatchObject({ status: "ended", updatedAt: 200 });
  });

  test("updatedAt defaults to the time of the write in unix seconds", async () => {
    const t = setup();
    const before = Date.now() / 1000;
    await t.mutation(internal.production.upsertSession, base);
    const summary = await t.query(internal.production.sessionSummary, { sessionId: SESSION });
    expect(summary.session?.updatedAt).toBeGreaterThanOrEqual(before - 1);
    expect(summary.session?.updatedAt).toBeLessThan(before + 60);
  });

  test("a startedAt sent as a string is refused by the argument validator", async () => {
    const t = setup();
    await expect(
      t.mutation(internal.production.upsertSession, {
        ...base,
        startedAt: "2025-10-09T10:00:00Z" as unknown as number,
      }),
    ).rejects.toThrow(/Validator error: Expected `number`/);
  });

  test("an upsert missing the operator is refused by the argument validator", async () => {
    const t = setup();
    const { operator: _operator, ...rest } = base;
    await expect(
      t.mutation(internal.production.upsertSession, rest as typeof base),
    ).rejects.toThrow(/Missing required field `operator`/);
  });

  test("an empty sessionId is refused", async () => {
    const t = setup();
    await expect(
      t.mutation(internal.production.upsertSession, { ...base, sessionId: "" }),
    ).rejects.toThrow(/sessionId is empty/);
  });
});

describe("sessionSummary", () => {
  test("it counts the session's events by type and reports the first and last seq", async () => {
    const t = setup();
    await t.mutation(internal.production.upsertSession, {
      sessionId: SESSION,
      name: "Spring lookbook",
      status: "live",
      operator: "ada",
      startedAt: 1_760_000_000,
    });
    await t.mutation(internal.production.appendEvents, {
      events: [
        event(4, { type: "device.offline" }),
        event(2),
        event(9, { type: "device.registered" }),
        event(3, { type: "device.offline" }),
        event(1, { sessionId: OTHER_SESSION, type: "pairing.rotated" }),
      ],
    });
    const summary = await t.query(internal.production.sessionSummary, { sessionId: SESSION });
    expect(summary).toMatchObject({
      session: { sessionId: SESSION, status: "live", operator: "ada" },
      eventCount: 4,
      firstSeq: 2,
      lastSeq: 9,
      countsByType: { "device.offline": 2, "device.online": 1, "device.registered": 1 },
    });
  });

  test("an unknown session has no row and no events", async () => {
    const t = setup();
    const summary = await t.query(internal.production.sessionSummary, { sessionId: "nope" });
    expect(summary).toEqual({
      session: null,
      eventCount: 0,
      firstSeq: null,
      lastSeq: null,
      countsByType: {},
    });
  });

  test("a sessionId sent as a number is refused by the argument validator", async () => {
    const t = setup();
    await expect(
      t.query(internal.production.sessionSummary, { sessionId: 5 as unknown as string }),
    ).rejects.toThrow(/Validator error: Expected `string`/);
  });
});

describe("visibility", () => {
  // A deployment's URL is no secret: a public ledger function would let anyone write events or
  // read every session. Only a caller with the deployment's admin key may call these.
  test("every function of the ledger is internal", async () => {
    const production = (await import("../production")) as Record<string, unknown>;
    const exported = Object.entries(production).filter(([, fn]) => typeof fn === "function");
    expect(exported.map(([name]) => name).sort()).toEqual([
      "appendEvents",
      "sessionSummary",
      "sessionTimeline",
      "upsertSession",
    ]);
    for (const [name, fn] of exported) {
      const registered = fn as { isInternal?: boolean; isPublic?: boolean };
      expect({ name, isInternal: registered.isInternal, isPublic: registered.isPublic }).toEqual({
        name,
        isInternal: true,
        isPublic: undefined,
      });
    }
  });
});
