'use strict';
// hookwasm down, busy, or restarted under the event-handler plugin: what is within the bound
// arrives (in order), what is beyond it is counted and logged, a spool file outlives the proxy.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startHookwasm, startRecorder, freePort, chaos, captureLog, Registry, Action, sleep, waitFor } = require('./support');
const { createEventHandlerPlugin } = require('..');

const PHASES = ['started', 'completed', 'error', 'permissionDenied', 'pendingReview'];

/** Dispatches every phase of `count` pulls; returns the event ids in dispatch order. */
function dispatchPulls(registry, count, base) {
  const ids = [];
  for (let i = 0; i < count; i += 1) {
    const action = new Action(base + i, 'pull', 'https://github.com/finos/git-proxy.git');
    for (const phase of PHASES) {
      registry.dispatch(action, phase, phase === 'error' ? new Error('Chain error') : undefined);
      ids.push(`${action.id}/pull:${phase === 'permissionDenied' ? 'permission-denied' : phase === 'pendingReview' ? 'pending-review' : phase}`);
    }
  }
  return ids;
}

test('a hookwasm down for a while loses nothing within the bound; the overflow is counted and logged', async (t) => {
  const port = await freePort();
  const log = captureLog();
  const plugin = createEventHandlerPlugin({
    url: `http://127.0.0.1:${port}`, queueLimit: 20, retryMinMs: 100, retryMaxMs: 400, env: {}, logger: log,
  });
  const registry = new Registry();
  plugin.register(registry);

  const ids = dispatchPulls(registry, 5, 1764591000000); // 25 events, bound 20
  assert.deepEqual(
    { accepted: plugin.stats().accepted, dropped: plugin.stats().dropped, queued: plugin.stats().queued },
    { accepted: 20, dropped: 5, queued: 20 },
  );
  const full = log.text().filter((l) => l.includes('queue full'));
  assert.equal(full.length, 1, 'the first drop is logged at once');
  assert.match(full[0], /^\[hookwasm\] queue full \(20 events waiting for http:\/\/127\.0\.0\.1:\d+\): dropped 1 event\(s\), latest pull\.started 1764591000004\/pull:started; 1 dropped since start/);

  await waitFor('a few failed attempts', () => plugin.stats().failures >= 3);
  const failing = log.text().filter((l) => l.includes('cannot deliver'));
  assert.equal(failing.length, 1, `one line while it is down, not one per retry:\n${log.text().join('\n')}`);
  assert.match(failing[0], /cannot deliver to hookwasm: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); 20 event\(s\) queued \(bound 20\), retrying with backoff/);

  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([recorder.handler('recorder')], { port });
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  assert.equal(await plugin.flush(30000), true);
  const events = await recorder.waitFor(20);
  assert.deepEqual(events.map((e) => e.id), ids.slice(0, 20), 'everything within the bound arrived, in order');
  assert.equal(plugin.stats().delivered, 20);
  assert.ok(log.text().some((l) => /answers again after [\d.]+ s; delivering 20 queued event\(s\)/.test(l)), log.text().join('\n'));
  const later = log.text().filter((l) => l.includes('queue full'));
  assert.equal(later.length, 2, 'the drops after the first line are reported too');
  assert.match(later[1], /dropped 4 event\(s\), latest pull\.pending-review 1764591000004\/pull:pending-review; 5 dropped since start/);
  plugin.close();
});

test('a spool file keeps the queue across a proxy restart; a spooled event hookwasm refuses is dropped and logged', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const spool = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'hookwasm-spool-')), 'sub', 'events.ndjson');
  const first = createEventHandlerPlugin({ url, spool, retryMinMs: 100, retryMaxMs: 300, env: {}, logger: captureLog() });
  const registry = new Registry();
  first.register(registry);
  const ids = dispatchPulls(registry, 2, 1764592000000);
  await waitFor('10 lines in the spool', () => fs.existsSync(spool) && fs.readFileSync(spool, 'utf8').split('\n').filter(Boolean).length === 10);
  first.close(); // the proxy stops with hookwasm still down

  // What an older bridge or a damaged disk may leave: a line that is not JSON, an event hookwasm refuses.
  const refused = { specversion: '1.0', id: 'old/push:started', source: 'git-proxy://old', type: 'push.started', data: { steps: [] } };
  fs.appendFileSync(spool, `{not json\n${JSON.stringify(refused)}\n`);

  const log = captureLog();
  const second = createEventHandlerPlugin({ url, spool, retryMinMs: 100, retryMaxMs: 300, env: {}, logger: log });
  assert.equal(second.stats().queued, 11);
  assert.ok(log.text().some((l) => /skipped 1 unreadable line\(s\) in the spool file/.test(l)));
  assert.ok(log.text().some((l) => /11 event\(s\) from the spool file .* queued for/.test(l)));

  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([recorder.handler('recorder')], { port });
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  assert.equal(await second.flush(30000), true);
  const events = await recorder.waitFor(10);
  assert.deepEqual(events.map((e) => e.id), ids);
  assert.equal(second.stats().rejected, 1);
  assert.ok(
    log.text().some((l) => /^\[hookwasm\] hookwasm refused push\.started old\/push:started \(HTTP 400: .*missing field `actionId`\); dropped, it would be refused again$/.test(l)),
    log.text().join('\n'),
  );
  assert.equal(fs.readFileSync(spool, 'utf8'), '', 'the spool is emptied once everything is delivered');
  second.close();
});

test('a busy hookwasm (503, Retry-After) is waited for, and everything arrives', async (t) => {
  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([
    chaos('slow', 'observe', { behavior: 'sleep', ms: 300 }, ['pull.*'], { queueCapacity: 1, limits: { timeoutMs: 2000 } }),
    recorder.handler('recorder'),
  ]);
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  const log = captureLog();
  const plugin = createEventHandlerPlugin({ url: hookwasm.url, retryMinMs: 100, env: {}, logger: log });
  const registry = new Registry();
  plugin.register(registry);
  const started = Date.now();
  const ids = dispatchPulls(registry, 1, 1764593000000);
  assert.equal(await plugin.flush(30000), true);
  const elapsed = Date.now() - started;
  const events = await recorder.waitFor(5);
  assert.deepEqual(events.map((e) => e.id), ids, 'all five, in order');
  assert.ok(plugin.stats().failures >= 1, 'hookwasm said busy at least once');
  assert.ok(elapsed >= 1000, `Retry-After (1 s) was honoured: ${elapsed} ms`);
  assert.ok(log.text().some((l) => /cannot deliver to hookwasm: HTTP 503: /.test(l)), log.text().join('\n'));
  plugin.close();
});
