'use strict';
// HTTP to hookwasm with Node's own fetch: one request, a deadline, a bounded answer, and a
// plain description of what went wrong for the log.

/** Largest answer read from hookwasm; anything longer is not one of its answers. */
const MAX_ANSWER_BYTES = 8 << 20;

/**
 * @typedef {object} Answer
 * @property {number} status  HTTP status, 0 when no answer came
 * @property {any} json       the parsed body, or undefined when it was not JSON
 * @property {string} text    the body as text (bounded)
 * @property {string|null} retryAfter the Retry-After header
 * @property {string|null} failure why no usable answer came (network, timeout, size), else null
 */

/**
 * Sends one request to hookwasm and never rejects: a failure is described in `failure`.
 * @param {{url: string, token?: string}} settings
 * @param {string} method
 * @param {string} path  path and query, e.g. `/v1/events?route=gates`
 * @param {string|undefined} body  JSON text to send
 * @param {number} timeoutMs  deadline for the whole exchange
 * @returns {Promise<Answer>}
 */
async function request(settings, method, path, body, timeoutMs) {
  const target = settings.url + path;
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (settings.token) headers.authorization = `Bearer ${settings.token}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const res = await fetch(target, { method, headers, body, signal: controller.signal });
    const text = await readBounded(res);
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, retryAfter: res.headers.get('retry-after'), failure: null };
  } catch (err) {
    let failure;
    if (controller.signal.aborted) failure = `no answer from ${settings.url} within ${timeoutMs} ms`;
    else if (err && err.tooLarge) failure = `the answer from ${settings.url} is over ${MAX_ANSWER_BYTES} bytes`;
    else failure = `cannot reach ${settings.url} (${networkCause(err)})`;
    return { status: 0, json: undefined, text: '', retryAfter: null, failure };
  } finally {
    clearTimeout(timer);
  }
}

async function readBounded(res) {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_ANSWER_BYTES) {
      await reader.cancel().catch(() => {});
      const err = new Error('answer too large');
      err.tooLarge = true;
      throw err;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function networkCause(err) {
  const cause = err && err.cause;
  if (cause && cause.code) return cause.code;
  if (cause && cause.message) return cause.message;
  return err && err.message ? err.message : String(err);
}

/** What hookwasm's `{"error": …}` says, or the start of the body. */
function answerError(answer) {
  if (answer.json && typeof answer.json.error === 'string') return answer.json.error;
  return answer.text ? answer.text.slice(0, 200) : '(empty body)';
}

/** Retry-After in milliseconds (seconds or an HTTP date), or undefined. */
function retryAfterMs(value) {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

module.exports = { request, answerError, retryAfterMs, MAX_ANSWER_BYTES };
