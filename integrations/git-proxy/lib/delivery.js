'use strict';
// Delivery of observer events to hookwasm: a bounded in-memory queue, optionally mirrored to a
// spool file, sent in order with retries and exponential backoff. Nothing here waits on the
// caller's path: `enqueue` returns at once and the sending runs on timers. An event is dropped
// only when the queue is full (counted, logged) or when hookwasm refuses it as invalid
// (400/413, counted, logged: it would be refused again).

const fs = require('node:fs');
const path = require('node:path');
const { request, answerError, retryAfterMs } = require('./client');

/** Events per request (hookwasm takes up to 1000, all or nothing). */
const BATCH = 100;
/** How often a spool file of a non-empty queue is rewritten to drop what was delivered. */
const COMPACT_MS = 5000;
/** At most one "queue full" line per this interval; the count says how many were dropped. */
const DROP_LOG_MS = 10000;

class Delivery {
  /**
   * @param {object} settings resolved settings (url, token, timeoutMs, queueLimit, retry*, spool)
   * @param {{info: Function, warn: Function, error: Function}} log
   */
  constructor(settings, log) {
    this.settings = settings;
    this.log = log;
    this.queue = [];
    this.counts = { accepted: 0, delivered: 0, duplicates: 0, dropped: 0, rejected: 0, failures: 0 };
    this.sending = false;
    this.timer = null;
    this.closed = false;
    this.attempts = 0;
    this.failingSince = 0;
    this.lastFailure = '';
    this.singles = 0;
    this.droppedUnlogged = 0;
    this.lastDropped = null;
    this.lastDropLog = 0;
    this.dropTimer = null;
    this.waiters = [];
    this.spoolChain = Promise.resolve();
    this.spoolFailed = false;
    this.lastCompact = 0;
    if (settings.spool) this.loadSpool();
  }

  /** Queues `event` for delivery; never throws, never waits. */
  enqueue(event) {
    if (this.closed) {
      this.counts.dropped += 1;
      this.log.error(`dropped ${event.type} ${event.id}: the plugin was closed (${this.counts.dropped} dropped since start)`);
      return;
    }
    if (this.queue.length >= this.settings.queueLimit) {
      this.dropped(event);
      return;
    }
    this.queue.push(event);
    this.counts.accepted += 1;
    if (this.settings.spool) this.spool((file) => fs.promises.appendFile(file, `${JSON.stringify(event)}\n`));
    this.kick(0);
  }

  /** Counters and the queue's length, for tests and operators. */
  stats() {
    return { ...this.counts, queued: this.queue.length, limit: this.settings.queueLimit };
  }

  /**
   * Resolves true once every queued event is delivered (or dropped) and the spool is written,
   * false if `timeoutMs` passes first.
   */
  flush(timeoutMs = 10000) {
    const done = new Promise((resolve) => {
      if (this.queue.length === 0 && !this.sending) resolve(true);
      else this.waiters.push(resolve);
    }).then((ok) => this.spoolChain.then(() => ok));
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    return Promise.race([done, timeout]).finally(() => clearTimeout(timer));
  }

