'use strict';
// For programmatic use: the factories, the plugin classes and `annotationsFor`. GitProxy's
// config lists `@hookwasm/git-proxy/event-handler` and `@hookwasm/git-proxy/push-gate` instead.

const { createEventHandlerPlugin, HookwasmEventHandlerPlugin } = require('./lib/event-handler');
const { createPushGatePlugin, HookwasmPushGatePlugin } = require('./lib/push-gate');
const { annotationsFor } = require('./lib/annotations');
const { DEFAULTS, ENV } = require('./lib/settings');

module.exports = {
  createEventHandlerPlugin,
  createPushGatePlugin,
  annotationsFor,
  HookwasmEventHandlerPlugin,
  HookwasmPushGatePlugin,
  DEFAULTS,
  ENV,
};
