'use strict';
// The event-handler plugin, loaded as GitProxy loads it, against a real `hookwasm serve` whose
// observer (the chaos guest's `http` behavior) posts every event it gets to a loopback recorder.

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const {
  PACKAGE, BIN, CHAOS, CACHE, startHookwasm, startRecorder, loadLikeGitProxy, eventHandlerPluginsIn,
  pushActionPluginsIn, Registry, Action, sleep,
} = require('./support');

const TYPES = [
  'push.started', 'push.completed', 'push.error', 'push.permission-denied', 'push.pending-review',
  'pull.started', 'pull.completed', 'pull.error', 'pull.permission-denied', 'pull.pending-review',
];

test('all ten of GitProxy events reach hookwasm typed, with their details, without delaying the caller', async (t) => {
  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([recorder.handler('recorder')]);
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  process.env.HOOKWASM_URL = hookwasm.url;
  process.env.HOOKWASM_SOURCE = 'git-proxy://proxy-under-test';

  const mod = await loadLikeGitProxy('./event-handler.js', PACKAGE);
  const plugins = eventHandlerPluginsIn(mod);
  assert.equal(plugins.length, 1, 'GitProxy finds one event-handler plugin in event-handler.js');
  assert.equal(pushActionPluginsIn(mod).length, 0, 'and no chain plugin');
  const plugin = plugins[0];
  const registry = new Registry();
  assert.equal(plugin.register(registry), undefined);
  assert.equal(registry.count(), 10, 'subscribed to every operation × phase');

  // A push: `started` fires with the request's id, parsePush's setCommit then moves the id to
  // from__to, and the terminal phases carry that one.
  const push = new Action(1764590000001, 'push', 'https://github.com/finos/git-proxy.git');
  push.user = 'alice';
  push.userEmail = 'alice@example.com';
  const pull = new Action(1764590000002, 'pull', 'https://github.com/finos/git-proxy.git');
  const started = Date.now();
  registry.dispatch(push, 'started');
  push.setCommit('a'.repeat(40), 'b'.repeat(40));
  registry.dispatch(push, 'completed');
  registry.dispatch(push, 'error', new Error('checkAuthorEmails: alice@evil.test is not allowed'));
  registry.dispatch(push, 'permissionDenied');
  registry.dispatch(push, 'pendingReview');
  for (const phase of ['started', 'completed', 'error', 'permissionDenied', 'pendingReview']) {
    registry.dispatch(pull, phase, phase === 'error' ? new Error('Chain error') : undefined);
  }
  const elapsed = Date.now() - started;
  assert.equal(plugin.stats().accepted, 10);
  assert.equal(plugin.stats().delivered, 0, 'dispatch returned before anything was sent');
  assert.ok(elapsed < 200, `ten dispatches took ${elapsed} ms`);

  assert.equal(await plugin.flush(20000), true, 'everything delivered');
  const events = await recorder.waitFor(10);
  assert.deepEqual(events.map((e) => e.type).sort(), [...TYPES].sort());
  const byType = Object.fromEntries(events.map((e) => [e.type, e]));
  for (const type of TYPES) {
    const e = byType[type];
    const expectedId = type === 'push.started' ? '1764590000001' : type.startsWith('push.') ? `${'a'.repeat(40)}__${'b'.repeat(40)}` : '1764590000002';
    assert.equal(e.specversion, '1.0');
    assert.equal(e.source, 'git-proxy://proxy-under-test');
    assert.equal(e.subject, expectedId, `${type} subject`);
    assert.equal(e.id, `${expectedId}/${type.replace('.', ':')}`, `${type} id`);
    assert.equal(e.data.actionId, expectedId);
    assert.deepEqual(e.data.repository, { url: 'https://github.com/finos/git-proxy.git', project: 'finos', name: 'git-proxy' });
    assert.ok(!Number.isNaN(Date.parse(e.time)), `${type} time ${e.time}`);
    if (type.startsWith('push.')) assert.deepEqual(e.data.user, { username: 'alice', email: 'alice@example.com' });
    else assert.equal(e.data.user, undefined, 'a pull without a user has none');
  }
  assert.equal(byType['push.error'].data.error, 'checkAuthorEmails: alice@evil.test is not allowed');
  assert.equal(byType['pull.error'].data.error, 'Chain error');
  assert.equal(byType['push.completed'].data.error, undefined);

  // hookwasm typed them: a handler sees a proxy-action payload (the chaos guest's `echo`).
  const file = path.join(hookwasm.dir, 'pending-review.json');
  fs.writeFileSync(file, JSON.stringify(byType['push.pending-review']));
  const out = execFileSync(BIN, ['call', CHAOS, '--event', file, '--handler-config', '{"behavior":"echo"}'], {
    env: { ...process.env, HOOKWASM_CACHE_DIR: CACHE },
  });
  const report = JSON.parse(out.toString());
  assert.equal(report.annotations.payload, 'proxy-action');
  assert.equal(report.annotations.type, 'push.pending-review');

  // The same action in the same phase again is the same event: hookwasm calls it a duplicate.
  registry.dispatch(pull, 'completed');
  assert.equal(await plugin.flush(10000), true);
  assert.equal(plugin.stats().duplicates, 1);
  await sleep(300);
  assert.equal(recorder.events.length, 10, 'the observer did not get the resend');
  assert.deepEqual(registry.failures, [], 'nothing was thrown into GitProxy');
  plugin.close();
});
