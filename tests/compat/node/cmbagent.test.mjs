// Seed 004 (cmbagent): the document's "Frontend Integration" snippet, as
// printed, importing the resilient WebSocket hook the document describes
// (a faithful minimal one, tests/compat/seeds/004-use-resilient-websocket.mjs)
// and pointed at a real hub's /compat/cmbagent dialect through the UI's
// base URL (NEXT_PUBLIC_WS_URL): nothing else changes.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { getJson, publish, startHub, stopAll } from "../../../web-client/test/harness.mjs";
import { useResilientWebSocket } from "../seeds/004-use-resilient-websocket.mjs";
import { seedContext, seedSource, waitFor, wsBase } from "./seed.mjs";

after(stopAll);

const RUN = "run-123";

/** Publishes on the run's topic at `ms` (ms since the epoch), keyed when `key` is given. */
function emit(hub, eventType, ms, data, key) {
  return publish(hub, { topic: `run:${RUN}`, event_type: eventType, timestamp: ms, data, ...(key ? { key } : {}) });
}

test("the UI gets the run's state on connect, live events by name, missed events once after a reconnect, and pauses the run", async () => {
  const hub = await startHub();
  process.env.NEXT_PUBLIC_WS_URL = `${wsBase(hub)}/compat/cmbagent`;
  const t0 = Date.now() - 60_000;
  await emit(hub, "workflow.started", t0, { status: "running" }, "workflow");
  await emit(hub, "agent.message", t0 + 1, { text: "planning" });
  await emit(hub, "step.completed", t0 + 2, { step: 1 }, "step:1");

  const messages = [];
  const changes = [];
  let socket = null;
  const seed = seedContext();
  const hook = (options) => {
    socket = useResilientWebSocket({
      ...options,
      onMessage: (message) => {
        messages.push(message);
        options.onMessage(message);
      },
      onConnectionChange: (connected) => {
        changes.push(connected);
        options.onConnectionChange(connected);
      },
    });
    return socket;
  };
  try {
    await seed.runModule(seedSource("004-frontend-integration.ts"), {
      "./hooks/useResilientWebSocket": { useResilientWebSocket: hook },
    });
    // Heartbeats (one follows the state, at the UI's cursor) are keepalives.
    const names = () => messages.map((m) => m.event_type).filter((name) => name !== "heartbeat");
    await waitFor(() => names().includes("step_completed"), "the run's state");
    assert.deepEqual(names(), ["connected", "workflow_started", "step_completed"], "the state is the keyed events");
    assert.equal(messages[1].run_id, RUN);
    assert.equal(messages[1].timestamp, t0 / 1000);
    assert.deepEqual(changes, [true]);

    await emit(hub, "dag.node_status_changed", t0 + 3, { node_id: "n1", old_status: "pending", new_status: "running" }, "dag");
    await waitFor(() => names().includes("dag_node_status_changed"), "a live event");

    // The connection drops (an admin closes it); the hook reconnects after
    // its backoff, with the last message's timestamp.
    const [session] = (await getJson(hub, "/api/v1/connections")).connections;
    await fetch(`${hub.url}/api/v1/connections/${session.id}`, { method: "DELETE" });
    await waitFor(() => changes.length === 2, "the UI sees the connection drop");
    const away = messages.length;
    await emit(hub, "agent.message", t0 + 10, { text: "missed while away" });
    await emit(hub, "step.completed", t0 + 11, { step: 2 }, "step:2");
    await waitFor(() => changes.length === 3, "the hook reconnects", 15_000);
    await waitFor(
      () => messages.slice(away).filter((m) => m.event_type === "step_completed").length >= 2,
      "the state after the reconnect",
    );
    const missed = messages.slice(away).filter((m) => m.event_type === "agent_message");
    assert.equal(missed.length, 1, "the missed message comes once");
    assert.equal(missed[0].data.text, "missed while away");
    assert.ok(
      !messages.slice(away).some((m) => m.data?.text === "planning"),
      "an event older than the cursor came again",
    );

    assert.ok(socket.sendMessage({ type: "pause" }));
    await waitFor(async () => {
      const history = await getJson(hub, `/api/v1/topics/run:${RUN}/events`);
      return history.events.some((e) => e.event_type === "control.pause" && e.data.run_id === RUN);
    }, "the pause reaches the run's topic");
    await waitFor(() => names().includes("control_pause"), "the UI sees its request");
  } finally {
    socket?.disconnect();
    seed.end();
  }
});
