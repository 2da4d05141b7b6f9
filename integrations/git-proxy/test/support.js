'use strict';
// Test harness: a real `hookwasm serve` on 127.0.0.1 with real .wasm handlers, a loopback
// receiver that records what a handler posts, GitProxy's loader as GitProxy runs it
// (load-plugin), and small doubles of GitProxy's registry, dispatcher and Action written from
// GitProxy's source (PR #1519: src/eventHandlers/{registry,dispatcher}.ts,
// src/proxy/actions/Action.ts, src/plugin.ts).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const PACKAGE = path.resolve(__dirname, '..');
const REPO = path.resolve(PACKAGE, '..', '..');
const BIN = process.env.HOOKWASM_BIN ? path.resolve(process.env.HOOKWASM_BIN) : path.join(REPO, 'target', 'debug', 'hookwasm');
const CHAOS = path.join(REPO, 'tests', 'guests', 'chaos.wasm');
/** One compile cache for every hookwasm a test run starts (debug builds compile slowly). */
const CACHE = fs.mkdtempSync(path.join(os.tmpdir(), 'hookwasm-cache-'));

function requireBuilt() {
  for (const [file, how] of [
    [BIN, 'run `cargo build -p hookwasm` or set HOOKWASM_BIN'],
    [CHAOS, 'run `cargo xtask build-guests`'],
  ]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: ${how}`);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes (then throws `what`). */
async function waitFor(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A port nothing listens on right now (for "hookwasm is down" and "starts later"). */
async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

/**
 * Starts `hookwasm serve` with `eventHandlers` in a temporary config, on `port` (0: any), and
 * waits until it listens. `stop()` ends it.
 */
async function startHookwasm(eventHandlers, { port = 0, extra = {} } = {}) {
  requireBuilt();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookwasm-gitproxy-'));
  const config = path.join(dir, 'proxy.config.json');
  fs.writeFileSync(config, JSON.stringify({ eventHandlers, ...extra }, null, 2));
  const child = spawn(BIN, ['serve', '--config', config, '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    env: { ...process.env, HOOKWASM_CACHE_DIR: CACHE, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines = [];
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = signal || code;
  });
  let pending = '';
  child.stderr.on('data', (chunk) => {
    pending += chunk.toString('utf8');
    const parts = pending.split('\n');
    pending = parts.pop();
    for (const line of parts) lines.push(stripAnsi(line));
  });
  const addr = await waitFor(
    'hookwasm serve to listen',
    () => {
      if (exited !== null) throw new Error(`hookwasm serve exited (${exited}):\n${lines.join('\n')}`);
      for (const line of lines) {
        const m = /listening on http:\/\/(127\.0\.0\.1:\d+)/.exec(line);
        if (m) return m[1];
      }
      return null;
    },
    60000,
  );
  return {
    url: `http://${addr}`,
    dir,
    config,
    log: () => lines.slice(),
    async stop() {
      if (exited !== null) return;
      const done = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(timer);
    },
  };
}

