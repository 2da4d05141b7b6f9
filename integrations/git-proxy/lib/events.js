'use strict';
// GitProxy's events and Actions as the CloudEvents hookwasm types (`push.started` …
// `pull.permission-denied`, payload per `hookwasm events`). Everything taken from GitProxy is
// coerced and bounded here, so a malformed Action or a 10 MiB commit message yields a valid
// event under hookwasm's 4 MiB request limit instead of an exception or a refused request.

const OPERATIONS = ['push', 'pull'];

/** GitProxy's phase name → the suffix of hookwasm's event type. */
const PHASES = Object.freeze({
  started: 'started',
  completed: 'completed',
  error: 'error',
  permissionDenied: 'permission-denied',
  pendingReview: 'pending-review',
});

/** The registry builder's method for each phase. */
const SUBSCRIBE = Object.freeze({
  started: 'onStarted',
  completed: 'onCompleted',
  error: 'onError',
  permissionDenied: 'onPermissionDenied',
  pendingReview: 'onPendingReview',
});

const LIMITS = Object.freeze({
  /** A short field: a name, an e-mail, a URL, a step name. */
  field: 2048,
  /** An error or a step's message. */
  text: 16 * 1024,
  /** One commit message. */
  message: 64 * 1024,
  /** All commit messages together: with the rest, well under hookwasm's 4 MiB body limit. */
  messages: 2 * 1024 * 1024,
  commits: 1000,
  steps: 100,
  /**
   * The whole event, in UTF-8 bytes: under the largest event hookwasm lets a handler with default
   * limits take (`limits.fuel` / 128 bytes: 390,625 at the default 50 M fuel), so a big push is
   * trimmed here rather than refused there with a 413.
   */
  eventBytes: 360 * 1024,
});

/**
 * `value` as a string of at most `max` characters; a longer one keeps its start and says how
 * long it was. Returns undefined for null/undefined.
 */
function bounded(value, max) {
  if (value === undefined || value === null) return undefined;
  // A lone UTF-16 surrogate (a name with broken encoding) would make the JSON unreadable to
  // hookwasm: replace it rather than lose the event.
  const s = (typeof value === 'string' ? value : String(value)).toWellFormed();
  if (s.length <= max) return s;
  return `${s.slice(0, max)}… [truncated by the hookwasm bridge: ${s.length} characters in all]`;
}

function text(value, max = LIMITS.field) {
  return bounded(value, max) ?? '';
}

function isObject(value) {
  return value !== null && typeof value === 'object';
}

/** The event type for GitProxy's operation and phase, or undefined when either is unknown. */
function eventType(operation, phase) {
  if (!OPERATIONS.includes(operation) || !Object.hasOwn(PHASES, phase)) return undefined;
  return `${operation}.${PHASES[phase]}`;
}

/**
 * The id of the observer event for `actionId` in `type`: the same action in the same phase
 * always gets the same id, so a resend (retry, spool replay) is a duplicate to hookwasm.
 * GitProxy's `setCommit` moves the action id from the request's timestamp to `from__to`; the
 * id uses whatever id GitProxy gave that phase, which is also the event's subject.
 */
function observerEventId(actionId, type) {
  return `${idPart(actionId)}/${type.replace('.', ':')}`;
}

/**
 * `value` as a part of an event id: hookwasm takes ids of printable ASCII without spaces or `.`
 * (what every delivery path can carry; Standard Webhooks forbids `.` in its ids), so anything
 * else becomes `_`, and it stays short.
 */
function idPart(value) {
  return String(value).replace(/[^\x21-\x2d\x2f-\x7e]/g, '_').slice(0, 100) || 'unknown';
}

/**
 * `value` as a CloudEvents string attribute (the subject): control characters and Unicode
 * noncharacters, which hookwasm refuses as the CloudEvents spec says, become U+FFFD.
 */
function attributeText(value) {
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u001f\u007f-\u009f\ufdd0-\ufdef\ufffe\uffff]|[\ud83f\ud87f\ud8bf\ud8ff\ud93f\ud97f\ud9bf\ud9ff\uda3f\uda7f\udabf\udaff\udb3f\udb7f\udbbf\udbff][\udffe\udfff]/g, '\ufffd');
}

function repositoryOf(url, project, name) {
  return { url: text(url), project: text(project), name: text(name) };
}

function userOf(username, email) {
  if ((username === undefined || username === null) && (email === undefined || email === null)) {
    return undefined;
  }
  const user = { username: text(username) };
  if (email !== undefined && email !== null) user.email = text(email);
  return user;
}

/** The latest instant RFC 3339 can write (9999-12-31T23:59:59.999Z), in ms. */
const LAST_RFC3339_MS = 253402300799999;

function timeOf(ms) {
  const t = Number(ms);
  // A timestamp past year 9999 (microseconds taken for milliseconds) would be written with an
  // expanded year, which is not RFC 3339: the time of sending stands in for it.
  const date = Number.isFinite(t) && t > 0 && t <= LAST_RFC3339_MS ? new Date(t) : new Date();
  return date.toISOString();
}

function errorText(error) {
  if (error === undefined || error === null) return undefined;
  if (error instanceof Error) return bounded(error.message || error.name, LIMITS.text);
  if (isObject(error) && typeof error.message === 'string') return bounded(error.message, LIMITS.text);
  return bounded(error, LIMITS.text);
}

/**
 * The CloudEvent for one of GitProxy's event-handler callbacks.
 * @param {object} details GitProxy's EventDetails (the callback's argument)
 * @param {string} operation the operation subscribed to (`push`/`pull`), used when details lack it
 * @param {string} phase the phase subscribed to, used when details lack it
 * @param {string} source the CloudEvents source
 * @throws {Error} with a one-line reason when the details carry no action id
 */
