// A hookwasm handler manifest. hookwasm reads the entry below (paths resolve against this
// folder); GitProxy, which imports every `eventHandlers` entry as a module, finds no plugin in it.
export default {
  "name": "console-logger",
  "module": "../plugins/console-logger.wasm"
};
