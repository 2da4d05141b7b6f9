// Unit-testing a JavaScript handler under Node (`node --test`), without the host: the
// `hookwasm:handler/host` import is served by host-stub.js, the config is handed over as the
// host does (`init` included), log lines are kept, and events are built in the shape the
// component receives them.
//
//   import { TestHost, events } from "./hookwasm-sdk/testing.js";
//   const host = new TestHost();
//   const gate = await host.load("./handler.js", { protected: ["main"] });
//   const outcome = gate.onEvent(events.refUpdate("git.branch.force-pushed"));
//   assert.equal(outcome.reason, "...");

import { register } from "node:module";
import { pathToFileURL } from "node:url";
import { resolve as resolvePath } from "node:path";

const stub = new URL("./host-stub.js", import.meta.url).href;
const hooks = `
let stub;
export function initialize(data) { stub = data.stub; }
export async function resolve(specifier, context, next) {
  if (specifier.startsWith("hookwasm:handler/host")) return { url: stub, shortCircuit: true };
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`, {
  parentURL: import.meta.url,
  data: { stub },
});

/** Stands in for the hookwasm host while a test runs. */
export class TestHost {
  constructor() {
    /** `{ level, message }` for every line logged since this host was made. */
    this.logs = [];
    this.configText = "null";
    globalThis.__hookwasmTestHost = this;
  }

  /**
   * Loads a handler module (a path, relative to the current folder) the way the host does:
   * the config (any JSON value, `null` for none) is handed over as text and `init` runs; a
   * refusal throws an Error with the handler's message. Returns `{ onEvent(event) }`, whose
   * result has `reason` (undefined when allowed), `denied`, `annotations` and `annotation(key)`.
   */
  async load(modulePath, config = null) {
    globalThis.__hookwasmTestHost = this;
    this.configText = JSON.stringify(config);
    const module = await import(pathToFileURL(resolvePath(modulePath)).href);
    const call = (f) => {
      try {
        return f();
      } catch (e) {
        throw e instanceof Error ? e : new Error(String(e));
      }
    };
    call(() => module.init(this.configText));
    return {
      onEvent: (event) => {
        globalThis.__hookwasmTestHost = this;
        const outcome = call(() => module.onEvent(event));
        const reason = outcome.verdict.tag === "deny" ? outcome.verdict.val : undefined;
        return {
          reason,
          denied: reason !== undefined,
          annotations: outcome.annotations,
          annotation: (key) => outcome.annotations.find(([k]) => k === key)?.[1],
        };
      },
    };
  }
}

const PHASES = ["started", "completed", "error", "permission-denied", "pending-review"];
const CHANGES = ["created", "updated", "force-pushed", "deleted"];
const KINDS = { branch: "branch", tag: "tag", ref: "other" };

const repository = () => ({
  url: "https://git.example.com/acme/widgets.git",
  project: "acme",
  name: "widgets",
});

/** The JavaScript values the component receives for WIT records (camelCase, `undefined` for none). */
function user(u) {
  return u ? { username: u.username, email: u.email ?? undefined } : undefined;
}

function repo(r) {
  return { url: r.url, project: r.project ?? "", name: r.name ?? "" };
}

/**
 * A CloudEvent (structured JSON, as a producer sends it) in the shape `onEvent` receives it:
 * the payload typed by the event's type as the host types it. Throws on types the host
 * refuses. (The host checks more; try the component with `hookwasm call` for that.)
 */
function fromJson(cloudEvent) {
  const type = cloudEvent.type;
  const data = cloudEvent.data ?? null;
  const json = JSON.stringify({ time: "2026-01-01T00:00:00Z", ...cloudEvent });
  const base = {
    id: cloudEvent.id,
    source: cloudEvent.source,
    type,
    time: cloudEvent.time ?? "2026-01-01T00:00:00Z",
    subject: cloudEvent.subject ?? undefined,
    json,
  };
  const [space, middle, last] = type.split(".");
  if ((space === "push" || space === "pull") && middle !== undefined) {
    if (!PHASES.includes(middle) || last !== undefined) throw new Error(`unknown event type "${type}"`);
    return {
      ...base,
      payload: {
        tag: "proxy-action",
        val: {
          operation: space,
          phase: middle,
          actionId: data.actionId,
          repository: repo(data.repository),
          user: user(data.user),
          branch: data.branch ?? undefined,
          commitFrom: data.commitFrom ?? undefined,
          commitTo: data.commitTo ?? undefined,
          error: data.error ?? undefined,
          steps: (data.steps ?? []).map((s) => ({
            name: s.name,
            passed: s.passed,
            message: s.message ?? undefined,
          })),
        },
      },
    };
  }
  if (type === "git.push.rejected") {
    return {
      ...base,
      payload: {
        tag: "push-rejected",
        val: {
          pushId: data.pushId,
          repository: repo(data.repository),
          pusher: user(data.pusher),
          refs: data.refs,
          reason: data.reason,
        },
      },
    };
  }
  if (space === "git") {
    const kind = KINDS[middle];
    const ok = kind && CHANGES.includes(last) && (last !== "force-pushed" || kind === "branch");
    if (!ok || type.split(".").length !== 3) throw new Error(`unknown event type "${type}"`);
    return {
      ...base,
      payload: {
        tag: "ref-update",
        val: {
          kind,
          change: last,
          pushId: data.pushId,
          repository: repo(data.repository),
          pusher: user(data.pusher),
          refName: data.ref,
          before: data.before,
          after: data.after,
          pushOptions: data.pushOptions ?? [],
        },
      },
    };
  }
  return { ...base, payload: { tag: "custom", val: JSON.stringify(data) } };
}

function cloudEvent(type, data, attributes) {
  return {
    specversion: "1.0",
    id: "evt-1",
    source: "test",
    type,
    time: "2026-01-01T00:00:00Z",
    ...attributes,
    data,
  };
}

/** Events for tests, one builder per payload kind; `data` overrides merge into the defaults. */
export const events = {
  fromJson,
  /** `git.branch.*`, `git.tag.*`, `git.ref.*`: a ref update of refs/heads/main by alice. */
  refUpdate(type, data = {}, attributes = {}) {
    return fromJson(
      cloudEvent(
        type,
        {
          pushId: "push-1",
          repository: repository(),
          pusher: { username: "alice", email: "alice@example.com" },
          ref: "refs/heads/main",
          before: "1".repeat(40),
          after: "2".repeat(40),
          ...data,
        },
        attributes,
      ),
    );
  },
  /** `push.*` and `pull.*`: a git proxy's action on refs/heads/main by alice. */
  proxyAction(type, data = {}, attributes = {}) {
    return fromJson(
      cloudEvent(
        type,
        {
          actionId: "action-1",
          repository: repository(),
          user: { username: "alice" },
          branch: "refs/heads/main",
          ...data,
        },
        attributes,
      ),
    );
  },
  /** `git.push.rejected`. */
  pushRejected(data = {}, attributes = {}) {
    return fromJson(
      cloudEvent(
        "git.push.rejected",
        {
          pushId: "push-1",
          repository: repository(),
          pusher: { username: "alice" },
          refs: ["refs/heads/main"],
          reason: "refused",
          ...data,
        },
        attributes,
      ),
    );
  },
  /** Any other type, carrying `data`. */
  custom(type, data, attributes = {}) {
    return fromJson(cloudEvent(type, data, attributes));
  },
};
