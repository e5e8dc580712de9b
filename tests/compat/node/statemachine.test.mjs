// Seed 003 (state machine engine): the dashboard's "Client-Side
// Implementation", as printed, against a real hub's /compat/statemachine
// dialect (only its URL changes), fed by the machines' own "Client-Side
// Sender", as printed, run by Python against the hub's Unix socket (only
// SOCKET_PATH changes).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { after, test } from "node:test";

import { getJson, startHub, stopAll, tempDir } from "../../../web-client/test/harness.mjs";
import { SEEDS, logged, seedContext, seedSource, waitFor, wsBase } from "./seed.mjs";

after(stopAll);

/** Runs the seed's `send_event(event_type, machine_id, **kwargs)` in Python. */
function sendEvent(socketPath, eventType, machineId, kwargs) {
  const program = [
    "import json, logging, socket, sys, time",
    "logger = logging.getLogger('state_machine')",
    "SOCKET_PATH = sys.argv[1]",
    "exec(open(sys.argv[2]).read())",
    "send_event(sys.argv[3], sys.argv[4], **json.loads(sys.argv[5]))",
  ].join("\n");
  execFileSync(
    process.env.HERALD_PYTHON ?? "python3",
    ["-c", program, socketPath, join(SEEDS, "003_send_event.py"), eventType, machineId, JSON.stringify(kwargs)],
    { timeout: 10_000 },
  );
}

/** Whether the hub reads `path` yet: a zero-length datagram (the hub's own
 * liveness probe, never published) is taken. */
function takesDatagrams(path) {
  const program = "import socket, sys\nsocket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'', sys.argv[1])";
  try {
    execFileSync(process.env.HERALD_PYTHON ?? "python3", ["-c", program, path], { timeout: 10_000, stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Waits until the hub published the machine's `seq`-th event. */
function published(hub, machine, seq) {
  return waitFor(
    async () => (await getJson(hub, `/api/v1/topics/machine:${machine}/events`)).seq >= seq,
    `machine ${machine} reaches seq ${seq}`,
  );
}

test("the dashboard gets every machine in one initial, then state changes, and answers pings", async () => {
  const socket = join(tempDir("herald-sm-"), "statemachine-events.sock");
  const hub = await startHub({ args: ["--unix-socket", socket, "--heartbeat-interval", "300ms"] });
  await waitFor(() => takesDatagrams(socket), "the hub reads its socket");
  sendEvent(socket, "state_change", "worker-123", { state: "idle", previous_state: "starting" });
  await published(hub, "worker-123", 1);
  sendEvent(socket, "state_change", "worker-9", { state: "processing", data: { job_id: "task-456", progress: 50 } });
  await published(hub, "worker-9", 1);
  const events = [];
  const seed = seedContext({ handleStateEvent: (data) => events.push(data) });
  try {
    seed.run(seedSource("003-statemachine-client.js", [["ws://localhost:3002", `${wsBase(hub)}/compat/statemachine`]]));
    const initial = await waitFor(() => events.find((e) => e.type === "initial"), "the initial state");
    assert.equal(events[0], initial, "initial comes first");
    assert.deepEqual(
      initial.machines.map((m) => [m.id, m.current_state]),
      [["worker-123", "idle"], ["worker-9", "processing"]],
    );
    assert.equal(typeof initial.machines[0].last_activity, "number");
    const before = Date.now() / 1000;
    sendEvent(socket, "state_change", "worker-123", { state: "processing", previous_state: "idle", data: { job_id: "task-456" } });
    const change = await waitFor(() => events.find((e) => e.type === "state_change"), "a state change");
    assert.equal(change.machine_id, "worker-123");
    assert.equal(change.state, "processing");
    assert.equal(change.previous_state, "idle");
    assert.deepEqual(change.data, { job_id: "task-456" });
    assert.ok(Math.abs(change.timestamp - before) < 60, `timestamp in seconds: ${change.timestamp}`);
    // Pings are answered by the snippet, never handed to handleStateEvent.
    await waitFor(() => seed.sent.includes(JSON.stringify({ type: "pong" })), "the dashboard answers a ping");
    assert.ok(!events.some((e) => e.type === "ping"), "a ping reached handleStateEvent");
    // The seed's `refresh`: a fresh initial.
    seed.sockets[0].send(JSON.stringify({ type: "refresh" }));
    await waitFor(() => events.filter((e) => e.type === "initial").length === 2, "a fresh initial");
  } finally {
    seed.end();
  }
});

test("a machine with no server running keeps going: send_event fails silently", () => {
  const missing = join(tempDir("herald-sm-"), "nobody-listens.sock");
  sendEvent(missing, "state_change", "worker-1", { state: "idle" });
});
