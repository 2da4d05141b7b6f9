'use strict';
// The push-gate (chain) plugin against a real `hookwasm serve` with denying and allowing chaos
// gates, plus the cases hookwasm cannot answer: down, slow, not hookwasm at all.

const test = require('node:test');
const assert = require('node:assert/strict');
const {
  PACKAGE, startHookwasm, startRecorder, startFake, freePort, chaos, captureLog, loadLikeGitProxy,
  eventHandlerPluginsIn, pushActionPluginsIn, Action, pushAction,
} = require('./support');
const { createPushGatePlugin } = require('..');
const { MAX_LINE } = require('../lib/log');

const PUSH = ['push.started'];

test('a denying gate blocks the push with every reason, and the step lists each gate', async (t) => {
  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([
    chaos('no-friday', 'gate', { behavior: 'deny', reason: 'no pushes on Fridays' }, PUSH),
    chaos('seen', 'gate', { behavior: 'ok' }, PUSH),
    chaos('size-limit', 'gate', { behavior: 'deny', reason: 'commit too large' }, PUSH),
    recorder.handler('inspector', 'gate', PUSH),
  ]);
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  process.env.HOOKWASM_URL = hookwasm.url;
  process.env.HOOKWASM_SOURCE = 'git-proxy://gate-test';

  const mod = await loadLikeGitProxy('./push-gate.js', PACKAGE);
  const plugins = pushActionPluginsIn(mod);
  assert.equal(plugins.length, 1, 'GitProxy finds one push-action plugin in push-gate.js');
  assert.equal(eventHandlerPluginsIn(mod).length, 0);
  const exec = plugins[0].exec; // the chain calls it unbound

  const action = pushAction({ messages: ['first commit', 'second commit\n\nwith a body'] });
  const returned = await exec({ headers: {} }, action);
  assert.equal(returned, action, 'exec returns the Action');
  assert.equal(action.continue(), false, 'the push is stopped');
  assert.equal(action.error, true);
  assert.match(action.errorMessage, /no-friday: no pushes on Fridays/);
  assert.match(action.errorMessage, /size-limit: commit too large/);
  const step = action.steps.at(-1);
  assert.equal(step.stepName, 'hookwasm');
  assert.equal(step.error, true);
  assert.equal(step.errorMessage, action.errorMessage);
  assert.equal(typeof step.id, 'string');
  assert.equal(step.content.verdict, 'deny');
  assert.deepEqual(step.content.gates.map((g) => [g.handler, g.verdict]), [
    ['no-friday', 'deny'], ['seen', 'allow'], ['size-limit', 'deny'], ['inspector', 'allow'],
  ]);
  const eventId = `${action.id}/push:gate/${action.timestamp}`;
  assert.equal(step.content.eventId, eventId);
  assert.ok(step.logs.some((l) => l === `hookwasm - gate seen: allow, ok; annotations: seen=${eventId}`), step.logs.join('\n'));
  assert.ok(step.logs.some((l) => l.startsWith('hookwasm - gate no-friday: deny, ok (no pushes on Fridays)')), step.logs.join('\n'));

  // What the gates were asked: everything the Action holds.
  const [event] = await recorder.waitFor(1);
  assert.equal(event.type, 'push.started');
  assert.equal(event.id, eventId);
  assert.equal(event.source, 'git-proxy://gate-test');
  assert.equal(event.subject, action.id);
  assert.equal(event.data.actionId, action.id);
  assert.equal(event.data.startedActionId, String(action.timestamp));
  assert.equal(event.data.branch, 'refs/heads/main');
  assert.equal(event.data.commitFrom, 'a'.repeat(40));
  assert.equal(event.data.commitTo, 'b'.repeat(40));
  assert.deepEqual(event.data.user, { username: 'alice', email: 'alice@example.com' });
  assert.deepEqual(event.data.repository, { url: 'https://github.com/finos/git-proxy.git', project: 'finos', name: 'git-proxy' });
  assert.deepEqual(event.data.steps, [{ name: 'parsePackFile', passed: true }]);
  assert.deepEqual(event.data.commits[1], {
    message: 'second commit\n\nwith a body',
    author: 'Alice Author',
    authorEmail: 'alice@example.com',
    committer: 'Carl Committer',
    committerEmail: 'carl@example.com',
    timestamp: '1764590001',
  });

  // The same commits pushed again ask the gates again (a new request, a new event id).
  const again = pushAction({ messages: ['first commit', 'second commit\n\nwith a body'] });
  await exec({}, again);
  const events = await recorder.waitFor(2);
  assert.notEqual(events[1].id, events[0].id);
  assert.equal(again.continue(), false);
});

