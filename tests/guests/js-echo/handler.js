// A test-only JavaScript guest: it allows every event and returns, as the annotation `event`,
// the event exactly as componentize-js handed it over (JSON.stringify of the `event` argument).
// `tests/e2e/authors.rs` compares that with what sdk-js/testing.js builds for the same
// CloudEvent, so the JavaScript test kit's events have the shape real ones have.
export function init(_config) {}

export function onEvent(event) {
  return { verdict: { tag: "allow" }, annotations: [["event", JSON.stringify(event)]] };
}
