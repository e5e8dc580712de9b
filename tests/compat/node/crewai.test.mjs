// Seed 002 (CrewAI): "Client Connection (JavaScript)", as printed, against a
// real hub's /compat/crewai dialect; only its base URL changes. The snippet
// sends its subscription right after `new WebSocket(...)`, which a browser
// refuses while the socket is still connecting; it is run as a person runs
// it in a console: the connection first, then, once open, the subscription.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { getJson, postJson, publish, startHub, stopAll } from "../../../web-client/test/harness.mjs";
import { logged, seedContext, seedSource, waitFor, wsBase } from "./seed.mjs";

after(stopAll);

const SUBSCRIBE = "// Send subscription update";

const event = (type) => (args) => args[0] === "Received event:" && args[1]?.event_type === type;

test("the client reads WebSocketEvents on its execution and on the subscriptions it adds", async () => {
  const hub = await startHub();
  const source = seedSource("002-crewai-client.js", [["ws://localhost:8000", `${wsBase(hub)}/compat/crewai`]]);
  const cut = source.indexOf(SUBSCRIBE);
  const seed = seedContext();
  try {
    seed.run(source.slice(0, cut));
    const [, hello] = await logged(seed, event("connection.established"), "the greeting");
    assert.deepEqual(hello.data.subscriptions, ["execution_exec_123"]);
    await waitFor(() => seed.sockets[0].readyState === WebSocket.OPEN, "the socket opens");
    seed.run(source.slice(cut));
    await waitFor(
      () => seed.logs.filter((args) => args[1]?.type === "subscription_confirmed").length === 3,
      "the endpoint's subscription and the two added are confirmed",
    );
    await publish(hub, {
      topic: "execution:exec_123",
      event_type: "execution.completed",
      priority: "high",
      data: { status: "completed", result: { success: true } },
    });
    await publish(hub, { topic: "execution:123", event_type: "execution.progress", data: { progress: 75 } });
    await publish(hub, { topic: "task:t1", event_type: "task.assigned", data: { agent: "researcher" } });
    const [, completed] = await logged(seed, event("execution.completed"), "the execution's event");
    assert.equal(completed.execution_id, "exec_123");
    assert.equal(completed.priority, "HIGH");
    assert.deepEqual(completed.data, { status: "completed", result: { success: true } });
    assert.match(completed.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const [, progress] = await logged(seed, event("execution.progress"), "execution_123's event");
    assert.equal(progress.subscription, "execution_123");
    const [, assigned] = await logged(seed, event("task.assigned"), "task_updates' event");
    assert.equal(assigned.task_id, "t1");
    // The admin side sees the client by its subscriptions' names.
    const stats = await getJson(hub, "/compat/crewai/api/v1/websocket/connections");
    assert.equal(stats.status, "success");
    assert.equal(stats.data.subscription_counts.execution_exec_123, 1);
    assert.equal(stats.data.subscription_counts.task_updates, 1);
    const sent = await postJson(hub, "/compat/crewai/api/v1/websocket/broadcast", {
      event_type: "system.notification",
      data: { message: "maintenance" },
      priority: "CRITICAL",
    });
    assert.equal(sent.data.recipients, 1);
    const [, notice] = await logged(seed, event("system.notification"), "the broadcast");
    assert.equal(notice.priority, "CRITICAL");
  } finally {
    seed.end();
  }
});
