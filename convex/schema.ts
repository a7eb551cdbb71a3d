// The production ledger as Convex stores it. The Django outbox (ledger.ProductionEvent) is the
// source of truth; these tables are its synced copy.
//
// Every number is v.number() (a float64): the Python `convex` client turns every int into a
// float before sending, so v.int64() fields would reject what Django sends.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  productionSessions: defineTable({
    // Django's session uuid. Convex has no unique indexes: upsertSession keeps it unique by
    // reading by_sessionId before it writes, inside one serializable mutation.
    sessionId: v.string(),
    name: v.string(),
    status: v.string(),
    operator: v.string(),
    startedAt: v.optional(v.number()), // unix seconds
    endedAt: v.optional(v.number()), // unix seconds
    summary: v.optional(v.any()),
    updatedAt: v.number(), // unix seconds of the change on the Django side (or of the write)
  }).index("by_sessionId", ["sessionId"]),

  productionEvents: defineTable({
    // Django's event uuid. appendEvents skips an eventId it already holds, so a retried batch
    // inserts nothing twice.
    eventId: v.string(),
    // null for events outside any photoshoot session (fleet events such as device.offline).
    sessionId: v.union(v.string(), v.null()),
    // The Django outbox numbers events per stream; kept so that sessionless streams stay apart.
    stream: v.optional(v.string()),
    seq: v.number(),
    type: v.string(),
    occurredAt: v.number(), // unix seconds, fractional
    deviceId: v.optional(v.string()),
    payload: v.any(),
  })
    .index("by_eventId", ["eventId"])
    .index("by_session_seq", ["sessionId", "seq"]),
});
