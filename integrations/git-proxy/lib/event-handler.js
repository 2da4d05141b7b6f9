'use strict';
// The event-handler plugin: GitProxy's `eventHandlers` loader finds it by its own
// `isGitProxyEventHandlerPlugin === true` and a `register(registry)` function, and calls
// `register` once at start. Every callback turns GitProxy's details into a CloudEvent, queues it
// and returns: the push never waits for hookwasm, and nothing thrown here reaches GitProxy.

const { createLogger, describeError } = require('./log');
const { resolveSettings } = require('./settings');
const { Delivery } = require('./delivery');
const { OPERATIONS, PHASES, SUBSCRIBE, eventFromDetails } = require('./events');

class HookwasmEventHandlerPlugin {
  /**
   * @param {object} [options] see index.d.ts (`EventHandlerOptions`); unset ones come from the
   *   environment (HOOKWASM_URL, …), then the defaults.
   */
  constructor(options) {
    const log = createLogger(options && options.logger);
    const settings = resolveSettings(options, options && options.env, log);
    const delivery = new Delivery(settings, log);
    let invalid = 0;
    // Own properties, as GitProxy's duck typing requires; `register` is an own arrow function
    // so it works unbound.
    this.isGitProxyPlugin = true;
    this.isGitProxyEventHandlerPlugin = true;
    Object.defineProperties(this, {
      settings: { value: settings },
      delivery: { value: delivery },
      log: { value: log },
    });

    const callback = (operation, phase) => {
      const handler = (details) => {
        try {
          delivery.enqueue(eventFromDetails(details, operation, phase, settings.source));
        } catch (err) {
          invalid += 1;
          log.error(`ignored a ${operation}.${phase} event from GitProxy: ${describeError(err)} (${invalid} ignored so far)`);
        }
      };
      // GitProxy names the handler in its own log lines.
      Object.defineProperty(handler, 'name', { value: `hookwasm ${operation}.${PHASES[phase]}` });
      return handler;
    };

    // A registry call that returns a promise (not GitProxy's, but a broken or wrapped registry)
    // must not leave a rejection unhandled: Node ends the process on one by default.
    const settle = (value, what) => {
      if (value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function') {
        Promise.resolve(value).then(undefined, (err) => log.error(`${what} rejected: ${describeError(err)}`));
      }
      return value;
    };

    this.register = (registry) => {
      const failed = [];
      let subscribed = 0;
      for (const operation of OPERATIONS) {
        let builder;
        const method = operation === 'push' ? 'onPush' : 'onPull';
        try {
          builder = settle(registry[method](), `registry.${method}()`);
        } catch (err) {
          failed.push(`${operation}: ${describeError(err)}`);
          continue;
        }
        for (const phase of Object.keys(PHASES)) {
          try {
            // Each phase on the builder onPush()/onPull() returned: a builder whose methods do
            // not return `this` still gets every subscription.
            settle(builder[SUBSCRIBE[phase]](callback(operation, phase)), `${method}().${SUBSCRIBE[phase]}()`);
            subscribed += 1;
          } catch (err) {
            failed.push(`${operation}.${PHASES[phase]}: ${describeError(err)}`);
          }
        }
      }
      if (failed.length > 0) {
        log.error(`could not subscribe to ${failed.length} of GitProxy's ${OPERATIONS.length * 5} events (${failed.join('; ')}); those events will not reach hookwasm`);
      }
      return undefined;
    };
  }

  /** Counters: accepted, delivered, duplicates, dropped (queue full), rejected (400), failures, queued. */
  stats() {
    return this.delivery.stats();
  }

  /** Resolves true once everything queued is delivered, false after `timeoutMs`. */
  flush(timeoutMs) {
    return this.delivery.flush(timeoutMs);
  }

  /** Stops delivering (tests; a proxy shutting down keeps what is queued in the spool file). */
  close() {
    this.delivery.close();
  }
}

/** A new event-handler plugin with `options` (see index.d.ts). */
function createEventHandlerPlugin(options) {
  return new HookwasmEventHandlerPlugin(options);
}

module.exports = { HookwasmEventHandlerPlugin, createEventHandlerPlugin };
