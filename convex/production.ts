// The production ledger's functions. They are internal: a deployment's URL is no secret, so a
// public function would let anyone append events or read every session. Only a caller holding
// the deployment's admin key (the Python ConvexHttpClient after set_admin_auth with
// CONVEX_DEPLOY_KEY) can call them: Django's sync calls the two mutations, and the queries
// serve ledger_verify, preflight and the tests.
import { ConvexError, v } from "convex/values";
import type { Doc } from "./_generated/dataModel";
import { internalMutation, internalQuery, type QueryCtx } from "./_generated/server";

/** The most events one appendEvents call takes; the sync sends batches of at most this. */
const MAX_BATCH = 100;
/** sessionTimeline's page size when the caller gives none, and the largest it accepts. */
const DEFAULT_TIMELINE_LIMIT = 500;
const MAX_TIMELINE_LIMIT = 1000;

const eventValidator = v.object({
  eventId: v.string(),
  sessionId: v.optional(v.union(v.string(), v.null())),
  stream: v.optional(v.string()),
  seq: v.number(),
  type: v.string(),
  occurredAt: v.number(),
  deviceId: v.optional(v.union(v.string(), v.null())),
  payload: v.any(),
});

// Event types become keys of sessionSummary's countsByType, and Convex field names must be
// printable ASCII not starting with "$"; the catalogue's names ("device.offline") fit this.
const EVENT_TYPE = /^[A-Za-z][A-Za-z0-9_.:-]*$/;

function isWholeNumber(value: number): boolean {
  return Number.isInteger(value) && value >= 0;
}

/**
 * Insert the session, or patch the one with the same sessionId.
 *
 * Idempotent: sending the same arguments again changes nothing but `updatedAt`. When the
 * caller gives `updatedAt` (the time of the change on the Django side) and the stored row is
 * newer, the call is ignored and answers `stale`, so a retried old upsert cannot undo a newer
 * one.
 */
export const upsertSession = internalMutation({
  args: {
    sessionId: v.string(),
    name: v.string(),
    status: v.string(),
    operator: v.string(),
    startedAt: v.optional(v.number()),
    endedAt: v.optional(v.number()),
    summary: v.optional(v.any()),
    updatedAt: v.optional(v.number()),
  },
  handler: async (ctx, args) => {
    if (args.sessionId === "") {
      throw new ConvexError("upsertSession: sessionId is empty; send the Django session uuid.");
    }
    const updatedAt = args.updatedAt ?? Date.now() / 1000;
    const existing = await ctx.db
      .query("productionSessions")
      .withIndex("by_sessionId", (q) => q.eq("sessionId", args.sessionId))
      .unique();
    const fields = { ...args, updatedAt };
    if (existing === null) {
      await ctx.db.insert("productionSessions", fields);
      return { sessionId: args.sessionId, result: "inserted" as const };
    }
    if (args.updatedAt !== undefined && existing.updatedAt > args.updatedAt) {
      return { sessionId: args.sessionId, result: "stale" as const };
    }
    await ctx.db.patch(existing._id, fields);
    return { sessionId: args.sessionId, result: "updated" as const };
  },
});

/**
 * Store a batch of ledger events, skipping every eventId already stored.
 *
 * Idempotent: replaying a batch (a retry after a timeout, say) inserts nothing and counts
 * every event as a duplicate. A duplicate is judged by eventId alone; its other fields are not
 * compared. The batch is one transaction: if any event is refused, none is stored.
 */
