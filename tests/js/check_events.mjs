// A JavaScript subscriber's view of embedstream's events.
//
// Reads stream entries as a JavaScript service gets them from Redis (the `ce` and `data`
// field strings, one JSON object per line of the input file), parses both with
// JSON.parse, validates the message against its JSON Schema from schemas/json with Ajv
// (draft 2020-12, formats checked), and compares every document version with the exact
// one the test knows (`expected_version`, decimal text). Prints one JSON summary.
//
//   node check_events.mjs ENTRIES.jsonl SCHEMAS_DIR
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const [entriesPath, schemasDir] = process.argv.slice(2);
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const validators = new Map();

function validatorFor(type) {
  if (!validators.has(type)) {
    const schema = JSON.parse(readFileSync(join(schemasDir, `${type}.json`), "utf8"));
    validators.set(type, ajv.compile(schema));
  }
  return validators.get(type);
}

const summary = {
  entries: 0,
  invalid: [],
  types: {},
  v2: { exact: 0, inexact: [] },
  v1: { safe: 0, unsafe: 0, rounded: 0 },
  v2_order_is_numeric_order: null,
};
const v2Versions = [];

for (const line of readFileSync(entriesPath, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const entry = JSON.parse(line);
  const attributes = JSON.parse(entry.ce);
  const body = { ...attributes, data: JSON.parse(entry.data) };
  summary.entries += 1;
  summary.types[body.type] = (summary.types[body.type] ?? 0) + 1;

  const validate = validatorFor(body.type);
  if (!validate(body)) {
    summary.invalid.push({ type: body.type, errors: validate.errors });
    continue;
  }
  if (!("version" in body.data)) continue;
  const version = body.data.version;
  const expected = entry.expected_version;
  if (body.type.endsWith(".v2")) {
    // version text: a string, exact, and BigInt gives the number back
    const exact = typeof version === "string" && version === expected.padStart(20, "0")
      && BigInt(version) === BigInt(expected);
    if (exact) summary.v2.exact += 1;
    else summary.v2.inexact.push({ type: body.type, got: version, expected });
    v2Versions.push(version);
  } else {
    // a JSON number: a double in JavaScript. Beyond 2**53 it is not a safe integer (JS
    // cannot tell whether it was rounded), and most such versions were
    if (Number.isSafeInteger(version)) summary.v1.safe += 1;
    else summary.v1.unsafe += 1;
    if (BigInt(version) !== BigInt(expected)) summary.v1.rounded += 1;
  }
}

// string order of version texts is numeric order (what a subscriber sorting or
// comparing versions relies on)
const byString = [...v2Versions].sort();
const byNumber = [...v2Versions].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0));
summary.v2_order_is_numeric_order = v2Versions.length > 0
  && byString.every((v, i) => v === byNumber[i]);
console.log(JSON.stringify(summary));
