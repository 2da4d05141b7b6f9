// Run by `cargo xtask test` (node --test), and by `npm test` in sdk-js/.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { TestHost, events } from "../../sdk-js/testing.js";

const handler = fileURLToPath(new URL("./handler.js", import.meta.url));

test("refuses force-pushes and deletions of protected branches", async () => {
  const host = new TestHost();
  const gate = await host.load(handler, { protected: ["main", "release"] });
  for (const type of ["git.branch.force-pushed", "git.branch.deleted"]) {
    const outcome = gate.onEvent(events.refUpdate(type, { ref: "refs/heads/release" }, { id: "e-9" }));
    assert.equal(outcome.reason, `${type.split(".")[2]} of protected branch release is not allowed`);
    assert.equal(outcome.annotation("branch"), "release");
  }
  assert.deepEqual(host.logs[0], { level: "info", message: "refusing event e-9: force-pushed of release" });
});

test("allows everything else", async () => {
  const gate = await new TestHost().load(handler, null);
  const allowed = [
    events.refUpdate("git.branch.updated"),
    events.refUpdate("git.branch.force-pushed", { ref: "refs/heads/feature" }),
    events.refUpdate("git.tag.deleted", { ref: "refs/tags/v1" }),
    events.proxyAction("push.completed"),
    events.custom("user.created", { login: "ada" }),
  ];
  for (const event of allowed) assert.equal(gate.onEvent(event).denied, false, event.type);
});

test("a bad config refuses the load with the handler's message", async () => {
  await assert.rejects(new TestHost().load(handler, { protected: [] }), {
    message: "`protected` is empty: name at least one branch",
  });
  await assert.rejects(new TestHost().load(handler, { protected: "main" }), {
    message: "`protected` must be a list of branch names",
  });
});
