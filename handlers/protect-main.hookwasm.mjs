// A hookwasm handler manifest: a gate that refuses force-pushes and deletions of protected
// branches. hookwasm reads the entry below (paths resolve against this folder); GitProxy, which
// imports every `eventHandlers` entry as a module, finds no plugin in it.
export default {
  "name": "protect-main",
  "module": "../plugins/branch-protection.wasm",
  "mode": "gate",
  "events": ["git.branch.force-pushed", "git.branch.deleted"],
  "refs": ["refs/heads/main", "refs/heads/release/*"],
  "config": { "protected": ["main", "release/*"] },
  "limits": { "fuel": 50000000, "timeoutMs": 500, "memoryMiB": 32 },
  "failurePolicy": "closed"
};
