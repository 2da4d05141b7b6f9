// A gate in TypeScript: `tsc` checks it against index.d.ts (`cargo xtask test` runs
// `tsc -p sdk-js`). To build one, compile it to JavaScript with `tsc` and give the .js file to
// componentize-js.
import { defineHandler, Outcome, log } from "../index.js";
import type { Event, RefChange, RefUpdate } from "../index.js";

interface Config {
  protected: string[];
}

const handler = defineHandler<Config>({
  config: (raw) => ({ protected: raw.protected ?? ["main"] }),
  init(config) {
    if (config.protected.length === 0) throw new Error("`protected` is empty");
  },
  onRefUpdate(event: Event, update: RefUpdate, config: Config) {
    const branch = update.refName.replace(/^refs\/heads\//, "");
    const rewrites: RefChange[] = ["force-pushed", "deleted"];
    if (rewrites.includes(update.change) && config.protected.includes(branch)) {
      log.info(`refusing ${event.id}`);
      return Outcome.deny(`${update.change} of ${branch} is not allowed`).annotate("branch", branch);
    }
    return Outcome.allow();
  },
  onCustom(event, data) {
    return event.payload.tag === "custom" && data !== null ? Outcome.allow() : undefined;
  },
});

export const init = handler.init;
export const onEvent = handler.onEvent;

// What the types catch.
// @ts-expect-error: a ref change is one of four, never "renamed"
export const typo: RefChange = "renamed";
// @ts-expect-error: a ref update's name is `refName`, as componentize-js gives it
export const wrongField = (update: RefUpdate) => update.ref_name;