function eventFromDetails(details, operation, phase, source) {
  if (!isObject(details)) throw new Error(`${operation}.${phase} details are ${details === null ? 'null' : typeof details}, not an object`);
  const op = OPERATIONS.includes(details.operation) ? details.operation : operation;
  const ph = Object.hasOwn(PHASES, details.phase) ? details.phase : phase;
  const type = eventType(op, ph);
  const actionId = details.actionId;
  if (typeof actionId !== 'string' && typeof actionId !== 'number') {
    throw new Error(`${type} details have no actionId`);
  }
  const id = bounded(String(actionId), LIMITS.field);
  const repo = isObject(details.repository) ? details.repository : {};
  const user = isObject(details.user) ? userOf(details.user.username, details.user.email) : undefined;
  const data = { actionId: id, repository: repositoryOf(repo.url, repo.project, repo.name), steps: [] };
  if (user) data.user = user;
  const error = errorText(details.error);
  if (error !== undefined) data.error = error;
  return {
    specversion: '1.0',
    id: observerEventId(id, type),
    source,
    type,
    subject: attributeText(id),
    time: timeOf(details.timestamp),
    datacontenttype: 'application/json',
    data,
  };
}

/** GitProxy's steps as hookwasm's `{name, passed, message}`. */
function stepsOf(steps) {
  if (!Array.isArray(steps)) return [];
  return steps.slice(0, LIMITS.steps).filter(isObject).map((step) => {
    const out = { name: text(step.stepName ?? step.name ?? 'unnamed'), passed: !step.error && !step.blocked };
    const message = step.error ? step.errorMessage : step.blocked ? step.blockedMessage : undefined;
    if (message !== undefined && message !== null) out.message = bounded(message, LIMITS.field);
    return out;
  });
}

/**
 * GitProxy's commitData as `{id?, message, author, authorEmail, committer, committerEmail,
 * timestamp}`; long messages are cut, and commits past the bounds are left out and counted.
 */
function commitsOf(commitData) {
  const commits = [];
  let omitted = 0;
  let truncated = 0;
  let budget = LIMITS.messages;
  const list = Array.isArray(commitData) ? commitData : [];
  for (const commit of list) {
    if (!isObject(commit) || commits.length >= LIMITS.commits || budget <= 0) {
      omitted += 1;
      continue;
    }
    const raw = commit.message === undefined || commit.message === null ? '' : String(commit.message);
    const message = bounded(raw, Math.min(LIMITS.message, budget));
    if (message.length < raw.length) truncated += 1;
    budget -= message.length;
    const out = { message };
    for (const key of ['author', 'authorEmail', 'committer', 'committerEmail']) {
      if (commit[key] !== undefined && commit[key] !== null) out[key] = text(commit[key]);
    }
    const id = commit.id ?? commit.sha ?? commit.hash;
    if (id !== undefined && id !== null) out.id = text(id);
    if (commit.commitTimestamp !== undefined && commit.commitTimestamp !== null) {
      out.timestamp = text(commit.commitTimestamp);
    }
    commits.push(out);
  }
  return { commits, omitted, truncated };
}

/**
 * The gate question for a push: a `push.started` event built from everything the Action holds.
 *
 * Its id is `<action id>/push:gate/<request timestamp>`: distinct from the observer's
 * `<id>/push:started` (hookwasm keeps both in its history, by source and id, and neither makes
 * the other a duplicate), and distinct for each request, so pushing the same commits again asks
 * the gates again. `startedActionId` carries the id GitProxy gave the request's `push.started`
 * event (its timestamp, before `setCommit`), so the two can be joined.
 * @returns {{event: object, body: string, omitted: number, truncated: number}}
 */
function gateEventFromAction(action, source) {
  const actionId = text(action.id ?? action.timestamp ?? 'unknown');
  const started = action.timestamp !== undefined && action.timestamp !== null ? text(action.timestamp) : undefined;
  const shaped = commitsOf(action.commitData);
  const { commits, truncated } = shaped;
  let { omitted } = shaped;
  const data = {
    actionId,
    repository: repositoryOf(action.url, action.project, action.repoName),
    steps: stepsOf(action.steps),
    commits,
  };
  const user = userOf(action.user, action.userEmail);
  if (user) data.user = user;
  for (const key of ['branch', 'commitFrom', 'commitTo']) {
    if (action[key] !== undefined && action[key] !== null) data[key] = text(action[key]);
  }
  if (started !== undefined) data.startedActionId = started;
  const event = {
    specversion: '1.0',
    id: `${idPart(actionId)}/push:gate/${idPart(started ?? Date.now())}`,
    source,
    type: 'push.started',
    subject: attributeText(actionId),
    time: timeOf(action.timestamp),
    datacontenttype: 'application/json',
    data,
  };
  if (omitted > 0) data.commitsOmitted = omitted;
  // Many long author names or multi-byte messages can still be too big: leave out commits from
  // the end, a quarter at a time, until the event fits.
  let body = JSON.stringify(event);
  while (Buffer.byteLength(body) > LIMITS.eventBytes && data.commits.length > 0) {
    const drop = Math.max(1, Math.ceil(data.commits.length / 4));
    data.commits.splice(-drop);
    omitted += drop;
    data.commitsOmitted = omitted;
    body = JSON.stringify(event);
  }
  return { event, body, omitted, truncated };
}

module.exports = {
  OPERATIONS,
  PHASES,
  SUBSCRIBE,
  LIMITS,
  bounded,
  eventType,
  observerEventId,
  eventFromDetails,
  gateEventFromAction,
  stepsOf,
  commitsOf,
};
