// Types for @hookwasm/git-proxy. The GitProxy shapes below are the parts of GitProxy's own types
// (EventDetails, IProxyEventRegistry, Action, Step) this package reads or writes, declared here
// so the package does not depend on GitProxy.

/** Settings shared by every entry point; each falls back to its environment variable, then the default. */
export interface HookwasmOptions {
  /** hookwasm's address. Env HOOKWASM_URL; default `http://127.0.0.1:8787`. */
  url?: string;
  /** Sent as `Authorization: Bearer <token>` when set. Env HOOKWASM_TOKEN. */
  token?: string;
  /** The CloudEvents `source` of every event. Env HOOKWASM_SOURCE; default `git-proxy://<hostname>`. */
  source?: string;
  /** Deadline of one request to hookwasm, in ms (observer delivery, history reads). Env HOOKWASM_TIMEOUT_MS; default 5000. */
  timeoutMs?: number;
  /** Where log lines go (each starts with `[hookwasm]`); default `console`. */
  logger?: Pick<Console, 'info' | 'warn' | 'error'>;
  /** Environment to read instead of `process.env`. */
  env?: Record<string, string | undefined>;
}

export interface EventHandlerOptions extends HookwasmOptions {
  /** Most events kept while hookwasm is unreachable; more are dropped, counted and logged. Env HOOKWASM_QUEUE_LIMIT; default 10000. */
  queueLimit?: number;
  /** A file mirroring the queue, read back at start so a proxy restart loses nothing. Env HOOKWASM_SPOOL; default none. */
  spool?: string;
  /** First retry delay in ms, doubled per failure. Env HOOKWASM_RETRY_MIN_MS; default 500. */
  retryMinMs?: number;
  /** Longest retry delay in ms. Env HOOKWASM_RETRY_MAX_MS; default 30000. */
  retryMaxMs?: number;
}

export interface PushGateOptions extends HookwasmOptions {
  /** What a push gets when hookwasm cannot answer: `closed` blocks it, `open` lets it through. Env HOOKWASM_FAILURE_POLICY; default `closed`. */
  failurePolicy?: 'closed' | 'open';
  /** How long a push waits for the gates' answer, in ms. Env HOOKWASM_GATE_TIMEOUT_MS; default 5000. */
  gateTimeoutMs?: number;
  /** The name of the step recorded on the Action. Default `hookwasm`. */
  stepName?: string;
}

// ---- GitProxy's shapes (as read from its source) ----

export type ProxyOperation = 'push' | 'pull';
export type ActionPhase = 'started' | 'completed' | 'pendingReview' | 'error' | 'permissionDenied';

export interface EventDetails {
  actionId: string;
  operation: ProxyOperation;
  phase: ActionPhase;
  timestamp: number;
  repository: { url: string; project: string; name: string };
  user?: { username?: string; email?: string };
  error?: Error;
}

export type ActionEventCallback = (details: EventDetails) => void | Promise<void>;

export interface IActionEventHandler {
  onStarted(handler: ActionEventCallback): IActionEventHandler;
  onCompleted(handler: ActionEventCallback): IActionEventHandler;
  onPendingReview(handler: ActionEventCallback): IActionEventHandler;
  onError(handler: ActionEventCallback): IActionEventHandler;
  onPermissionDenied(handler: ActionEventCallback): IActionEventHandler;
}

export interface IProxyEventRegistry {
  onPush(): IActionEventHandler;
  onPull(): IActionEventHandler;
}

/** The fields of GitProxy's Step this package writes. */
export interface StepData {
  id: string;
  stepName: string;
  content: unknown;
  error: boolean;
  errorMessage: string | null;
  blocked: boolean;
  blockedMessage: string | null;
  logs: string[];
}

/** The parts of GitProxy's Action the push gate reads, and `addStep`. */
export interface ActionLike {
  id: string;
  type?: string;
  timestamp?: number;
  url?: string;
  project?: string;
  repoName?: string;
  branch?: string;
  commitFrom?: string;
  commitTo?: string;
  commitData?: Array<{
    message?: string;
    author?: string;
    authorEmail?: string;
    committer?: string;
    committerEmail?: string;
    commitTimestamp?: string;
    tree?: string;
    parent?: string;
  }>;
  user?: string;
  userEmail?: string;
  steps?: Array<Partial<StepData>>;
  error?: boolean;
  errorMessage?: string | null;
  addStep?(step: StepData): void;
}

// ---- The plugins ----

export interface DeliveryStats {
  /** Events queued since start. */
  accepted: number;
  /** Events hookwasm took (202/200), duplicates included. */
  delivered: number;
  /** Of those, events hookwasm already had (a resend). */
  duplicates: number;
  /** Events dropped because the queue was full. */
  dropped: number;
  /** Events hookwasm refused as invalid (400/413): dropped, logged. */
  rejected: number;
  /** Failed delivery attempts (unreachable, timeout, 5xx, 503). */
  failures: number;
  /** Events waiting now. */
  queued: number;
  /** The queue's bound. */
  limit: number;
}

export declare class HookwasmEventHandlerPlugin {
  constructor(options?: EventHandlerOptions);
  readonly isGitProxyPlugin: true;
  readonly isGitProxyEventHandlerPlugin: true;
  /** Subscribes to all ten operation × phase pairs; never throws. */
  register: (registry: IProxyEventRegistry) => void;
  stats(): DeliveryStats;
  /** Resolves true once everything queued is delivered, false after `timeoutMs` (default 10000). */
  flush(timeoutMs?: number): Promise<boolean>;
  /** Stops delivering; a spool file keeps what is queued. */
  close(): void;
}

export declare class HookwasmPushGatePlugin {
  constructor(options?: PushGateOptions);
  readonly isGitProxyPlugin: true;
  readonly isGitProxyPushActionPlugin: true;
  /** Asks hookwasm's gates; records a step; blocks on deny. Never rejects; returns the Action. */
  exec: <A extends ActionLike>(req: unknown, action: A) => Promise<A>;
}

export declare function createEventHandlerPlugin(options?: EventHandlerOptions): HookwasmEventHandlerPlugin;
export declare function createPushGatePlugin(options?: PushGateOptions): HookwasmPushGatePlugin;

export interface Annotation {
  handler: string;
  mode: 'gate' | 'observe';
  key: string;
  value: string;
  eventId: string;
  eventType: string;
  source: string;
  /** When the handler ran, ms since the epoch. */
  at: number;
}

/**
 * The annotations hookwasm's handlers attached to the events of action `actionId`, oldest
 * first. Rejects with one clear sentence when hookwasm's history cannot be read.
 */
export declare function annotationsFor(actionId: string, options?: HookwasmOptions): Promise<Annotation[]>;

export declare const DEFAULTS: Readonly<{
  url: string;
  failurePolicy: 'closed' | 'open';
  gateTimeoutMs: number;
  timeoutMs: number;
  queueLimit: number;
  retryMinMs: number;
  retryMaxMs: number;
  stepName: string;
}>;
export declare const ENV: Readonly<Record<string, string>>;
