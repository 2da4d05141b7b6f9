// Compiled by `tsc --noEmit` in `npm test`: the declarations must describe how GitProxy code and
// programmatic users call the package. Never run.
import eventHandler = require('../event-handler');
import pushGate = require('../push-gate');
import hookwasm = require('../index');

const registry: hookwasm.IProxyEventRegistry = {
  onPush: () => builder,
  onPull: () => builder,
};
const builder: hookwasm.IActionEventHandler = {
  onStarted: () => builder,
  onCompleted: () => builder,
  onPendingReview: () => builder,
  onError: () => builder,
  onPermissionDenied: () => builder,
};
eventHandler.register(registry);
const isPlugin: true = eventHandler.isGitProxyEventHandlerPlugin;

const custom = hookwasm.createEventHandlerPlugin({ url: 'http://127.0.0.1:8787', queueLimit: 10, spool: '/tmp/spool' });
const stats: hookwasm.DeliveryStats = custom.stats();
const flushed: Promise<boolean> = custom.flush(1000);

const gate = hookwasm.createPushGatePlugin({ failurePolicy: 'open', gateTimeoutMs: 2000 });
const action = { id: 'a__b', type: 'push', steps: [], addStep(step: hookwasm.StepData) { this.steps.push(step as never); } };
const same: Promise<typeof action> = gate.exec({}, action);
const viaDefault: Promise<typeof action> = pushGate.exec(undefined, action);

const annotations: Promise<hookwasm.Annotation[]> = hookwasm.annotationsFor('a__b', { url: 'http://127.0.0.1:8787' });

export { isPlugin, stats, flushed, same, viaDefault, annotations };
