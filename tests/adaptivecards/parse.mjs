// Parses an Adaptive Card (or a Teams Workflows message envelope holding one) with Microsoft's
// `adaptivecards` package, the renderer library Teams clients are built on.
//
//   node parse.mjs FILE
//
// Exits 0 and prints `ok <version>` when the card parses with no parse event (unknown element or
// action type, invalid value, unsupported version, ...), validates with no failure, is version
// 1.4 or later, and keeps every property it was given through a parse/serialize round trip (a
// typo such as `fonttype` would be silently dropped by the parser, so it must fail here).
// Otherwise prints every problem to stderr and exits 1; exit 2 is a usage or I/O error.
//
// No DOM shim is needed: parsing and validation do not touch `document` or `window`, only
// rendering does. The package's `lib/` build is ESM with extension-less imports that Node
// cannot resolve, so the UMD bundle in `dist/` is loaded through `require`.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const AC = require("adaptivecards/dist/adaptivecards.js");

const ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive";
const MIN_MAJOR = 1;
const MIN_MINOR = 4;

function main(argv) {
  if (argv.length !== 1) {
    console.error("usage: node parse.mjs FILE");
    return 2;
  }
  let json;
  try {
    json = JSON.parse(readFileSync(argv[0], "utf8"));
  } catch (e) {
    console.error(`cannot read ${argv[0]}: ${e.message}`);
    return 2;
  }
  const problems = [];
  const cardJson = unwrap(json, problems);
  if (cardJson !== undefined) {
    checkCard(cardJson, problems);
  }
  if (problems.length > 0) {
    for (const p of problems) console.error(p);
    return 1;
  }
  console.log(`ok ${cardJson.version}`);
  return 0;
}

// The card inside a `{"type":"message","attachments":[...]}` envelope, or the JSON itself.
function unwrap(json, problems) {
  if (json?.type !== "message") {
    return json;
  }
  const attachments = json.attachments;
  if (!Array.isArray(attachments) || attachments.length !== 1) {
    problems.push("envelope: expected exactly one attachment");
    return undefined;
  }
  const [attachment] = attachments;
  if (attachment.contentType !== ADAPTIVE_CARD) {
    problems.push(`envelope: contentType is ${JSON.stringify(attachment.contentType)}`);
  }
  if (typeof attachment.content !== "object" || attachment.content === null) {
    problems.push("envelope: content is not an object");
    return undefined;
  }
  return attachment.content;
}

function checkCard(cardJson, problems) {
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  card.parse(cardJson, context);
  for (let i = 0; i < context.eventCount; i++) {
    const e = context.getEventAt(i);
    problems.push(`parse: ${AC.ValidationEvent[e.event]}: ${e.message}`);
  }
  for (const e of card.validateProperties().validationEvents) {
    problems.push(`validate: ${AC.ValidationEvent[e.event]}: ${e.message}`);
  }
  const version = card.version;
  if (
    version === undefined ||
    version.major < MIN_MAJOR ||
    (version.major === MIN_MAJOR && version.minor < MIN_MINOR)
  ) {
    problems.push(`version ${version} is older than ${MIN_MAJOR}.${MIN_MINOR}`);
  }
  const roundTrip = card.toJSON(context);
  for (const path of droppedProperties(cardJson, roundTrip, "")) {
    problems.push(`unknown property dropped by the parser: ${path}`);
  }
}

// Paths of properties present in `given` but missing from the parser's own serialization.
function droppedProperties(given, kept, path) {
  const dropped = [];
  if (Array.isArray(given)) {
    given.forEach((item, i) => {
      dropped.push(...droppedProperties(item, Array.isArray(kept) ? kept[i] : undefined, `${path}[${i}]`));
    });
  } else if (given !== null && typeof given === "object") {
    for (const [key, value] of Object.entries(given)) {
      // `$schema` is for editors; the object model does not keep it.
      if (key === "$schema" && path === "") continue;
      const child = kept !== null && typeof kept === "object" ? kept[key] : undefined;
      if (child === undefined) {
        dropped.push(`${path}/${key}`);
      } else {
        dropped.push(...droppedProperties(value, child, `${path}/${key}`));
      }
    }
  }
  return dropped;
}

process.exitCode = main(process.argv.slice(2));
