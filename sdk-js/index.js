// hookwasm SDK for JavaScript handlers, built into components with componentize-js against
// the `hookwasm:handler/event-handler` world. It mirrors the Rust SDK's `Handler`: one method
// per payload kind, each allowing by default; `Outcome.allow()`, `Outcome.deny(reason)` and
// `.annotate(key, value)`; the handler's `config` parsed from `proxy.config.json` (`null` and
// `{}` are the same); `log.info(...)` and friends into the host's log.
//
// Usage (handler.js):
//
//   import { defineHandler, Outcome, log } from "./hookwasm-sdk/index.js";
//   const handler = defineHandler({
//     init(config) { ... throw new Error("bad config") ... },
//     onRefUpdate(event, update, config) { return Outcome.deny("no"); },
//   });
//   export const init = handler.init;
//   export const onEvent = handler.onEvent;
//
// componentize-js resolves relative imports only: keep this file next to the handler.

import { log as hostLog, config as hostConfig } from "hookwasm:handler/host@0.2.0";

/** What a handler answers for one event. */
export class Outcome {
  constructor(reason) {
    /** `undefined` for allow, the deny reason otherwise. */
    this.reason = reason;
    /** `[key, value]` pairs attached to the event's result. */
    this.annotations = [];
  }

  /** Let the action go ahead. */
  static allow() {
    return new Outcome(undefined);
  }

  /** Refuse the action; `reason` is shown to whoever it is refused to (gates only). */
  static deny(reason) {
    return new Outcome(String(reason));
  }

  /** Attaches a key/value pair (any value, turned into text). */
  annotate(key, value) {
    this.annotations.push([String(key), String(value)]);
    return this;
  }

  /** Whether the verdict is deny. */
  get denied() {
    return this.reason !== undefined;
  }

  /** The value of the first annotation with this key. */
  annotation(key) {
    return this.annotations.find(([k]) => k === key)?.[1];
  }
}

/** Writes to the host's log, tagged with the handler's name. */
export const log = Object.freeze({
  trace: (message) => hostLog("trace", String(message)),
  debug: (message) => hostLog("debug", String(message)),
  info: (message) => hostLog("info", String(message)),
  warn: (message) => hostLog("warn", String(message)),
  error: (message) => hostLog("error", String(message)),
});

/** The handler's config as JSON text, exactly as the host holds it (`null` when none). */
export function rawConfig() {
  return hostConfig();
}

/** The config as the handler sees it: parsed JSON, `{}` for none. */
export function parseConfig(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`invalid handler config: ${e.message}`);
  }
  return value ?? {};
}

/** The message a thrown value becomes: what the host records as the error. */
function message(thrown) {
  if (thrown instanceof Error) return thrown.message;
  return String(thrown);
}

/**
 * Wires a handler object to the world's exports: returns `{ init, onEvent }` to export.
 *
 * The handler may define `config(raw)` (turn the parsed config into what the methods get;
 * throw to refuse it), `init(config)` (check it once at load; throw to refuse the load), and
 * either `onEvent(event, config)` or any of `onProxyAction(event, action, config)`,
 * `onRefUpdate(event, update, config)`, `onPushRejected(event, rejected, config)` and
 * `onCustom(event, data, config)` (data parsed from JSON). Each returns an `Outcome` (or
 * nothing, which allows); a thrown error becomes the handler's error.
 */
export function defineHandler(handler) {
  const configure = (text) => {
    const parsed = parseConfig(text);
    return handler.config ? handler.config(parsed) : parsed;
  };
  return {
    init(configText) {
      try {
        const config = configure(configText);
        if (handler.init) handler.init(config);
      } catch (e) {
        throw message(e);
      }
    },
    onEvent(event) {
      let outcome;
      try {
        outcome = dispatch(handler, event, configure(hostConfig()));
      } catch (e) {
        throw message(e);
      }
      return toWit(outcome ?? Outcome.allow());
    },
  };
}

function dispatch(handler, event, config) {
  if (handler.onEvent) return handler.onEvent(event, config);
  const { tag, val } = event.payload;
  switch (tag) {
    case "proxy-action":
      return handler.onProxyAction?.(event, val, config);
    case "ref-update":
      return handler.onRefUpdate?.(event, val, config);
    case "push-rejected":
      return handler.onPushRejected?.(event, val, config);
    default:
      return handler.onCustom?.(event, JSON.parse(val), config);
  }
}

/** The WIT `outcome` record. */
export function toWit(outcome) {
  if (!(outcome instanceof Outcome)) {
    throw `a handler must return an Outcome (Outcome.allow() or Outcome.deny(reason)), not ${typeof outcome}`;
  }
  const verdict =
    outcome.reason === undefined ? { tag: "allow" } : { tag: "deny", val: outcome.reason };
  return { verdict, annotations: outcome.annotations };
}
