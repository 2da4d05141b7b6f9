import { HookwasmEventHandlerPlugin } from './index';
/** The event-handler plugin, configured from the environment. */
declare const plugin: HookwasmEventHandlerPlugin;
export = plugin;
