'use strict';
// The push-action (chain) plugin: GitProxy runs its own `exec(req, action)` early in the push
// chain. It asks hookwasm's gates about the push (`POST /v1/events?route=gates`) and stops the
// push on a deny, with every reason, the way GitProxy's own steps do: a step with `error: true`.
// It always records one step listing each gate's verdict and annotations for the reviewer's UI.
// When hookwasm cannot answer, the failure policy decides: closed (default) blocks, open lets
// the push through and says so in the step.

const { randomUUID } = require('node:crypto');
const { createLogger, describeError, clip } = require('./log');
const { resolveSettings } = require('./settings');
const { request, answerError } = require('./client');
const { gateEventFromAction, bounded, LIMITS } = require('./events');

/**
 * A step shaped like GitProxy's `Step` (its fields, not its class: the package must not depend
 * on GitProxy), which `action.addStep` records and the UI shows.
 */
function makeStep(stepName, { error = false, errorMessage = null, content = null, logs = [] }) {
  return {
    id: randomUUID(),
    stepName,
    content,
    error,
    errorMessage,
    blocked: false,
    blockedMessage: null,
    logs: logs.map((line) => `${stepName} - ${line}`),
  };
}

/** Adds `step` through the Action's own `addStep`, or by hand when a malformed one has none. */
function record(action, step) {
  if (typeof action.addStep === 'function') {
    action.addStep(step);
    return;
  }
  if (Array.isArray(action.steps)) action.steps.push(step);
  else action.steps = [step];
  action.lastStep = step;
  if (step.error) {
    action.error = true;
    action.errorMessage = step.errorMessage;
  }
}

function annotationText(annotations) {
  if (!annotations || typeof annotations !== 'object') return '';
  const pairs = Object.entries(annotations).map(([k, v]) => `${k}=${clip(v, 200)}`);
  return pairs.length ? `; annotations: ${pairs.join(', ')}` : '';
}

/** hookwasm's decision as a step: one log line per gate, the whole answer as content. */
function decisionStep(settings, event, decision) {
  const gates = Array.isArray(decision.gates) ? decision.gates : [];
  const logs = gates.map((g) => {
    const reason = g.reason ? ` (${clip(g.reason, 300)})` : '';
    return `gate ${g.handler}: ${g.verdict ?? 'no verdict'}, ${g.status}${reason}${annotationText(g.annotations)}`;
  });
  if (gates.length === 0) logs.push('no hookwasm gate is subscribed to push.started; allowed');
  const reasons = Array.isArray(decision.reasons) ? decision.reasons : [];
  const content = {
    eventId: event.id,
    source: event.source,
    verdict: decision.verdict,
    reasons: reasons.map((r) => ({ handler: r.handler, reason: r.value })),
    annotations: Array.isArray(decision.annotations) ? decision.annotations : [],
    gates: gates.map((g) => ({
      handler: g.handler,
      status: g.status,
      verdict: g.verdict,
      reason: g.reason ?? null,
      annotations: g.annotations ?? {},
      fuelConsumed: g.fuelConsumed,
      durationMs: g.durationMs,
    })),
  };
  if (decision.verdict === 'deny') {
    const lines = reasons.map((r) => `  - ${r.handler}: ${r.value}`);
    const errorMessage = bounded(`Push blocked by hookwasm (${reasons.length} gate(s) denied):\n${lines.join('\n')}`, LIMITS.text);
    return makeStep(settings.stepName, { error: true, errorMessage, content, logs });
  }
  return makeStep(settings.stepName, { content, logs });
}

/** hookwasm could not answer: the failure policy decides. */
function failureStep(settings, event, cause) {
  const content = { eventId: event && event.id, verdict: null, failure: cause, failurePolicy: settings.failurePolicy };
  if (settings.failurePolicy === 'open') {
    return makeStep(settings.stepName, {
      content,
      logs: [`hookwasm's gates could not be asked: ${cause}; failure policy open lets the push through unchecked`],
    });
  }
  return makeStep(settings.stepName, {
    error: true,
    errorMessage: `Push blocked: hookwasm's policy check could not run: ${cause}. The failure policy is closed; try again later, or ask an administrator to check hookwasm at ${settings.url}.`,
    content,
    logs: [`hookwasm's gates could not be asked: ${cause}; failure policy closed blocks the push`],
  });
}

/** Why an answer is not a usable decision, or null when it is one. */
function unusable(answer) {
  if (answer.failure) return answer.failure;
  if (answer.json === undefined) return `HTTP ${answer.status} with an answer that is not JSON`;
  if (answer.status !== 200 && answer.status !== 202) return `HTTP ${answer.status}: ${answerError(answer)}`;
  const verdict = answer.json && answer.json.verdict;
  if (verdict !== 'allow' && verdict !== 'deny') return `HTTP ${answer.status} without a verdict`;
  return null;
}

class HookwasmPushGatePlugin {
  /** @param {object} [options] see index.d.ts (`PushGateOptions`). */
  constructor(options) {
    const log = createLogger(options && options.logger);
    const settings = resolveSettings(options, options && options.env, log);
    Object.defineProperty(this, 'settings', { value: settings });
    // Own properties, as GitProxy's duck typing requires; `exec` is an own arrow function because
    // the chain calls it unbound.
    this.isGitProxyPlugin = true;
    this.isGitProxyPushActionPlugin = true;
    this.exec = async (req, action) => {
      if (action === null || typeof action !== 'object') {
        log.error(`push gate called with ${action === null ? 'null' : typeof action} instead of an Action; nothing to check`);
        return action;
      }
      if (action.type !== undefined && action.type !== 'push') return action;
      let event;
      let step;
      try {
        const built = gateEventFromAction(action, settings.source);
        event = built.event;
        if (built.truncated > 0 || built.omitted > 0) {
          log.warn(`push ${event.subject}: ${built.truncated} commit message(s) shortened and ${built.omitted} commit(s) left out of the gate event (bounded to fit hookwasm's request limit)`);
        }
        const answer = await request(settings, 'POST', '/v1/events?route=gates', built.body, settings.gateTimeoutMs);
        const problem = unusable(answer);
        if (problem) {
          log.error(`push ${event.subject}: hookwasm's gates could not be asked (${problem}); failure policy ${settings.failurePolicy} ${settings.failurePolicy === 'open' ? 'lets it through' : 'blocks it'}`);
          step = failureStep(settings, event, problem);
        } else {
          step = decisionStep(settings, event, answer.json);
          if (answer.json.verdict === 'deny') log.info(`push ${event.subject} denied: ${step.errorMessage}`);
        }
      } catch (err) {
        const cause = `the bridge failed: ${describeError(err)}`;
        log.error(`push ${event ? event.subject : '(no id)'}: ${cause}; failure policy ${settings.failurePolicy} applies`);
        step = failureStep(settings, event, cause);
      }
      try {
        record(action, step);
      } catch (err) {
        log.error(`cannot record the hookwasm step on the Action: ${describeError(err)}`);
        try {
          if (step.error) {
            action.error = true;
            action.errorMessage = step.errorMessage;
          }
        } catch {
          // An Action that cannot be changed cannot be blocked from here; the line above says so.
        }
      }
      return action;
    };
  }
}

/** A new push-gate plugin with `options` (see index.d.ts). */
function createPushGatePlugin(options) {
  return new HookwasmPushGatePlugin(options);
}

module.exports = { HookwasmPushGatePlugin, createPushGatePlugin, makeStep };
