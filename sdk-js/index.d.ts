// Types for hookwasm's JavaScript SDK (index.js): the values a handler receives, as
// componentize-js gives them for the `hookwasm:handler/event-handler` world. TypeScript
// handlers import these types, compile to JavaScript with `tsc`, and build that with
// componentize-js.

export interface Repository { url: string; project: string; name: string }
export interface User { username: string; email?: string }
export interface Step { name: string; passed: boolean; message?: string }

export type Operation = "push" | "pull";
export type Phase = "started" | "completed" | "error" | "permission-denied" | "pending-review";
export type RefKind = "branch" | "tag" | "other";
export type RefChange = "created" | "updated" | "force-pushed" | "deleted";

/** `push.*` and `pull.*`: a git proxy's action at one phase. */
export interface ProxyAction {
  operation: Operation;
  phase: Phase;
  actionId: string;
  repository: Repository;
  user?: User;
  branch?: string;
  commitFrom?: string;
  commitTo?: string;
  error?: string;
  steps: Step[];
}

/** `git.branch.*`, `git.tag.*`, `git.ref.*`: one ref update of a push. */
export interface RefUpdate {
  kind: RefKind;
  change: RefChange;
  pushId: string;
  repository: Repository;
  pusher: User;
  refName: string;
  before: string;
  after: string;
  pushOptions: string[];
}

/** `git.push.rejected`. */
export interface PushRejected {
  pushId: string;
  repository: Repository;
  pusher: User;
  refs: string[];
  reason: string;
}

export type Payload =
  | { tag: "proxy-action"; val: ProxyAction }
  | { tag: "ref-update"; val: RefUpdate }
  | { tag: "push-rejected"; val: PushRejected }
  | { tag: "custom"; val: string };

/** One event, with its CloudEvents attributes; `json` is the whole CloudEvent as accepted. */
export interface Event {
  id: string;
  source: string;
  type: string;
  time: string;
  subject?: string;
  payload: Payload;
  json: string;
}

export declare class Outcome {
  static allow(): Outcome;
  static deny(reason: string): Outcome;
  readonly reason: string | undefined;
  readonly annotations: [string, string][];
  readonly denied: boolean;
  annotate(key: string, value: unknown): Outcome;
  annotation(key: string): string | undefined;
}

export interface Handler<C = any> {
  /** Turns the parsed config (`{}` when none) into what the methods get; throw to refuse it. */
  config?(raw: any): C;
  /** Checks the config once, at load; throw to refuse the load. */
  init?(config: C): void;
  /** Every event; without it, the method for the payload's kind is called. */
  onEvent?(event: Event, config: C): Outcome | void;
  onProxyAction?(event: Event, action: ProxyAction, config: C): Outcome | void;
  onRefUpdate?(event: Event, update: RefUpdate, config: C): Outcome | void;
  onPushRejected?(event: Event, rejected: PushRejected, config: C): Outcome | void;
  onCustom?(event: Event, data: unknown, config: C): Outcome | void;
}

/** What the module exports: `export const init = h.init; export const onEvent = h.onEvent;`. */
export interface Exports {
  init(config: string): void;
  onEvent(event: Event): { verdict: { tag: "allow" } | { tag: "deny"; val: string }; annotations: [string, string][] };
}

export declare function defineHandler<C = any>(handler: Handler<C>): Exports;
export declare function rawConfig(): string;
export declare function parseConfig(text: string): any;
export declare const log: {
  trace(message: unknown): void;
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
};
