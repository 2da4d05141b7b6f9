// js-branch-guard: a gate written in JavaScript. It refuses force-pushes to, and deletions of,
// protected branches; every other event is allowed. The same logic as the Rust gate that
// `hookwasm new` writes, so BENCHMARKS.md can compare the two languages on equal work.
//
// Config: { "protected": ["main", "release"] } (branch names, default ["main"]).
// Built by `cargo xtask build-guests` into plugins/js-branch-guard.wasm with componentize-js.

import { defineHandler, Outcome, log } from "../../sdk-js/index.js";

const handler = defineHandler({
  config(raw) {
    const names = raw.protected ?? ["main"];
    if (!Array.isArray(names) || names.some((n) => typeof n !== "string")) {
      throw new Error("`protected` must be a list of branch names");
    }
    return { protected: names };
  },

  init(config) {
    if (config.protected.length === 0) {
      throw new Error("`protected` is empty: name at least one branch");
    }
  },

  onRefUpdate(event, update, config) {
    if (!update.refName.startsWith("refs/heads/")) return Outcome.allow();
    const branch = update.refName.slice("refs/heads/".length);
    const rewrites = update.change === "force-pushed" || update.change === "deleted";
    if (rewrites && config.protected.includes(branch)) {
      log.info(`refusing event ${event.id}: ${update.change} of ${branch}`);
      return Outcome.deny(`${update.change} of protected branch ${branch} is not allowed`).annotate(
        "branch",
        branch,
      );
    }
    return Outcome.allow();
  },
});

export const init = handler.init;
export const onEvent = handler.onEvent;
