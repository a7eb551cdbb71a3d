// Checks a call's arguments against the function's exported args validator before convex-test
// runs it, so that a refusal names the path of the bad value as a deployment does:
//
//   ArgumentValidationError: Value does not match validator.
//   Path: .events[0].seq
//   Value: "1"
//   Validator: v.float64()
//
// convex-test validates again when it runs the function; this pass only makes the message
// actionable for the Python side, which otherwise sees "Expected `number`, got `1`".
import { convexToJson, type Value } from "convex/values";

type FieldJSON = { fieldType: ValidatorJSON; optional: boolean };
export type ValidatorJSON =
  | { type: "null" | "number" | "bigint" | "boolean" | "string" | "bytes" | "any" }
  | { type: "literal"; value: unknown }
  | { type: "id"; tableName: string }
  | { type: "array"; value: ValidatorJSON }
  | { type: "record"; keys: ValidatorJSON; values: FieldJSON }
  | { type: "object"; value: Record<string, FieldJSON> }
  | { type: "union"; value: ValidatorJSON[] }
  | { type: string; [key: string]: unknown };

const MAX_SHOWN = 200;

function show(value: Value | undefined): string {
  if (value === undefined) return "undefined";
  let text: string;
  try {
    text = JSON.stringify(convexToJson(value));
  } catch {
    text = String(value);
  }
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}...` : text;
}

export function describe(validator: ValidatorJSON): string {
  switch (validator.type) {
    case "null":
      return "v.null()";
    case "number":
      return "v.float64()";
    case "bigint":
      return "v.int64()";
    case "boolean":
      return "v.boolean()";
    case "string":
      return "v.string()";
    case "bytes":
      return "v.bytes()";
    case "any":
      return "v.any()";
    case "literal":
      return `v.literal(${JSON.stringify(validator.value)})`;
    case "id":
      return `v.id(${JSON.stringify(validator.tableName)})`;
    case "array":
      return `v.array(${describe(validator.value as ValidatorJSON)})`;
    case "record": {
      const { keys, values } = validator as { keys: ValidatorJSON; values: FieldJSON };
      return `v.record(${describe(keys)}, ${describe(values.fieldType)})`;
    }
    case "union":
      return `v.union(${(validator.value as ValidatorJSON[]).map(describe).join(", ")})`;
    case "object": {
      const fields = Object.entries(validator.value as Record<string, FieldJSON>).map(
        ([name, field]) => {
          const inner = describe(field.fieldType);
          return `${name}: ${field.optional ? `v.optional(${inner})` : inner}`;
        },
      );
      return `v.object({${fields.join(", ")}})`;
    }
    default:
      return `v.${validator.type}()`;
  }
}

function isPlainObject(value: unknown): value is Record<string, Value | undefined> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  if (value instanceof ArrayBuffer) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function mismatch(path: string, value: Value | undefined, validator: ValidatorJSON): string {
  return (
    "ArgumentValidationError: Value does not match validator.\n" +
    (path === "" ? "" : `Path: ${path}\n`) +
    `Value: ${show(value)}\n` +
    `Validator: ${describe(validator)}`
  );
}

function literalMatches(expected: unknown, value: Value): boolean {
  try {
    return JSON.stringify(convexToJson(value)) === JSON.stringify(expected);
  } catch {
    return false;
  }
}

/** The first problem with `value` under `validator`, or null when it conforms. */
export function argumentError(
  validator: ValidatorJSON,
  value: Value | undefined,
  path = "",
): string | null {
  switch (validator.type) {
    case "any":
      return value === undefined ? mismatch(path, value, validator) : null;
    case "null":
      return value === null ? null : mismatch(path, value, validator);
    case "number":
      return typeof value === "number" ? null : mismatch(path, value, validator);
    case "bigint":
      return typeof value === "bigint" ? null : mismatch(path, value, validator);
    case "boolean":
      return typeof value === "boolean" ? null : mismatch(path, value, validator);
    case "string":
    case "id":
      return typeof value === "string" ? null : mismatch(path, value, validator);
    case "bytes":
      return value instanceof ArrayBuffer ? null : mismatch(path, value, validator);
    case "literal":
      return value !== undefined && literalMatches(validator.value, value)
        ? null
        : mismatch(path, value, validator);
    case "array": {
      if (!Array.isArray(value)) return mismatch(path, value, validator);
      for (const [index, item] of value.entries()) {
        const problem = argumentError(validator.value as ValidatorJSON, item, `${path}[${index}]`);
        if (problem !== null) return problem;
      }
      return null;
    }
    case "union": {
      const options = validator.value as ValidatorJSON[];
      return options.some((option) => argumentError(option, value, path) === null)
        ? null
        : mismatch(path, value, validator);
    }
    case "record": {
      if (!isPlainObject(value)) return mismatch(path, value, validator);
      const { keys, values } = validator as { keys: ValidatorJSON; values: FieldJSON };
      for (const [key, item] of Object.entries(value)) {
        if (item === undefined) continue;
        const keyProblem = argumentError(keys, key, `${path}.${key}`);
        if (keyProblem !== null) return keyProblem;
        const problem = argumentError(values.fieldType, item, `${path}.${key}`);
        if (problem !== null) return problem;
      }
      return null;
    }
    case "object": {
      if (!isPlainObject(value)) return mismatch(path, value, validator);
      const fields = validator.value as Record<string, FieldJSON>;
      for (const [name, field] of Object.entries(fields)) {
        if (value[name] === undefined) {
          if (field.optional) continue;
          return (
            `ArgumentValidationError: Object is missing the required field \`${name}\`. ` +
            "Consider wrapping the field validator in `v.optional(...)` if this is expected.\n\n" +
            (path === "" ? "" : `Path: ${path}\n`) +
            `Object: ${show(value)}\n` +
            `Validator: ${describe(validator)}`
          );
        }
        const problem = argumentError(field.fieldType, value[name], `${path}.${name}`);
        if (problem !== null) return problem;
      }
      for (const name of Object.keys(value)) {
        if (value[name] !== undefined && !(name in fields)) {
          return (
            `ArgumentValidationError: Object contains extra field \`${name}\` that is not ` +
            "in the validator.\n\n" +
            (path === "" ? "" : `Path: ${path}\n`) +
            `Object: ${show(value)}\n` +
            `Validator: ${describe(validator)}`
          );
        }
      }
      return null;
    }
    default:
      // A validator kind this bridge does not know: convex-test still checks it.
      return null;
  }
}
