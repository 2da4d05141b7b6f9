// Node stand-in for the `hookwasm:handler/host` import, used by testing.js: log lines and the
// config go to the TestHost of the running test.
export function log(level, message) {
  const host = globalThis.__hookwasmTestHost;
  if (host) host.logs.push({ level, message });
}

export function config() {
  const host = globalThis.__hookwasmTestHost;
  if (!host) throw new Error("no TestHost: create one with `new TestHost()` before loading the handler");
  return host.configText;
}
