'use strict';
// What GitProxy's `eventHandlers` entry loads: one event-handler plugin configured from the
// environment (HOOKWASM_URL, HOOKWASM_TOKEN, HOOKWASM_SPOOL, …). `module.exports` is the plugin
// itself, so load-plugin hands it to GitProxy as the module's default export.
module.exports = require('./lib/event-handler').createEventHandlerPlugin();
