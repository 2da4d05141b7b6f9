'use strict';
// What GitProxy's `plugins` entry loads: one push-action plugin configured from the environment
// (HOOKWASM_URL, HOOKWASM_TOKEN, HOOKWASM_FAILURE_POLICY, HOOKWASM_GATE_TIMEOUT_MS, …).
// `module.exports` is the plugin itself, so load-plugin hands it to GitProxy as the default export.
module.exports = require('./lib/push-gate').createPushGatePlugin();