test('an allowing hookwasm lets the push on and still records its step; pulls are not asked', async (t) => {
  const recorder = await startRecorder();
  const hookwasm = await startHookwasm([chaos('seen', 'gate', { behavior: 'ok' }, PUSH), recorder.handler('inspector', 'gate', PUSH)]);
  t.after(() => Promise.all([hookwasm.stop(), recorder.close()]));
  const log = captureLog();
  const gate = createPushGatePlugin({ url: hookwasm.url, logger: log });

  const action = pushAction();
  await gate.exec({}, action);
  assert.equal(action.continue(), true);
  const step = action.steps.at(-1);
  assert.equal(step.stepName, 'hookwasm');
  assert.equal(step.error, false);
  assert.equal(step.content.verdict, 'allow');
  assert.equal(step.content.annotations.find((a) => a.handler === 'seen').key, 'seen');

  const pull = new Action(Date.now(), 'pull', 'https://github.com/finos/git-proxy.git');
  assert.equal(await gate.exec({}, pull), pull);
  assert.equal(pull.steps.length, 0, 'a pull is not a push: nothing asked, nothing recorded');
  assert.equal((await recorder.waitFor(1)).length, 1);

  // A 10 MiB commit message: cut to fit, logged in one bounded line, the push still decided.
  const big = pushAction({ messages: ['x'.repeat(10 << 20), 'small'] });
  await gate.exec({}, big);
  assert.equal(big.continue(), true, 'hookwasm answered: allowed');
  const [, event] = await recorder.waitFor(2);
  const message = event.data.commits[0].message;
  assert.ok(message.length < 70 * 1024, `message sent is ${message.length} characters`);
  assert.match(message, /truncated by the hookwasm bridge: 10485760 characters in all/);
  assert.equal(event.data.commits[1].message, 'small');
  assert.ok(log.text().some((l) => /1 commit message\(s\) shortened/.test(l)), log.text().join('\n'));
  for (const line of log.text()) assert.ok(line.length <= MAX_LINE + 100, `log line of ${line.length} characters`);

  // 1,200 commits with long author names: the first ones are sent, the rest counted.
  const many = pushAction({ messages: Array.from({ length: 1200 }, (_, i) => `commit ${i}`) });
  for (const c of many.commitData) c.author = 'A'.repeat(5000);
  await gate.exec({}, many);
  assert.equal(many.continue(), true);
  const [, , third] = await recorder.waitFor(3);
  assert.equal(third.data.commits[0].message, 'commit 0');
  assert.equal(third.data.commits.length + third.data.commitsOmitted, 1200);
  assert.ok(third.data.commits.length > 100, `${third.data.commits.length} commits sent`);
  assert.ok(log.text().some((l) => new RegExp(`0 commit message\\(s\\) shortened and ${third.data.commitsOmitted} commit\\(s\\) left out`).test(l)), log.text().join('\n'));
});

test('an unreachable hookwasm blocks under the closed policy and lets through under open', async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  for (const [options, blocked] of [
    [{}, true], // closed is the default
    [{ failurePolicy: 'closed' }, true],
    [{ failurePolicy: 'open' }, false],
    [{ env: { HOOKWASM_FAILURE_POLICY: 'open' } }, false],
    [{ env: { HOOKWASM_FAILURE_POLICY: 'opne' } }, true], // a typo falls back to closed, with a line
  ]) {
    const log = captureLog();
    const gate = createPushGatePlugin({ env: {}, ...options, url, logger: log });
    const action = pushAction();
    const returned = await gate.exec({}, action);
    assert.equal(returned, action);
    const what = JSON.stringify(options);
    assert.equal(action.continue(), !blocked, what);
    const step = action.steps.at(-1);
    assert.equal(step.stepName, 'hookwasm');
    assert.match(step.logs[0], /could not be asked: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    if (blocked) {
      assert.match(action.errorMessage, /policy check could not run: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)\. The failure policy is closed/, what);
    } else {
      assert.match(step.logs[0], /failure policy open lets the push through unchecked/);
      assert.equal(step.content.failurePolicy, 'open');
    }
    assert.ok(log.text().some((l) => l.startsWith('[hookwasm] push ') && /ECONNREFUSED/.test(l)), log.text().join('\n'));
    if (options.env && options.env.HOOKWASM_FAILURE_POLICY === 'opne') {
      assert.ok(log.text().some((l) => /HOOKWASM_FAILURE_POLICY is "opne"; it must be "closed" or "open"; using "closed"/.test(l)));
    }
  }
});

