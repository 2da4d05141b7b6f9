'use strict';
// annotationsFor: what hookwasm's observers and gates said about a push, read back from
// hookwasm's event history (GET /v1/events?subject=…), across GitProxy's id change.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startHookwasm, freePort, chaos, captureLog, Registry, Action, waitFor, sleep } = require('./support');
const { createEventHandlerPlugin, createPushGatePlugin, annotationsFor } = require('..');

test('annotationsFor returns what observers and gates attached to an action, across the from__to id change', async (t) => {
  const hookwasm = await startHookwasm([
    chaos('summary', 'observe', { behavior: 'ok' }, ['push.*']),
    chaos('risk', 'gate', { behavior: 'ok' }, ['push.started']),
  ]);
  t.after(() => hookwasm.stop());
  const options = { url: hookwasm.url, env: {}, logger: captureLog() };
  const events = createEventHandlerPlugin(options);
  const gate = createPushGatePlugin(options);
  const registry = new Registry();
  events.register(registry);

  // As GitProxy runs a push: started (request id), setCommit, the chain (our gate), the end.
  const action = new Action(1764595000000, 'push', 'https://github.com/finos/git-proxy.git');
  action.user = 'alice';
  registry.dispatch(action, 'started');
  action.setCommit('1'.repeat(40), '2'.repeat(40));
  await gate.exec({}, action);
  assert.equal(action.continue(), true);
  registry.dispatch(action, 'pendingReview');
  assert.equal(await events.flush(20000), true);

  const pushId = action.id;
  const gateId = `${pushId}/push:gate/1764595000000`;
  const found = await waitFor('three annotations in the history', async () => {
    const list = await annotationsFor(pushId, options);
    return list.length >= 3 && list;
  });
  const seen = found.map((a) => [a.handler, a.mode, a.key, a.value, a.eventType, a.eventId]);
  assert.deepEqual(
    seen.sort(),
    [
      ['risk', 'gate', 'seen', gateId, 'push.started', gateId],
      ['summary', 'observe', 'seen', '1764595000000/push:started', 'push.started', '1764595000000/push:started'],
      ['summary', 'observe', 'seen', `${pushId}/push:pending-review`, 'push.pending-review', `${pushId}/push:pending-review`],
    ].sort(),
  );
  for (const a of found) {
    assert.equal(a.source, events.settings.source);
    assert.equal(typeof a.at, 'number');
  }
  assert.deepEqual(await annotationsFor('no-such-action', options), []);
  events.close();
});

test('annotationsFor says clearly when the history cannot be read', async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  await assert.rejects(annotationsFor('a__b', { url, env: {} }), /^Error: cannot read hookwasm's event history: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)$/);
  await assert.rejects(annotationsFor('', { url, env: {} }), /annotationsFor needs the action id/);
  await sleep(0);
});
