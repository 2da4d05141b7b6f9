// Sends CloudEvents to a hookwasm server with the official JavaScript SDK (`cloudevents` on
// npm), in structured, binary and batch modes, and prints each answer as one JSON line.
//
// Usage: node send.js <base url> <id prefix>
//
// Every event is the same but for its id: `<prefix>-structured`, `<prefix>-binary`,
// `<prefix>-batch-1`, `<prefix>-batch-2`. The SDK reads batches but has no batch serializer, so
// the batch is a JSON array of the SDK's events in the JSON event format.
"use strict";

const { CloudEvent, HTTP } = require("cloudevents");
const common = require("./common.json");

function event(id) {
  return new CloudEvent({ ...common.attributes, id, data: common.data });
}

async function post(url, headers, body) {
  const response = await fetch(url, { method: "POST", headers, body });
  return { status: response.status, answer: await response.json() };
}

async function main() {
  const [base, prefix] = process.argv.slice(2);
  const url = base.replace(/\/$/, "") + "/v1/events";
  for (const [mode, serialize] of [
    ["structured", HTTP.structured],
    ["binary", HTTP.binary],
  ]) {
    const message = serialize(event(`${prefix}-${mode}`));
    const answer = await post(url, message.headers, message.body);
    console.log(JSON.stringify({ mode, ...answer }));
  }
  const batch = JSON.stringify([1, 2].map((n) => event(`${prefix}-batch-${n}`)));
  const answer = await post(
    url,
    { "content-type": "application/cloudevents-batch+json" },
    batch,
  );
  console.log(JSON.stringify({ mode: "batch", ...answer }));
}

main().catch((error) => {
  console.error(`send.js: ${error.stack || error}`);
  process.exit(1);
});
