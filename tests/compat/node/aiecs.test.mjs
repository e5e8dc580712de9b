// Seed 000 (AIECS): Appendix C's client, as printed, against a real hub's
// /compat/aiecs dialect; only its URL changes.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { getJson, postJson, startHub, stopAll } from "../../../web-client/test/harness.mjs";
import { logged, seedContext, seedSource, wsBase } from "./seed.mjs";

after(stopAll);

/** Appendix C against `hub`, answering each `confirm()` with `answer`. */
function appendixC(hub, answer) {
  const asked = [];
  const seed = seedContext({
    confirm: (message) => {
      asked.push(message);
      return answer;
    },
  });
  seed.asked = asked;
  seed.run(seedSource("000-aiecs-client.js", [["ws://localhost:8765", `${wsBase(hub)}/compat/aiecs`]]));
  return seed;
}

/** The producer's `notify_user` (seed §4.2), as the dialect exposes it over HTTP. */
function notifyUser(hub, taskId) {
  return fetch(`${hub.url}/compat/aiecs/notify_user`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      step_result: {
        step: "model_training",
        result: null,
        completed: false,
        message: "Model training failed, retry?",
        status: "failed",
        error_code: "E003",
        error_message: "GPU memory insufficient",
      },
      user_id: "user_123",
      task_id: taskId,
      step: 2,
    }),
    signal: AbortSignal.timeout(15_000),
  }).then((response) => response.json());
}

const received = (type) => (args) => args[0] === "Message received:" && args[1]?.type === type;

test("the page confirms a question and the producer is told proceed with the page's feedback", async () => {
  const hub = await startHub();
  const seed = appendixC(hub, true);
  try {
    await logged(seed, (args) => args[0] === "WebSocket connection established", "the page connects");
    const confirmation = await notifyUser(hub, "task_789");
    assert.deepEqual(seed.asked, ["Model training failed, retry?"]);
    assert.equal(confirmation.proceed, true);
    assert.equal(confirmation.feedback, "Agree to continue");
    assert.equal(confirmation.status, "approved");
    const [, question] = await logged(seed, received("task_step_result"), "the question was logged");
    assert.equal(question.error_code, "E003");
    assert.equal(question.task_id, "task_789");
  } finally {
    seed.end();
  }
});

test("the page cancels and the producer is told not to proceed", async () => {
  const hub = await startHub();
  const seed = appendixC(hub, false);
  try {
    await logged(seed, (args) => args[0] === "WebSocket connection established", "the page connects");
    const confirmation = await notifyUser(hub, "task_790");
    assert.equal(confirmation.proceed, false);
    assert.equal(confirmation.feedback, "Cancel execution");
    assert.equal(confirmation.status, "rejected");
  } finally {
    seed.end();
  }
});

test("the page's heartbeat is answered with pong, and broadcasts and closes reach it", async () => {
  const hub = await startHub();
  const seed = appendixC(hub, true);
  try {
    await logged(seed, (args) => args[0] === "WebSocket connection established", "the page connects");
    // The page pings every 30 s; its interval fires now.
    seed.timers.fire();
    const [, pong] = await logged(seed, received("pong"), "the pong");
    assert.equal(pong.original_data.action, "ping");
    assert.equal(typeof pong.timestamp, "number");
    const notification = {
      type: "system_notification",
      message: "System will undergo maintenance in 5 minutes",
      timestamp: 1729845678.123456,
      severity: "warning",
    };
    await postJson(hub, "/compat/aiecs/broadcast_message", notification);
    const [, got] = await logged(seed, received("system_notification"), "the broadcast");
    assert.deepEqual(got, notification);
    const status = await getJson(hub, "/compat/aiecs/status");
    assert.equal(status.active_connections, 1);
    assert.equal(status.pending_callbacks, 0);
    const [session] = (await getJson(hub, "/api/v1/connections")).connections;
    await fetch(`${hub.url}/api/v1/connections/${session.id}`, { method: "DELETE" });
    await logged(seed, (args) => args[0] === "WebSocket connection closed", "the close");
  } finally {
    seed.end();
  }
});
