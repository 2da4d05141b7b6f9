import { HookwasmPushGatePlugin } from './index';
/** The push-action plugin, configured from the environment. */
declare const plugin: HookwasmPushGatePlugin;
export = plugin;
