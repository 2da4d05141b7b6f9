'use strict';
// Nothing the event-handler plugin is given makes it throw into GitProxy: broken registries, bad
// details, a 10 MiB error, an answer that is not hookwasm's, a logger that throws.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startHookwasm, startRecorder, startFake, freePort, captureLog, Registry, Action, waitFor } = require('./support');
const { createEventHandlerPlugin } = require('..');
const { MAX_LINE } = require('../lib/log');

const builder = (log) => {
  const b = {};
  for (const m of ['onStarted', 'onCompleted', 'onPendingReview', 'onError', 'onPermissionDenied']) {
    b[m] = () => {
      log.push(m);
      return b;
    };
  }
  return b;
};

test('register never throws, whatever the registry, and says which subscriptions failed', async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  const log = captureLog();
  const plugin = createEventHandlerPlugin({ url, env: {}, logger: log });
  const subscribed = [];
  const broken = [
    null,
    undefined,
    42,
    {},
    { onPush: () => { throw new Error('registry closed'); }, onPull: () => builder(subscribed) },
    { onPush: () => ({}), onPull: () => undefined },
    { onPush: () => ({ onStarted() { throw 'not even an Error'; } }), onPull: () => builder(subscribed) },
    { onPush: () => Promise.reject(new Error('async registry')), onPull: () => builder(subscribed) },
  ];
  for (const registry of broken) {
    assert.doesNotThrow(() => assert.equal(plugin.register(registry), undefined));
  }
  assert.equal(subscribed.length, 15, 'every working builder got its five subscriptions');
  await new Promise((resolve) => setImmediate(resolve));
  const lines = log.text().filter((l) => l.includes('could not subscribe'));
  assert.equal(lines.length, broken.length, `one line per broken registry:\n${log.text().join('\n')}`);
  assert.ok(log.text().includes('[hookwasm] registry.onPush() rejected: async registry'), log.text().join('\n'));
  assert.match(lines[0], /^\[hookwasm\] could not subscribe to 2 of GitProxy's 10 events \(push: Cannot read properties of null/);
  assert.match(lines[4], /could not subscribe to 1 of GitProxy's 10 events \(push: registry closed\); those events will not reach hookwasm/);
  assert.match(lines[6], /push\.started: not even an Error; push\.completed: builder\[SUBSCRIBE\[phase\]\] is not a function/);
  // A registry whose every method works, after broken ones: all ten.
  const registry = new Registry();
  plugin.register(registry);
  assert.equal(registry.count(), 10);
  plugin.close();
});

test('bad details and a 10 MiB error: one bounded line or a bounded event, never an exception', async (t) => {
  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([recorder.handler('recorder')]);
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  const log = captureLog();
  const plugin = createEventHandlerPlugin({ url: hookwasm.url, env: {}, logger: log });
  const registry = new Registry();
  plugin.register(registry);
  const started = registry.handlers.get('push:started')[0];
  const failed = registry.handlers.get('push:error')[0];

  for (const details of [null, undefined, 'push', {}, { actionId: null }, { actionId: { id: 1 } }]) {
    assert.equal(started(details), undefined, `details ${JSON.stringify(details)}`);
  }
  assert.equal(log.text().length, 6);
  assert.match(log.text()[0], /^\[hookwasm\] ignored a push\.started event from GitProxy: push\.started details are null, not an object \(1 ignored so far\)$/);
  assert.match(log.text()[3], /ignored a push\.started event from GitProxy: push\.started details have no actionId \(4 ignored so far\)/);

  // Odd but usable details, and an error with a 10 MiB message: delivered, bounded.
  const huge = new Error('x'.repeat(10 << 20));
  assert.equal(failed({ actionId: 'a__b', repository: null, user: 'bob', error: huge, timestamp: 'yesterday' }), undefined);
  assert.equal(failed({ actionId: 77, operation: 'push', phase: 'error', repository: { url: 'u', project: null, name: '\ud800broken' }, error: 'a string error' }), undefined);
  assert.equal(await plugin.flush(20000), true);
  const events = await recorder.waitFor(2);
  assert.equal(plugin.stats().rejected, 0, 'hookwasm took both');
  assert.equal(events[0].id, 'a__b/push:error');
  assert.ok(events[0].data.error.length < 17 * 1024, `error of ${events[0].data.error.length} characters`);
  assert.match(events[0].data.error, /truncated by the hookwasm bridge: 10485760 characters in all/);
  assert.deepEqual(events[0].data.repository, { url: '', project: '', name: '' });
  assert.equal(events[1].id, '77/push:error');
  assert.equal(events[1].data.error, 'a string error');
  assert.equal(events[1].data.repository.name, '\ufffdbroken', 'a lone surrogate is replaced, not sent broken');
  for (const line of log.text()) assert.ok(line.length <= MAX_LINE + 100, `log line of ${line.length} characters`);
  plugin.close();
});

test('odd action ids and timestamps still make events hookwasm takes (no `.` in ids, no control characters in subjects)', async (t) => {
  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([recorder.handler('recorder')]);
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  const plugin = createEventHandlerPlugin({ url: hookwasm.url, env: {}, logger: captureLog() });
  const registry = new Registry();
  plugin.register(registry);
  const failed = registry.handlers.get('push:error')[0];
  // A dotted id, a line break and a noncharacter in it, and a timestamp in microseconds (a year
  // past 9999, which RFC 3339 cannot write).
  failed({ actionId: 'v1.2\nx\ufffe', repository: { url: 'u' }, timestamp: 1.7e15 });
  assert.equal(await plugin.flush(20000), true);
  const [event] = await recorder.waitFor(1);
  assert.equal(plugin.stats().rejected, 0, 'hookwasm took it');
  assert.equal(event.id, 'v1_2_x_/push:error');
  assert.equal(event.subject, 'v1.2\ufffdx\ufffd');
  assert.equal(event.data.actionId, 'v1.2\nx\ufffe', 'the data keeps the id as GitProxy gave it');
  assert.match(event.time, /^\d{4}-\d\d-\d\dT/);
  plugin.close();
});

test('an answer that is not hookwasm\'s keeps the events queued and says so; a throwing logger is harmless', async (t) => {
  let requests = 0;
  const seen = [];
  const fake = await startFake((req, res) => {
    requests += 1;
    seen.push({ url: req.url, method: req.method, type: req.headers['content-type'], auth: req.headers.authorization });
    req.resume();
    res.writeHead(202, { 'content-type': 'text/html' });
    res.end('<html>proxy login</html>');
  });
  t.after(() => fake.close());
  const log = captureLog();
  const plugin = createEventHandlerPlugin({ url: fake.url, retryMinMs: 50, retryMaxMs: 100, env: { HOOKWASM_TOKEN: 'sekrit' }, logger: log });
  const registry = new Registry();
  plugin.register(registry);
  registry.dispatch(new Action(1764594000000, 'push', 'https://github.com/finos/git-proxy.git'), 'started');
  await waitFor('three attempts', () => requests >= 3);
  assert.equal(plugin.stats().delivered, 0);
  assert.equal(plugin.stats().queued, 1, 'kept for a later attempt');
  assert.deepEqual(seen[0], { url: '/v1/events?route=observers', method: 'POST', type: 'application/json', auth: 'Bearer sekrit' });
  const lines = log.text().filter((l) => l.includes('not JSON'));
  assert.equal(lines.length, 1, log.text().join('\n'));
  assert.match(lines[0], /cannot deliver to hookwasm: HTTP 202 with an answer that is not JSON \(is http:\/\/127\.0\.0\.1:\d+ hookwasm\?\); 1 event\(s\) queued/);
  plugin.close();

  const angry = { info() { throw new Error('log full'); }, warn() { throw new Error('log full'); }, error() { throw new Error('log full'); } };
  const quiet = createEventHandlerPlugin({ url: fake.url, env: {}, logger: angry, queueLimit: 1 });
  const r = new Registry();
  assert.doesNotThrow(() => quiet.register(null));
  quiet.register(r);
  const action = new Action(1764594000001, 'pull', 'https://github.com/finos/git-proxy.git');
  assert.doesNotThrow(() => {
    r.dispatch(action, 'started');
    r.dispatch(action, 'completed'); // over the bound: a drop, logged to a logger that throws
    r.handlers.get('pull:started')[0](null);
  });
  assert.equal(quiet.stats().dropped, 1);
  assert.deepEqual(r.failures, []);
  quiet.close();

  // After close (GitProxy stopping) an event is not sent, and that is said, not silent.
  const closedLog = captureLog();
  const closed = createEventHandlerPlugin({ url: fake.url, env: {}, logger: closedLog });
  const r2 = new Registry();
  closed.register(r2);
  closed.close();
  r2.dispatch(action, 'started');
  assert.equal(closed.stats().dropped, 1);
  assert.deepEqual(closedLog.text(), ['[hookwasm] dropped pull.started 1764594000001/pull:started: the plugin was closed (1 dropped since start)']);
});
