// Convex's JSON wire format ("convex_encoded_json"), written the way the Python client needs.
//
// convexToJson already tags what plain JSON cannot hold: int64 as {"$integer": base64},
// bytes as {"$bytes": base64}, NaN/Infinity/-0 as {"$float": base64}. What remains is how a
// float64 is spelled: JavaScript writes 3.0 as `3`, and the Python client's json_to_convex
// refuses a JSON integer ("Bad JSON value: 3"). So every whole float64 is written with `.0`.
import { convexToJson, jsonToConvex, type JSONValue, type Value } from "convex/values";

const WHOLE = /^-?\d+$/;

/** JSON text of a JSON value in which every number is spelled as a float (`3.0`). */
export function stringifyWithFloats(value: JSONValue): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number": {
      const text = JSON.stringify(value);
      return WHOLE.test(text) ? `${text}.0` : text;
    }
    case "string":
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) {
        return `[${value.map(stringifyWithFloats).join(",")}]`;
      }
      const fields = Object.entries(value)
        .filter(([, field]) => field !== undefined)
        .map(([key, field]) => `${JSON.stringify(key)}:${stringifyWithFloats(field)}`);
      return `{${fields.join(",")}}`;
    }
    default:
      throw new TypeError(`Cannot write ${typeof value} as JSON`);
  }
}

/** A Convex value (a function's result, ConvexError data) as Convex-encoded JSON. */
export function encodeValue(value: Value | undefined): JSONValue {
  // A function that returns nothing answers null, as on a deployment.
  return value === undefined ? null : convexToJson(value);
}

/** Arguments as the client sent them, decoded into Convex values (bigint, ArrayBuffer...). */
export function decodeArgs(args: JSONValue): Value {
  return jsonToConvex(args);
}
