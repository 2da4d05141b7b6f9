'use strict';
// One proxy.config.json for GitProxy and hookwasm, checked against GitProxy's own rules as read
// from its source (PR #1519): config.schema.json allows only its listed top-level keys
// (`additionalProperties: false`), `plugins` and `eventHandlers` are arrays of strings, and each
// entry is resolved and imported with load-plugin from GitProxy's working directory, then
// duck-typed (src/plugin.ts, src/eventHandlers/{loader,EventHandlerPlugin}.ts).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { PACKAGE, REPO, loadLikeGitProxy, eventHandlerPluginsIn, pushActionPluginsIn } = require('./support');

/** The `properties` of config.schema.json in GitProxy PR #1519, the only top-level keys it accepts. */
const GITPROXY_TOP_LEVEL_KEYS = [
  'api', 'apiAuthentication', 'attestationConfig', 'authentication', 'authorisedList', 'commitConfig',
  'configurationSources', 'contactEmail', 'cookieSecret', 'csrfProtection', 'domains', 'eventHandlers',
  'httpsServerPort', 'httpsUiPort', 'limits', 'plugins', 'privateOrganizations', 'proxyUrl', 'rateLimit',
  'serverPort', 'sessionMaxAgeHours', 'sidebandProgress', 'sink', 'ssh', 'sslCertPemPath', 'sslKeyPemPath',
  'tempPassword', 'tls', 'uiHost', 'uiPort', 'uiRouteAuth', 'upstreamProxy', 'urlShortener',
];

/**
 * Applies GitProxy's rules to `configPath` with GitProxy started in the config's folder, and
 * says what GitProxy's loaders would find in each entry.
 */
async function asGitProxySeesIt(configPath) {
  const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  const unknown = Object.keys(config).filter((k) => !GITPROXY_TOP_LEVEL_KEYS.includes(k));
  assert.deepEqual(unknown, [], `top-level keys GitProxy's schema rejects in ${configPath}`);
  const cwd = path.dirname(configPath);
  const found = { eventHandlers: [], plugins: [] };
  for (const list of ['eventHandlers', 'plugins']) {
    const entries = config[list] ?? [];
    assert.ok(Array.isArray(entries), `${list} must be an array`);
    for (const [i, entry] of entries.entries()) {
      assert.equal(typeof entry, 'string', `${list}[${i}] must be a string for GitProxy, found ${JSON.stringify(entry)}`);
      let mod;
      try {
        mod = await loadLikeGitProxy(entry, cwd);
      } catch (err) {
        assert.fail(`GitProxy cannot load ${list}[${i}] ${entry} from ${cwd}: ${err.message}`);
      }
      found[list].push({ entry, mod, handlers: eventHandlerPluginsIn(mod), pushPlugins: pushActionPluginsIn(mod) });
    }
  }
  return found;
}

function checkSharedConfig(found) {
  const bridges = found.eventHandlers.filter((f) => f.handlers.length > 0);
  assert.equal(bridges.length, 1, `one eventHandlers entry is the bridge: ${found.eventHandlers.map((f) => f.entry).join(', ')}`);
  assert.equal(bridges[0].handlers.length, 1);
  assert.equal(bridges[0].handlers[0].constructor.name, 'HookwasmEventHandlerPlugin');
  const manifests = found.eventHandlers.filter((f) => f.handlers.length === 0);
  assert.ok(manifests.length >= 1, 'hookwasm handler manifests sit beside the bridge');
  for (const m of manifests) {
    assert.equal(m.pushPlugins.length, 0, `${m.entry} is no plugin for GitProxy`);
    assert.ok(m.mod && typeof m.mod === 'object' && typeof m.mod.module === 'string', `${m.entry}'s default export is a hookwasm entry with a module`);
  }
  const gates = found.plugins.filter((f) => f.pushPlugins.length > 0);
  assert.equal(gates.length, 1, `one plugins entry is the push gate: ${found.plugins.map((f) => f.entry).join(', ')}`);
  assert.equal(gates[0].pushPlugins[0].constructor.name, 'HookwasmPushGatePlugin');
  assert.equal(gates[0].handlers.length, 0);
}

test('a shared config of the agreed form passes GitProxy\'s rules, with the package installed by name', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gitproxy-cwd-'));
  fs.cpSync(path.join(__dirname, 'fixtures', 'gitproxy'), dir, { recursive: true });
  fs.mkdirSync(path.join(dir, 'node_modules', '@hookwasm'), { recursive: true });
  fs.symlinkSync(PACKAGE, path.join(dir, 'node_modules', '@hookwasm', 'git-proxy'), 'dir');
  checkSharedConfig(await asGitProxySeesIt(path.join(dir, 'proxy.config.json')));
});

test('the rules reject what GitProxy rejects: an unknown top-level key, an entry that is not a string', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gitproxy-cwd-'));
  const write = (config) => {
    fs.writeFileSync(path.join(dir, 'proxy.config.json'), JSON.stringify(config));
    return path.join(dir, 'proxy.config.json');
  };
  await assert.rejects(asGitProxySeesIt(write({ hookwasm: { url: 'x' } })), /top-level keys GitProxy's schema rejects/);
  await assert.rejects(asGitProxySeesIt(write({ eventHandlers: [{ module: 'x.wasm' }] })), /eventHandlers\[0\] must be a string for GitProxy/);
  await assert.rejects(asGitProxySeesIt(write({ eventHandlers: ['plugins/console-logger.wasm'] })), /GitProxy cannot load eventHandlers\[0\]/);
});

test('the repository\'s sample proxy.config.json passes GitProxy\'s rules', async () => {
  checkSharedConfig(await asGitProxySeesIt(path.join(REPO, 'proxy.config.json')));
});