/** A loopback HTTP server recording every JSON body posted to it, answering 200. */
async function startRecorder() {
  const events = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        events.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        events.push({ unparsable: Buffer.concat(chunks).toString('utf8') });
      }
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    events,
    /** The chaos guest's `http` behavior as an observer (or gate) posting every event here. */
    handler(name, mode = 'observe', events = ['push.*', 'pull.*']) {
      return {
        name,
        module: CHAOS,
        mode,
        events,
        config: { behavior: 'http', method: 'POST', url: `${origin}/events` },
        capabilities: { allowedHosts: [origin] },
        limits: { timeoutMs: 5000 },
      };
    },
    waitFor(n, timeoutMs = 20000) {
      return waitFor(`${n} events at the recorder (have ${events.length})`, () => events.length >= n && events.slice(), timeoutMs);
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A loopback server answering every request with `respond(req, res)` (the "not hookwasm" cases). */
async function startFake(respond) {
  const sockets = new Set();
  const server = http.createServer(respond);
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A chaos handler entry. */
function chaos(name, mode, config, events = ['push.*', 'pull.*'], more = {}) {
  return { name, module: CHAOS, mode, events, config, ...more };
}

/** A logger collecting lines, for asserting on what the bridge logs. */
function captureLog() {
  const lines = [];
  const add = (level) => (m) => lines.push({ level, line: String(m) });
  return { lines, info: add('info'), warn: add('warn'), error: add('error'), text: () => lines.map((l) => l.line) };
}

// ---- GitProxy, as read from its source ----

/** Duck typing of GitProxy's `isEventHandlerPlugin` (src/eventHandlers/EventHandlerPlugin.ts). */
function isEventHandlerPlugin(obj) {
  for (let cursor = obj; cursor !== null && cursor !== undefined; cursor = Object.getPrototypeOf(cursor)) {
    if (
      typeof cursor === 'object' &&
      Object.prototype.hasOwnProperty.call(cursor, 'isGitProxyEventHandlerPlugin') &&
      cursor.isGitProxyEventHandlerPlugin === true &&
      typeof cursor.register === 'function'
    ) {
      return true;
    }
  }
  return false;
}

/** Duck typing of GitProxy's `isCompatiblePlugin` (src/plugin.ts). */
function isCompatiblePlugin(obj, flag = 'isGitProxyPlugin') {
  for (let cursor = obj; cursor !== null && cursor !== undefined; cursor = Object.getPrototypeOf(cursor)) {
    if (Object.prototype.hasOwnProperty.call(cursor, flag) && cursor.isGitProxyPlugin && Object.keys(cursor).includes('exec')) {
      return true;
    }
  }
  return false;
}

/**
 * Loads `target` as GitProxy's loaders do: `resolvePlugin(target)` then `loadPlugin(resolved)`
 * with GitProxy's working directory (`cwd`) as the current directory.
 */
async function loadLikeGitProxy(target, cwd) {
  const { loadPlugin, resolvePlugin } = await import('load-plugin');
  const before = process.cwd();
  process.chdir(cwd);
  try {
    const resolved = await resolvePlugin(target);
    return await loadPlugin(resolved);
  } finally {
    process.chdir(before);
  }
}

/** What GitProxy's EventHandlerLoader.collect keeps from a loaded module. */
function eventHandlerPluginsIn(mod) {
  if (mod === null || typeof mod !== 'object') return [];
  if (isEventHandlerPlugin(mod)) return [mod];
  return Object.keys(mod).map((k) => mod[k]).filter(isEventHandlerPlugin);
}

/** What GitProxy's PluginLoader keeps as push-action plugins from a loaded module. */
function pushActionPluginsIn(mod) {
  if (mod === null || mod === undefined) return [];
  const candidates = isCompatiblePlugin(mod) ? [mod] : Object.keys(mod).map((k) => mod[k]).filter((v) => isCompatiblePlugin(v));
  return candidates.filter((p) => isCompatiblePlugin(p, 'isGitProxyPushActionPlugin'));
}

/**
 * GitProxy's ProxyEventRegistry and EventDispatcher in one: builders per operation, and
 * `dispatch` handing each handler its own shallow copy of the details, calling it without
 * awaiting, catching what it throws or rejects.
 */
class Registry {
  constructor() {
    this.handlers = new Map();
    this.failures = [];
    this.inflight = new Set();
  }
  builder(operation) {
    const add = (phase) => (handler) => {
      const key = `${operation}:${phase}`;
      if (!this.handlers.has(key)) this.handlers.set(key, []);
      this.handlers.get(key).push(handler);
      return builder;
    };
    const builder = {
      onStarted: add('started'),
      onCompleted: add('completed'),
      onPendingReview: add('pendingReview'),
      onError: add('error'),
      onPermissionDenied: add('permissionDenied'),
    };
    return builder;
  }
  onPush() {
    return this.builder('push');
  }
  onPull() {
    return this.builder('pull');
  }
  count() {
    return [...this.handlers.values()].reduce((n, list) => n + list.length, 0);
  }
  /** Dispatches like GitProxy: returns synchronously with the number of handlers called. */
  dispatch(action, phase, error) {
    const operation = action.type === 'push' || action.type === 'pull' ? action.type : null;
    if (!operation) return 0;
    const handlers = this.handlers.get(`${operation}:${phase}`) || [];
    const details = {
      actionId: action.id,
      operation,
      phase,
      timestamp: Date.now(),
      repository: { url: action.url, project: action.project, name: action.repoName },
      user: action.user || action.userEmail ? { username: action.user, email: action.userEmail } : undefined,
      error,
    };
    for (const handler of handlers) {
      const copy = { ...details, repository: { ...details.repository }, user: details.user ? { ...details.user } : undefined };
      let result;
      try {
        result = handler(copy);
      } catch (err) {
        this.failures.push(err);
        continue;
      }
      const tracked = Promise.resolve(result).catch((err) => this.failures.push(err));
      this.inflight.add(tracked);
      tracked.finally(() => this.inflight.delete(tracked));
    }
    return handlers.length;
  }
}

/** GitProxy's Action: the fields a push carries, addStep/continue/setCommit semantics. */
class Action {
  constructor(id, type, url) {
    this.id = String(id);
    this.type = type;
    this.method = 'POST';
    this.timestamp = Number(id);
    this.url = url;
    const m = /^https?:\/\/[^/]+\/([^/]+)\/([^/]+?)(\.git)?$/.exec(url);
    this.project = m ? m[1] : 'UNKNOWN';
    this.repoName = m ? m[2] : 'UNKNOWN';
    this.repo = m ? `${m[1]}/${m[2]}.git` : 'NOT-FOUND';
    this.steps = [];
    this.error = false;
    this.errorMessage = null;
    this.blocked = false;
    this.blockedMessage = null;
    this.allowPush = false;
    this.commitData = [];
  }
  addStep(step) {
    this.steps.push(step);
    this.lastStep = step;
    if (step.blocked) {
      this.blocked = true;
      this.blockedMessage = step.blockedMessage;
    }
    if (step.error) {
      this.error = true;
      this.errorMessage = step.errorMessage;
    }
  }
  setCommit(from, to) {
    this.commitFrom = from;
    this.commitTo = to;
    this.id = `${from}__${to}`;
  }
  setBranch(branch) {
    this.branch = branch;
  }
  continue() {
    return !(this.error || this.blocked);
  }
}

let nextTimestamp = Date.now();
/** A push as GitProxy's parsePush leaves it: commits set (id now `from__to`), commit data, a step. */
function pushAction({ from = 'a'.repeat(40), to = 'b'.repeat(40), messages = ['fix the thing'], user = 'alice' } = {}) {
  nextTimestamp += 1;
  const action = new Action(nextTimestamp, 'push', 'https://github.com/finos/git-proxy.git');
  action.setCommit(from, to);
  action.setBranch('refs/heads/main');
  action.user = user;
  action.userEmail = `${user}@example.com`;
  action.commitData = messages.map((message, i) => ({
    tree: 'c'.repeat(40),
    parent: i === 0 ? from : `p${i}`,
    author: 'Alice Author',
    authorEmail: 'alice@example.com',
    committer: 'Carl Committer',
    committerEmail: 'carl@example.com',
    commitTimestamp: String(1764590000 + i),
    message,
  }));
  action.addStep({ id: 's1', stepName: 'parsePackFile', content: null, error: false, errorMessage: null, blocked: false, blockedMessage: null, logs: [] });
  return action;
}

module.exports = {
  PACKAGE,
  REPO,
  BIN,
  CHAOS,
  CACHE,
  sleep,
  waitFor,
  freePort,
  startHookwasm,
  startRecorder,
  startFake,
  chaos,
  captureLog,
  isEventHandlerPlugin,
  isCompatiblePlugin,
  loadLikeGitProxy,
  eventHandlerPluginsIn,
  pushActionPluginsIn,
  Registry,
  Action,
  pushAction,
  pathToFileURL,
};
