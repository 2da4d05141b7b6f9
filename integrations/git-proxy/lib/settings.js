'use strict';
// The bridge's settings. GitProxy rejects unknown top-level keys in proxy.config.json, so the
// bridge reads environment variables (for the modules GitProxy loads by path) or the options
// given to a factory (for programmatic use); an option given wins over the environment.

const os = require('node:os');

const DEFAULTS = Object.freeze({
  url: 'http://127.0.0.1:8787',
  failurePolicy: 'closed',
  gateTimeoutMs: 5000,
  timeoutMs: 5000,
  queueLimit: 10000,
  retryMinMs: 500,
  retryMaxMs: 30000,
  stepName: 'hookwasm',
});

/** Environment variable of each setting. */
const ENV = Object.freeze({
  url: 'HOOKWASM_URL',
  token: 'HOOKWASM_TOKEN',
  source: 'HOOKWASM_SOURCE',
  failurePolicy: 'HOOKWASM_FAILURE_POLICY',
  gateTimeoutMs: 'HOOKWASM_GATE_TIMEOUT_MS',
  timeoutMs: 'HOOKWASM_TIMEOUT_MS',
  queueLimit: 'HOOKWASM_QUEUE_LIMIT',
  spool: 'HOOKWASM_SPOOL',
  retryMinMs: 'HOOKWASM_RETRY_MIN_MS',
  retryMaxMs: 'HOOKWASM_RETRY_MAX_MS',
});

const NUMBERS = ['gateTimeoutMs', 'timeoutMs', 'queueLimit', 'retryMinMs', 'retryMaxMs'];

/**
 * Resolves the settings from `options`, then `env`, then the defaults. A bad value is reported
 * through `log` and replaced by its default: a typo must not stop GitProxy from starting (for the
 * failure policy the default is the safe one, `closed`).
 * @param {object} [options]
 * @param {NodeJS.ProcessEnv} [env]
 * @param {{warn: (m: string) => void}} log
 */
function resolveSettings(options, env, log) {
  const given = options && typeof options === 'object' ? options : {};
  const environment = env || process.env;
  const pick = (key) => {
    if (given[key] !== undefined && given[key] !== null) return { value: given[key], from: `option ${key}` };
    const name = ENV[key];
    if (name && environment[name] !== undefined && environment[name] !== '') {
      return { value: environment[name], from: name };
    }
    return undefined;
  };
  const settings = { ...DEFAULTS, source: `git-proxy://${os.hostname()}` };

  const url = pick('url');
  if (url) {
    try {
      const parsed = new URL(String(url.value));
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not http(s)');
      settings.url = parsed.href.replace(/\/+$/, '');
    } catch {
      log.warn(`${url.from} is ${JSON.stringify(String(url.value))}, not an http:// or https:// URL; using ${DEFAULTS.url}`);
    }
  }
  for (const key of ['token', 'source', 'spool', 'stepName']) {
    const found = pick(key);
    if (found && String(found.value).trim() !== '') settings[key] = String(found.value).trim();
  }
  const policy = pick('failurePolicy');
  if (policy) {
    const value = String(policy.value).trim().toLowerCase();
    if (value === 'open' || value === 'closed') settings.failurePolicy = value;
    else log.warn(`${policy.from} is ${JSON.stringify(String(policy.value))}; it must be "closed" or "open"; using "closed"`);
  }
  for (const key of NUMBERS) {
    const found = pick(key);
    if (!found) continue;
    const n = Number(found.value);
    if (Number.isInteger(n) && n > 0) settings[key] = n;
    else log.warn(`${found.from} is ${JSON.stringify(String(found.value))}; it must be a whole number above 0; using ${DEFAULTS[key]}`);
  }
  if (settings.retryMaxMs < settings.retryMinMs) settings.retryMaxMs = settings.retryMinMs;
  if (given.logger) settings.logger = given.logger;
  return settings;
}

module.exports = { resolveSettings, DEFAULTS, ENV };