  /** Stops sending; what is queued stays in the spool file, if any. */
  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.reportDrops();
  }

  dropped(event) {
    this.counts.dropped += 1;
    this.droppedUnlogged += 1;
    this.lastDropped = event;
    if (Date.now() - this.lastDropLog >= DROP_LOG_MS) this.reportDrops();
    else if (!this.dropTimer) {
      // Drops after a report are reported later, in one line, never left unsaid.
      this.dropTimer = setTimeout(() => this.reportDrops(), DROP_LOG_MS);
      this.dropTimer.unref();
    }
  }

  /** Logs the drops not yet reported, in one line. */
  reportDrops() {
    if (this.dropTimer) clearTimeout(this.dropTimer);
    this.dropTimer = null;
    if (this.droppedUnlogged === 0) return;
    const latest = this.lastDropped;
    this.log.error(
      `queue full (${this.settings.queueLimit} events waiting for ${this.settings.url}): dropped ${this.droppedUnlogged} event(s), ` +
        `latest ${latest.type} ${latest.id}; ${this.counts.dropped} dropped since start. Start hookwasm or raise HOOKWASM_QUEUE_LIMIT`,
    );
    this.lastDropLog = Date.now();
    this.droppedUnlogged = 0;
  }

  kick(delayMs) {
    if (this.closed || this.sending || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump().catch((err) => this.log.error(`delivery stopped by an internal error: ${err && err.message}; it restarts with the next event`));
    }, delayMs);
    this.timer.unref();
  }

  async pump() {
    if (this.sending || this.closed) return;
    this.sending = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const size = this.singles > 0 ? 1 : Math.min(BATCH, this.queue.length);
        const batch = this.queue.slice(0, size);
        const body = JSON.stringify(batch.length === 1 ? batch[0] : batch);
        const answer = await request(this.settings, 'POST', '/v1/events?route=observers', body, this.settings.timeoutMs);
        if (answer.failure === null && (answer.status === 200 || answer.status === 202) && answer.json !== undefined) {
          this.delivered(batch, answer.json);
          continue;
        }
        if (answer.status === 400 || answer.status === 413) {
          if (batch.length > 1) {
            // One bad event refuses the whole batch: find it by sending these one by one.
            this.singles = batch.length;
            continue;
          }
          this.refused(batch[0], answer);
          continue;
        }
        const wait = this.failed(answer);
        this.sending = false;
        this.kick(wait);
        return;
      }
    } finally {
      this.sending = false;
    }
    if (this.queue.length === 0) this.drained();
  }

  delivered(batch, json) {
    this.queue.splice(0, batch.length);
    if (this.singles > 0) this.singles -= 1;
    this.counts.delivered += batch.length;
    const results = Array.isArray(json.results) ? json.results : [json];
    this.counts.duplicates += results.filter((r) => r && r.duplicate === true).length;
    if (this.failingSince) {
      const seconds = ((Date.now() - this.failingSince) / 1000).toFixed(1);
      this.log.info(`hookwasm at ${this.settings.url} answers again after ${seconds} s; delivering ${this.queue.length + batch.length} queued event(s)`);
      this.reportDrops();
    }
    this.failingSince = 0;
    this.lastFailure = '';
    this.attempts = 0;
    this.compactSoon();
  }

  refused(event, answer) {
    this.queue.shift();
    if (this.singles > 0) this.singles -= 1;
    this.counts.rejected += 1;
    this.log.error(`hookwasm refused ${event.type} ${event.id} (HTTP ${answer.status}: ${answerError(answer)}); dropped, it would be refused again`);
  }

  /** Notes a failed attempt and returns how long to wait before the next one. */
  failed(answer) {
    this.counts.failures += 1;
    this.attempts += 1;
    let cause;
    if (answer.failure) cause = answer.failure;
    else if (answer.json === undefined) cause = `HTTP ${answer.status} with an answer that is not JSON (is ${this.settings.url} hookwasm?)`;
    else cause = `HTTP ${answer.status}: ${answerError(answer)}`;
    const backoff = Math.min(this.settings.retryMaxMs, this.settings.retryMinMs * 2 ** Math.min(this.attempts - 1, 20));
    const jittered = Math.round(backoff * (0.8 + Math.random() * 0.4));
    const asked = answer.status === 503 ? retryAfterMs(answer.retryAfter) : undefined;
    const wait = asked !== undefined ? Math.min(Math.max(asked, this.settings.retryMinMs), this.settings.retryMaxMs) : jittered;
    if (!this.failingSince) this.failingSince = Date.now();
    // One line when delivery starts failing or the cause changes, not one per retry.
    const kind = cause.replace(/\d+/g, '#');
    if (kind !== this.lastFailure) {
      this.log.warn(`cannot deliver to hookwasm: ${cause}; ${this.queue.length} event(s) queued (bound ${this.settings.queueLimit}), retrying with backoff`);
      this.lastFailure = kind;
    }
    return wait;
  }

  drained() {
    if (this.settings.spool) this.spool((file) => fs.promises.writeFile(file, ''), true);
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve(true);
  }

  compactSoon() {
    if (!this.settings.spool || this.queue.length === 0) return;
    const now = Date.now();
    if (now - this.lastCompact < COMPACT_MS) return;
    this.lastCompact = now;
    this.spool(async (file) => {
      const tmp = `${file}.tmp`;
      await fs.promises.writeFile(tmp, this.queue.map((e) => `${JSON.stringify(e)}\n`).join(''));
      await fs.promises.rename(tmp, file);
    });
  }

  /** Runs one spool operation after the ones before it; a failure is logged once. */
  spool(op) {
    const file = this.settings.spool;
    this.spoolChain = this.spoolChain
      .then(() => op(file))
      .then(
        () => {
          this.spoolFailed = false;
        },
        (err) => {
          if (!this.spoolFailed) {
            this.log.error(`cannot write the spool file ${file}: ${err.message}; events stay queued in memory only`);
          }
          this.spoolFailed = true;
        },
      );
  }

  /** Reads what a previous run left in the spool file (sync: it runs once, at start). */
  loadSpool() {
    const file = this.settings.spool;
    let content;
    try {
      content = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if (err.code !== 'ENOENT') this.log.error(`cannot read the spool file ${file}: ${err.message}; starting with an empty queue`);
      try {
        fs.mkdirSync(path.dirname(file), { recursive: true });
      } catch {
        // Reported by the first write.
      }
      return;
    }
    const seen = new Set();
    let bad = 0;
    for (const line of content.split('\n')) {
      if (line.trim() === '') continue;
      let event;
      try {
        event = JSON.parse(line);
      } catch {
        bad += 1;
        continue;
      }
      if (!event || typeof event.id !== 'string' || seen.has(event.id)) continue;
      seen.add(event.id);
      if (this.queue.length >= this.settings.queueLimit) this.dropped(event);
      else this.queue.push(event);
    }
    if (bad > 0) this.log.warn(`skipped ${bad} unreadable line(s) in the spool file ${file}`);
    if (this.queue.length > 0) {
      this.log.info(`${this.queue.length} event(s) from the spool file ${file} queued for ${this.settings.url}`);
      this.kick(0);
    }
  }
}

module.exports = { Delivery, BATCH };