export const appendEvents = internalMutation({
  args: { events: v.array(eventValidator) },
  handler: async (ctx, { events }) => {
    if (events.length > MAX_BATCH) {
      throw new ConvexError(
        `appendEvents takes at most ${MAX_BATCH} events per call, got ${events.length}: ` +
          `split the batch.`,
      );
    }
    let inserted = 0;
    let duplicates = 0;
    for (const event of events) {
      if (event.eventId === "") {
        throw new ConvexError("appendEvents: an event has an empty eventId.");
      }
      if (!EVENT_TYPE.test(event.type)) {
        throw new ConvexError(
          `appendEvents: event ${event.eventId} has type ${JSON.stringify(event.type)}; ` +
            `a type is a catalogue name such as "device.offline".`,
        );
      }
      if (!isWholeNumber(event.seq)) {
        throw new ConvexError(
          `appendEvents: event ${event.eventId} has seq ${event.seq}; ` +
            `seq must be a whole number >= 0.`,
        );
      }
      if (!Number.isFinite(event.occurredAt)) {
        throw new ConvexError(
          `appendEvents: event ${event.eventId} has occurredAt ${event.occurredAt}; ` +
            `send unix seconds.`,
        );
      }
      const stored = await ctx.db
        .query("productionEvents")
        .withIndex("by_eventId", (q) => q.eq("eventId", event.eventId))
        .first();
      if (stored !== null) {
        duplicates += 1;
        continue;
      }
      const { deviceId, stream, sessionId, ...rest } = event;
      await ctx.db.insert("productionEvents", {
        ...rest,
        sessionId: sessionId ?? null,
        ...(stream === undefined ? {} : { stream }),
        ...(deviceId === undefined || deviceId === null ? {} : { deviceId }),
      });
      inserted += 1;
    }
    return { inserted, duplicates };
  },
});

/** The session's events in seq order, after `afterSeq` when given, at most `limit` of them. */
export const sessionTimeline = internalQuery({
  args: {
    sessionId: v.string(),
    afterSeq: v.optional(v.number()),
    limit: v.optional(v.number()),
  },
  handler: async (ctx, { sessionId, afterSeq, limit }) => {
    const take = limit ?? DEFAULT_TIMELINE_LIMIT;
    if (!Number.isInteger(take) || take < 1 || take > MAX_TIMELINE_LIMIT) {
      throw new ConvexError(
        `sessionTimeline: limit must be a whole number from 1 to ${MAX_TIMELINE_LIMIT}, ` +
          `got ${take}; page with afterSeq.`,
      );
    }
    return await ctx.db
      .query("productionEvents")
      .withIndex("by_session_seq", (q) => {
        const session = q.eq("sessionId", sessionId);
        return afterSeq === undefined ? session : session.gt("seq", afterSeq);
      })
      .order("asc")
      .take(take);
  },
});

async function edgeEvent(
  ctx: QueryCtx,
  sessionId: string,
  order: "asc" | "desc",
): Promise<Doc<"productionEvents"> | null> {
  return await ctx.db
    .query("productionEvents")
    .withIndex("by_session_seq", (q) => q.eq("sessionId", sessionId))
    .order(order)
    .first();
}

/**
 * The session row (null when it was never upserted) and what its events add up to.
 *
 * It reads every event of the session, so it suits sessions within Convex's per-query read
 * limit (tens of thousands of events).
 */
export const sessionSummary = internalQuery({
  args: { sessionId: v.string() },
  handler: async (ctx, { sessionId }) => {
    const session = await ctx.db
      .query("productionSessions")
      .withIndex("by_sessionId", (q) => q.eq("sessionId", sessionId))
      .unique();
    const countsByType: Record<string, number> = {};
    let eventCount = 0;
    const events = ctx.db
      .query("productionEvents")
      .withIndex("by_session_seq", (q) => q.eq("sessionId", sessionId));
    for await (const event of events) {
      eventCount += 1;
      countsByType[event.type] = (countsByType[event.type] ?? 0) + 1;
    }
    const first = await edgeEvent(ctx, sessionId, "asc");
    const last = await edgeEvent(ctx, sessionId, "desc");
    return {
      session,
      eventCount,
      firstSeq: first?.seq ?? null,
      lastSeq: last?.seq ?? null,
      countsByType,
    };
  },
});