test('a hookwasm that never answers hits the gate timeout; an answer that is not JSON is a failure', async (t) => {
  const silent = await startFake(() => {}); // accepts the request, never answers
  const html = await startFake((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<html>a login page</html>');
  });
  t.after(() => Promise.all([silent.close(), html.close()]));

  const log = captureLog();
  const slow = createPushGatePlugin({ url: silent.url, gateTimeoutMs: 300, env: {}, logger: log });
  const action = pushAction();
  const started = Date.now();
  await slow.exec({}, action);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 290 && elapsed < 3000, `waited ${elapsed} ms`);
  assert.equal(action.continue(), false);
  assert.match(action.errorMessage, /no answer from http:\/\/127\.0\.0\.1:\d+ within 300 ms/);

  const open = createPushGatePlugin({ url: html.url, failurePolicy: 'open', env: {}, logger: log });
  const other = pushAction();
  await open.exec({}, other);
  assert.equal(other.continue(), true);
  assert.match(other.steps.at(-1).logs[0], /HTTP 200 with an answer that is not JSON/);
  assert.ok(log.text().some((l) => /\(HTTP 200 with an answer that is not JSON\); failure policy open lets it through/.test(l)), log.text().join('\n'));
});

test('a malformed Action never throws into the chain: a clear line, and the policy applies', async (t) => {
  const hookwasm = await startHookwasm([chaos('seen', 'gate', { behavior: 'ok' }, PUSH)]);
  t.after(() => hookwasm.stop());
  const log = captureLog();
  const gate = createPushGatePlugin({ url: hookwasm.url, env: {}, logger: log });

  assert.equal(await gate.exec({}, null), null);
  assert.equal(await gate.exec({}, undefined), undefined);
  assert.ok(log.text().some((l) => l === '[hookwasm] push gate called with null instead of an Action; nothing to check'));

  // No fields, no addStep: hookwasm is still asked, the step is added by hand.
  const bare = {};
  assert.equal(await gate.exec({}, bare), bare);
  assert.equal(bare.steps.length, 1);
  assert.equal(bare.steps[0].content.verdict, 'allow');

  // Fields of the wrong kinds.
  const odd = { id: { not: 'a string' }, type: 'push', commitData: 'garbage', steps: 7, user: {}, url: 42, addStep(s) { (this.s ||= []).push(s); } };
  await gate.exec({}, odd);
  assert.equal(odd.s[0].content.verdict, 'allow');

  // An Action whose fields throw: the bridge fails, closed policy blocks, one line says why.
  const hostile = { type: 'push', id: 'x__y', get commitData() { throw new Error('boom'); }, steps: [] };
  await gate.exec({}, hostile);
  assert.equal(hostile.error, true);
  assert.match(hostile.errorMessage, /the bridge failed: boom/);
  assert.ok(log.text().some((l) => /push \(no id\): the bridge failed: boom; failure policy closed applies/.test(l)), log.text().join('\n'));

  // addStep itself throws, or the Action is frozen: logged, not thrown.
  const throwing = pushAction();
  throwing.addStep = () => { throw new Error('database down'); };
  await gate.exec({}, throwing);
  assert.ok(log.text().some((l) => l === '[hookwasm] cannot record the hookwasm step on the Action: database down'));
  const frozen = Object.freeze(pushAction());
  await assert.doesNotReject(gate.exec({}, frozen));
});
