'use strict';
// What hookwasm's handlers said about one of GitProxy's actions, read back from hookwasm's event
// history (`GET /v1/events?subject=…`), for GitProxy's UI to show beside the push.

const { createLogger } = require('./log');
const { resolveSettings } = require('./settings');
const { request, answerError } = require('./client');

/** Pages of history read per subject: ten events per action are sent, plus one per gate question. */
const PAGE = 100;
const MAX_PAGES = 10;

/** Whether `event` (a history entry) is one the bridge sent about `subject`. */
function sentByBridge(entry, subject) {
  return (
    entry &&
    typeof entry.id === 'string' &&
    entry.id.startsWith(`${subject}/`) &&
    typeof entry.type === 'string' &&
    (entry.type.startsWith('push.') || entry.type.startsWith('pull.'))
  );
}

async function listSubject(settings, subject) {
  const entries = [];
  let before = null;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    let query = `/v1/events?subject=${encodeURIComponent(subject)}&limit=${PAGE}`;
    if (before !== null && before !== undefined) query += `&before=${encodeURIComponent(before)}`;
    const answer = await request(settings, 'GET', query, undefined, settings.timeoutMs);
    if (answer.failure) throw new Error(`cannot read hookwasm's event history: ${answer.failure}`);
    if (answer.status !== 200 || !answer.json || !Array.isArray(answer.json.events)) {
      const hint = answer.status === 404 || answer.status === 405 ? ' (this hookwasm keeps no event history: update it)' : '';
      throw new Error(`hookwasm's event history answered HTTP ${answer.status}: ${answerError(answer)}${hint}`);
    }
    entries.push(...answer.json.events);
    before = answer.json.next;
    if (before === null || before === undefined) break;
  }
  return entries;
}

/**
 * The annotations hookwasm's handlers attached to the events of GitProxy's action `actionId`,
 * oldest first. Give the id GitProxy stores for the push (`from__to` once its commits are
 * known): the gate question carries the id of the request's `push.started` event
 * (`startedActionId`), whose events are read too.
 * @param {string} actionId
 * @param {object} [options] url, token, timeoutMs (else HOOKWASM_URL, HOOKWASM_TOKEN, …)
 * @returns {Promise<Array<{handler: string, mode: string, key: string, value: string, eventId: string, eventType: string, source: string, at: number}>>}
 * @throws {Error} with one clear sentence when hookwasm cannot be read
 */
async function annotationsFor(actionId, options) {
  if ((typeof actionId !== 'string' && typeof actionId !== 'number') || String(actionId) === '') {
    throw new TypeError('annotationsFor needs the action id GitProxy gave the push (a non-empty string)');
  }
  const settings = resolveSettings(options, options && options.env, createLogger(options && options.logger));
  const subjects = [String(actionId)];
  const seen = new Set();
  const annotations = [];
  for (let i = 0; i < subjects.length; i += 1) {
    const subject = subjects[i];
    for (const entry of await listSubject(settings, subject)) {
      if (!sentByBridge(entry, subject) || seen.has(`${entry.source}\u0000${entry.id}`)) continue;
      seen.add(`${entry.source}\u0000${entry.id}`);
      const data = entry.event && entry.event.data;
      const started = data && data.startedActionId;
      if (typeof started === 'string' && started !== '' && !subjects.includes(started)) subjects.push(started);
      for (const outcome of Array.isArray(entry.outcomes) ? entry.outcomes : []) {
        const pairs = outcome && outcome.annotations && typeof outcome.annotations === 'object' ? outcome.annotations : {};
        for (const [key, value] of Object.entries(pairs)) {
          annotations.push({
            handler: outcome.handler,
            mode: outcome.mode,
            key,
            value: String(value),
            eventId: entry.id,
            eventType: entry.type,
            source: entry.source,
            at: typeof outcome.at === 'number' ? outcome.at : entry.acceptedAt,
          });
        }
      }
    }
  }
  annotations.sort((a, b) => (a.at ?? 0) - (b.at ?? 0));
  return annotations;
}

module.exports = { annotationsFor };
