// Browser tests: the example page (web-client/examples) in headless Chromium,
// talking to real `herald` processes. Run by `cargo xtask ci` (or
// `npm test` after `cargo xtask wasm` and `cargo build -p herald`).

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import { after, before, test } from "node:test";

import {
  getJson,
  launchBrowser,
  openExample,
  postJson,
  publish,
  serveStatic,
  sleep,
  startHub,
  startRedis,
  stopAll,
  stopHub,
  tempDir,
  waitForDemo,
  within,
} from "./harness.mjs";

let context;
let site;

before(async () => {
  site = await serveStatic();
  context = await launchBrowser();
});

after(async () => {
  await stopAll();
});

const isOpen = (demo) => demo.states.some((s) => s.state === "open");
const subscribedTo = (demo, topic) => demo.notices.some((n) => n.kind === "subscribed" && n.subscribed.topic === topic);

test("typed_events_arrive_in_the_page_in_seq_order", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { topics: "execution:exec_1" });
  await waitForDemo(page, "subscribed", subscribedTo, "execution:exec_1");

  for (let i = 1; i <= 3; i++) {
    await publish(hub, {
      topic: "execution:exec_1",
      event_type: "execution.progress",
      data: { progress: i * 25, message: `step ${i}` },
    });
  }
  const events = await waitForDemo(page, "three events", (demo) => demo.events.length >= 3 && demo.events);
  assert.deepEqual(
    events.map((e) => [e.topic, e.seq, e.event_type, e.data.progress]),
    [
      ["execution:exec_1", 1, "execution.progress", 25],
      ["execution:exec_1", 2, "execution.progress", 50],
      ["execution:exec_1", 3, "execution.progress", 75],
    ],
  );
  assert.equal(await page.locator("#events li").count(), 3);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("hub_killed_and_restarted_on_sqlite_page_gets_every_seq_once_after_growing_backoff", async (t) => {
  const db = join(tempDir("herald-sqlite-"), "herald.db");
  const args = ["--store", `sqlite:${db}`];
  let hub = await startHub({ args });
  const port = hub.port;
  const topic = "run:restart";
  const page = await openExample(context, site, hub, {
    topics: topic,
    initialDelay: "100",
    maxDelay: "3200",
    jitter: "0",
  });
  await waitForDemo(page, "subscribed", subscribedTo, topic);

  const N = 40;
  const KILL_AFTER = 15;
  let current = hub;
  const killed = deferred();
  // The producer: each event has a fixed id and is retried until the hub
  // (whichever process is up) accepts it; a retry of an event the dead hub
  // had stored must not be stored twice.
  const producer = (async () => {
    for (let i = 1; i <= N; i++) {
      const event = { topic, event_type: "task.progress", id: `restart-event-${i}`, data: { progress: i, i } };
      for (;;) {
        try {
          await publish(current, event);
          break;
        } catch {
          await sleep(50);
        }
      }
      if (i === KILL_AFTER) killed.resolve();
      await sleep(20);
    }
  })();

  await within(20_000, "the first events", killed.promise);
  const killedAt = await page.evaluate(() => performance.now());
  await stopHub(hub, "SIGKILL");
  // Synchronise on the page: three failed attempts, each waiting longer.
  await waitForDemo(
    page,
    "three reconnect attempts",
    (demo, since) => demo.states.filter((s) => s.state === "reconnecting" && s.at >= since).length >= 3,
    killedAt,
  );
  hub = await startHub({ port, args });
  current = hub;
  await within(60_000, "the producer", producer);

  const events = await waitForDemo(
    page,
    `all ${N} events`,
    (demo, n) => demo.events.length >= n && demo.events,
    N,
    30_000,
  );
  assert.deepEqual(
    events.map((e) => e.seq),
    Array.from({ length: N }, (_, k) => k + 1),
    "every seq 1..N, in order, once",
  );
  assert.deepEqual(
    events.map((e) => e.data.i),
    Array.from({ length: N }, (_, k) => k + 1),
  );
  const demo = await page.evaluate(() => ({ gaps: window.heraldDemo.gaps, states: window.heraldDemo.states }));
  assert.deepEqual(demo.gaps, []);
  const attempts = demo.states.filter((s) => s.state === "reconnecting" && s.at >= killedAt);
  assert.ok(attempts.length >= 3, JSON.stringify(attempts));
  assert.deepEqual(
    attempts.map((s) => s.attempt),
    attempts.map((_, k) => k + 1),
  );
  for (let k = 1; k < attempts.length; k++) {
    assert.ok(attempts[k].delay > attempts[k - 1].delay || attempts[k].delay === 3200, JSON.stringify(attempts));
  }
  assert.equal(attempts[0].delay, 100);
  t.diagnostic(`reconnect attempts after SIGKILL: ${attempts.map((s) => `#${s.attempt} ${s.delay} ms`).join(", ")}`);
  assert.equal(demo.states.at(-1).state, "open");
  await page.close();
  await stopHub(hub);
});

test("a_hub_that_stops_answering_is_detected_by_the_heartbeat_and_the_client_reconnects", async (t) => {
  const hub = await startHub();
  const topic = "machine:frozen";
  const page = await openExample(context, site, hub, {
    topics: topic,
    heartbeat: "300",
    initialDelay: "200",
    jitter: "0",
  });
  await waitForDemo(page, "subscribed", subscribedTo, topic);
  await publish(hub, { topic, event_type: "state.changed", data: { state: "running" } });
  await waitForDemo(page, "first event", (demo) => demo.events.length === 1);

  hub.child.kill("SIGSTOP");
  const stoppedAt = await page.evaluate(() => performance.now());
  let continued = false;
  try {
    // Three 300 ms heartbeats without an answer: ~1.2 s.
    const detectedAt = await waitForDemo(
      page,
      "heartbeat timeout",
      (demo, since) => demo.states.find((s) => s.state === "reconnecting" && s.at >= since)?.at,
      stoppedAt,
      10_000,
    );
    assert.ok(detectedAt - stoppedAt < 5_000, `detected after ${detectedAt - stoppedAt} ms`);
    t.diagnostic(`heartbeat detected the stopped hub after ${Math.round(detectedAt - stoppedAt)} ms`);
  } finally {
    hub.child.kill("SIGCONT");
    continued = true;
  }
  assert.ok(continued);
  await waitForDemo(
    page,
    "open again",
    (demo, since) => demo.states.some((s) => s.state === "open" && s.at >= since),
    stoppedAt,
    15_000,
  );
  await waitForDemo(page, "resubscribed", (demo, topic) =>
    demo.notices.filter((n) => n.kind === "subscribed" && n.subscribed.topic === topic).length >= 2, topic);
  await publish(hub, { topic, event_type: "state.changed", data: { state: "resumed", previous_state: "running" } });
  const events = await waitForDemo(page, "second event", (demo) => demo.events.length >= 2 && demo.events);
  assert.deepEqual(
    events.map((e) => [e.seq, e.data.state]),
    [
      [1, "running"],
      [2, "resumed"],
    ],
  );
  await page.close();
  await stopHub(hub);
});

test("an_approval_clicked_in_the_page_resolves_the_producers_long_poll", async (t) => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "task:t1" });
  await waitForDemo(page, "open", isOpen);
  await waitForDemo(page, "subscribed", subscribedTo, "task:t1");

  const { callback_id } = await postJson(hub, "/api/v1/approvals", {
    user_id: "u1",
    task_id: "t1",
    step: 2,
    step_result: { step: "deploy", message: "Deploy to production?", status: "waiting" },
    timeout_ms: 30_000,
  });
  assert.ok(callback_id);
  const decision = getJson(hub, `/api/v1/approvals/${callback_id}?wait_ms=20000`, 25_000);

  const approve = page.locator(`button.approve[data-callback-id="${callback_id}"]`);
  await approve.waitFor({ timeout: 10_000 });
  const requested = await waitForDemo(page, "approval.requested", (demo) =>
    demo.events.find((e) => e.event_type === "approval.requested"),
  );
  assert.equal(requested.data.callback_id, callback_id);
  const topics = await page.evaluate(() =>
    window.heraldDemo.events.filter((e) => e.event_type === "approval.requested").map((e) => e.topic),
  );
  t.diagnostic(`approval.requested arrived on: ${topics.join(", ")}`);
  assert.equal(requested.data.step_result.message, "Deploy to production?");
  await approve.click({ timeout: 5_000 });

  const answer = await within(25_000, "the long-poll", decision);
  assert.equal(answer.status, "approved");
  assert.equal(answer.proceed, true);
  assert.equal(answer.decided_by, "u1");
  assert.equal(answer.feedback, "approved from the example page");
  assert.deepEqual(await page.evaluate(() => window.heraldDemo.errors), []);
  await page.close();
  await stopHub(hub);
});

test("an_approval_pending_before_the_page_loads_is_shown_from_the_users_snapshot_and_answered", async () => {
  const hub = await startHub();
  const { callback_id } = await postJson(hub, "/api/v1/approvals", {
    user_id: "u1",
    task_id: "t4",
    step: 1,
    step_result: { step: "merge", message: "Merge the branch?", status: "waiting" },
    timeout_ms: 30_000,
  });
  const decision = getJson(hub, `/api/v1/approvals/${callback_id}?wait_ms=20000`, 25_000);
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  const approve = page.locator(`button.approve[data-callback-id="${callback_id}"]`);
  await approve.waitFor({ timeout: 10_000 });
  await approve.click({ timeout: 5_000 });
  const answer = await within(25_000, "the long-poll", decision);
  assert.equal(answer.status, "approved");
  assert.equal(answer.decided_by, "u1");
  await page.close();
  await stopHub(hub);
});

test("a_page_subscribed_to_its_user_and_global_gets_what_they_were_sent_while_it_was_offline_once", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "user:u1,global" });
  await waitForDemo(page, "subscribed", subscribedTo, "user:u1");
  await postJson(hub, "/api/v1/users/u1/messages", { event_type: "note.posted", data: { n: 1 } });
  await waitForDemo(page, "the first message", (demo) => demo.events.some((e) => e.event_type === "note.posted"));
  await page.evaluate(() => window.heraldDemo.client.disconnect());
  // While it is away, a pending approval gives `user:u1` a snapshot ahead of what it missed.
  await postJson(hub, "/api/v1/users/u1/messages", { event_type: "note.posted", data: { n: 2 } });
  await postJson(hub, "/api/v1/broadcast", { event_type: "system.notice", data: { n: 3 } });
  await postJson(hub, "/api/v1/approvals", {
    user_id: "u1",
    task_id: "t5",
    step: 1,
    step_result: { step: "ship", message: "Ship?", status: "waiting" },
    timeout_ms: 30_000,
  });
  await page.evaluate(() => window.heraldDemo.client.connect());
  await waitForDemo(page, "what was missed", (demo) => demo.events.some((e) => e.event_type === "system.notice"));
  // The approval comes in the snapshot (the page shows it), not again as an event.
  await page.locator("div.approval").waitFor({ timeout: 10_000 });
  const seen = await page.evaluate(() =>
    window.heraldDemo.events.filter((e) => e.topic !== "task:t5").map((e) => `${e.topic}#${e.seq} ${e.event_type}`),
  );
  assert.equal(new Set(seen).size, seen.length, `each event once: ${seen}`);
  assert.ok(seen.some((line) => line.startsWith("user:u1#2 note.posted")), `${seen}`);
  assert.ok(seen.some((line) => line.startsWith("global#") && line.endsWith("system.notice")), `${seen}`);
  await page.close();
  await stopHub(hub);
});

test("commands_resolve_when_the_hub_takes_them_and_reject_with_its_refusal", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "task:t2" });
  await waitForDemo(page, "open", isOpen);
  const { callback_id } = await postJson(hub, "/api/v1/approvals", {
    user_id: "u1",
    task_id: "t2",
    step: 1,
    step_result: { step: "ship", message: "Ship?", status: "waiting" },
    timeout_ms: 30_000,
  });
  const outcome = (call) =>
    page.evaluate(async (call) => {
      const client = window.heraldDemo.client;
      try {
        await (call.kind === "confirm" ? client.confirm(call.id, call.proceed ?? true, "yes") : client.cancel({ task_id: call.id }));
        return { ok: true };
      } catch (error) {
        return { ok: false, name: error.name, code: error.code, message: error.message };
      }
    }, call);
  assert.deepEqual(await outcome({ kind: "confirm", id: callback_id }), { ok: true });
  // The same answer again (resent after a lost link) is taken; another is refused.
  assert.deepEqual(await outcome({ kind: "confirm", id: callback_id }), { ok: true });
  const again = await outcome({ kind: "confirm", id: callback_id, proceed: false });
  assert.equal(again.ok, false);
  assert.equal(again.name, "RefusedError");
  assert.equal(again.code, "conflict");
  const unknown = await outcome({ kind: "confirm", id: "no-such-approval" });
  assert.equal(unknown.code, "not_found");
  assert.deepEqual(await outcome({ kind: "cancel", id: "t2" }), { ok: true });
  await page.close();
  await stopHub(hub);
});

test("a_subscription_the_hub_refuses_for_any_reason_rejects_its_ready", async () => {
  const hub = await startHub({ args: ["--max-subscriptions", "2"] });
  const page = await openExample(context, site, hub, { user: "u1", topics: "task:t3" });
  await waitForDemo(page, "open", isOpen);
  // The example page holds one subscription: a second fits, a third does not.
  const outcome = await page.evaluate(async () => {
    const client = window.heraldDemo.client;
    const fits = client.subscribe("run:fits");
    await fits.ready();
    const over = client.subscribe("run:over");
    try {
      await over.ready();
      return { ok: true };
    } catch (error) {
      return { ok: false, error: error.name, code: error.code, state: over.state.state };
    }
  });
  assert.deepEqual(outcome, { ok: false, error: "RefusedError", code: "invalid_request", state: "refused" });
  await page.close();
  await stopHub(hub);
});

test("a_client_closed_for_good_rejects_the_ready_of_the_subscriptions_it_holds_and_of_new_ones", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "open", isOpen);
  const outcome = await page.evaluate(async () => {
    const Client = window.heraldDemo.client.constructor;
    // Nothing listens on port 9: one attempt, and the client is closed for good.
    const dead = new Client("ws://127.0.0.1:9", { maxReconnectAttempts: 1, initialReconnectDelay: 10, jitter: false });
    const held = dead.subscribe("run:held");
    const heldReady = held.ready().then(
      () => "resolved",
      (error) => error.message,
    );
    const connected = await dead.connect().then(
      () => "resolved",
      (error) => error.message,
    );
    const later = await dead
      .subscribe("run:later")
      .ready()
      .then(
        () => "resolved",
        (error) => error.message,
      );
    const result = { connected, held: await heldReady, later, state: held.state.state };
    dead.dispose();
    return result;
  });
  assert.deepEqual(outcome, {
    connected: "connection attempts exhausted",
    held: "connection attempts exhausted",
    later: "connection attempts exhausted",
    state: "pending",
  });
  await page.close();
  await stopHub(hub);
});

/** An HS256 JWT for user `sub`, allowed `topics`, expiring in `seconds`. */
function token(secret, sub, topics, seconds) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, topics, exp: Math.floor(Date.now() / 1000) + seconds })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

test("subscriptions_made_before_connect_are_each_settled_by_the_hubs_answer_to_their_own_frame", async () => {
  const secret = "browser-test-secret-0123456789abcdef";
  const hub = await startHub({ args: ["--jwt-secret", secret, "--max-subscriptions", "2"] });
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1", token: token(secret, "u1", ["run:r1"], 600) });
  await waitForDemo(page, "open", isOpen);
  const fresh = token(secret, "u1", ["run:r1", "run:r2", "run:r3"], 600);
  const outcome = await page.evaluate(
    async ({ url, fresh }) => {
      const { HeraldClient } = await import("/dist/index.js");
      const client = new HeraldClient(url, { token: fresh });
      // Made before `connect()`, as the README's example does: `run:r10`
      // is not allowed (and holds `run:r1` in its name), `run:r3` is one
      // subscription over the hub's limit of 2.
      const subscriptions = ["run:r10", "run:r1", "run:r2", "run:r3"].map((topic) => client.subscribe(topic));
      client.connect();
      const settled = (subscription) =>
        Promise.race([
          subscription.ready().then(
            () => "subscribed",
            () => `refused: ${subscription.state.error?.code}`,
          ),
          new Promise((resolve) => setTimeout(() => resolve(`still ${subscription.state.state}`), 5_000)),
        ]);
      const outcome = await Promise.all(subscriptions.map(settled));
      client.dispose();
      return outcome;
    },
    { url: hub.url, fresh },
  );
  assert.deepEqual(outcome, ["refused: forbidden", "subscribed", "subscribed", "refused: invalid_request"]);
  await page.close();
  await stopHub(hub);
});

test("two_subscriptions_on_one_topic_with_different_filters_each_get_their_own_events", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "open", isOpen);
  await page.evaluate(async () => {
    const client = window.heraldDemo.client;
    window.filtered = { tasks: [], steps: [] };
    const tasks = client.subscribe("run:f", { filter: { types: ["task.*"] } });
    tasks.on("*", (e) => window.filtered.tasks.push(e.event_type));
    const steps = client.subscribe("run:f", { filter: { types: ["step.*"] } });
    steps.on("*", (e) => window.filtered.steps.push(e.event_type));
    await Promise.all([tasks.ready(), steps.ready()]);
  });
  for (const event_type of ["task.started", "step.completed", "log.line", "task.done"]) {
    await publish(hub, { topic: "run:f", event_type, data: {} });
  }
  await page.waitForFunction(() => window.filtered.tasks.length === 2 && window.filtered.steps.length === 1, null, { timeout: 10_000 });
  const filtered = await page.evaluate(() => window.filtered);
  assert.deepEqual(filtered, { tasks: ["task.started", "task.done"], steps: ["step.completed"] });
  await page.close();
  await stopHub(hub);
});

test("a_subscription_ended_while_another_lists_its_topic_lets_none_of_its_own_events_through_any_more", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "open", isOpen);
  await page.evaluate(async () => {
    const client = window.heraldDemo.client;
    window.ended = [];
    client.on("*", (e) => {
      if (e.topic === "run:u") window.ended.push(e.event_type);
    });
    const tasks = client.subscribe("run:u", { filter: { types: ["task.*"] } });
    const steps = client.subscribe("run:u", { filter: { types: ["step.*"] } });
    await Promise.all([tasks.ready(), steps.ready()]);
    // The hub keeps sending step events (one filter per topic and
    // connection, widened for both) until the next connection.
    await steps.unsubscribe();
  });
  for (const event_type of ["step.completed", "task.started", "step.failed", "task.done"]) {
    await publish(hub, { topic: "run:u", event_type, data: {} });
  }
  await page.waitForFunction(() => window.ended.includes("task.done"), null, { timeout: 10_000 });
  assert.deepEqual(await page.evaluate(() => window.ended), ["task.started", "task.done"]);
  await page.close();
  await stopHub(hub);
});

test("subscriptions_on_one_topic_keep_their_own_events_after_a_reconnect_whichever_filter_came_first", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "open", isOpen);
  await page.evaluate(async () => {
    const client = window.heraldDemo.client;
    window.filtered = { urgent: [], progress: [] };
    // The narrower filter first: the hub keeps one filter per topic and
    // connection, and a reconnect sends the subscriptions again.
    const urgent = client.subscribe("run:g", { filter: { min_priority: "high" } });
    urgent.on("*", (e) => window.filtered.urgent.push(`${e.event_type}/${e.priority}`));
    const progress = client.subscribe("run:g", { filter: { types: ["task.progress"] } });
    progress.on("*", (e) => window.filtered.progress.push(`${e.event_type}/${e.priority}`));
    await Promise.all([urgent.ready(), progress.ready()]);
    await client.disconnect();
    await client.connect();
  });
  // Run in the page: both subscriptions got `n` critical events.
  const both = (n) =>
    window.filtered.urgent.filter((e) => e.endsWith("/critical")).length >= n &&
    window.filtered.progress.filter((e) => e.endsWith("/critical")).length >= n;
  // A marker both filters let through, once the resubscriptions are in.
  await publish(hub, { topic: "run:g", event_type: "task.progress", priority: "critical", data: { progress: 0 } });
  await page.waitForFunction(both, 1, { timeout: 10_000 });
  for (const [event_type, priority] of [
    ["task.progress", "normal"],
    ["log.line", "high"],
    ["log.line", "low"],
    ["task.progress", "critical"],
  ]) {
    await publish(hub, { topic: "run:g", event_type, priority, data: { progress: 1 } });
  }
  await page.waitForFunction(both, 2, { timeout: 10_000 });
  const filtered = await page.evaluate(() => window.filtered);
  assert.deepEqual(filtered, {
    urgent: ["task.progress/critical", "log.line/high", "task.progress/critical"],
    progress: ["task.progress/critical", "task.progress/normal", "task.progress/critical"],
  });
  await page.close();
  await stopHub(hub);
});

test("a_client_disposed_while_its_module_loads_rejects_its_connect_and_leaves_no_unhandled_error", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "open", isOpen);
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  const outcome = await page.evaluate(async (url) => {
    const { HeraldClient } = await import("/dist/index.js");
    const client = new HeraldClient(url);
    const connected = client.connect();
    const told = client.setToken("t");
    client.dispose();
    const settle = (promise) =>
      Promise.race([
        promise.then(
          () => "resolved",
          (error) => error.message,
        ),
        new Promise((resolve) => setTimeout(() => resolve("pending"), 3_000)),
      ]);
    return { connected: await settle(connected), told: await settle(told) };
  }, hub.url);
  assert.deepEqual(outcome, { connected: "HeraldClient was disposed", told: "HeraldClient was disposed" });
  await sleep(200);
  assert.deepEqual(errors, []);
  await page.close();
  await stopHub(hub);
});

test("a_token_set_before_the_old_one_expires_keeps_the_connection_open_past_its_expiry", async () => {
  const secret = "browser-test-secret-0123456789abcdef";
  const hub = await startHub({ args: ["--jwt-secret", secret] });
  const page = await openExample(context, site, hub, {
    user: "u1",
    topics: "run:r1",
    token: token(secret, "u1", ["run:*"], 3),
  });
  await waitForDemo(page, "subscribed to run:r1", subscribedTo, "run:r1");
  await page.evaluate((fresh) => window.heraldDemo.client.setToken(fresh), token(secret, "u1", ["run:*"], 600));
  // Past the first token's expiry (exp has whole seconds, checked with no leeway).
  await sleep(4_500);
  await publish(hub, { topic: "run:r1", event_type: "step.completed", data: { step: 1 } });
  await waitForDemo(page, "the event after the first token expired", (demo) => demo.events.some((e) => e.topic === "run:r1"));
  const states = await page.evaluate(() => window.heraldDemo.states.map((s) => s.state));
  assert.deepEqual(states.filter((state) => state !== "open" && state !== "connecting"), [], `states: ${states}`);
  await page.close();
  await stopHub(hub);
});

test("an_expired_token_is_reported_as_close_code_4001_and_a_token_set_then_reconnects", async () => {
  const secret = "browser-test-secret-0123456789abcdef";
  const hub = await startHub({ args: ["--jwt-secret", secret] });
  const page = await openExample(context, site, hub, {
    user: "u1",
    topics: "run:r1",
    token: token(secret, "u1", ["run:*"], 2),
  });
  await waitForDemo(page, "subscribed to run:r1", subscribedTo, "run:r1");
  await waitForDemo(page, "a reconnect after the token expired", (demo) =>
    demo.states.some((s) => s.state === "reconnecting"),
  );
  const reconnecting = await page.evaluate(() => window.heraldDemo.states.find((s) => s.state === "reconnecting"));
  assert.equal(reconnecting.code, 4001, JSON.stringify(reconnecting));
  // The app hands over a fresh token: the next attempt offers it and gets in.
  await page.evaluate((fresh) => window.heraldDemo.client.setToken(fresh), token(secret, "u1", ["run:*"], 600));
  await publish(hub, { topic: "run:r1", event_type: "step.completed", data: { step: 1 } });
  await waitForDemo(page, "the event after the fresh token", (demo) => demo.events.some((e) => e.topic === "run:r1"));
  await page.close();
  await stopHub(hub);
});

test("a_frame_over_the_hubs_limit_is_refused_in_the_page_and_the_connection_carries_on", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "subscribed to run:r1", subscribedTo, "run:r1");
  const outcome = await page.evaluate(async () => {
    const client = window.heraldDemo.client;
    const topics = Array.from({ length: 3000 }, (_, i) => `run:${String(i).padStart(30, "0")}`);
    const big = client.subscribe(topics);
    const ready = await big.ready().then(
      () => "resolved",
      (error) => error.message,
    );
    const feedback = await client.confirm("cb-1", true, "A".repeat(70_000)).then(
      () => "resolved",
      (error) => error.message,
    );
    return { ready, state: big.state.state, code: big.state.error?.code, feedback };
  });
  assert.equal(outcome.state, "refused");
  assert.equal(outcome.code, "too_large");
  assert.match(outcome.ready, /over the hub's frame limit of 65536/);
  assert.match(outcome.feedback, /over the hub's frame limit of 65536/);
  // The connection was never closed, and the page's own subscription still delivers.
  await publish(hub, { topic: "run:r1", event_type: "step.completed", data: { step: 1 } });
  await waitForDemo(page, "the event after the refusals", (demo) => demo.events.some((e) => e.topic === "run:r1"));
  const states = await page.evaluate(() => window.heraldDemo.states.map((s) => s.state));
  assert.deepEqual(states, ["connecting", "open"]);
  await page.close();
  await stopHub(hub);
});

test("a_subscription_over_the_frame_limit_the_hubs_welcome_gives_is_refused_without_a_reconnect_loop", async () => {
  // The page's client keeps its default `maxFrameBytes` (64 KiB); the hub
  // reads frames of at most 1 KiB and says so in its `welcome`.
  const hub = await startHub({ args: ["--max-frame-size", "1KiB"] });
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "open", isOpen);
  const outcome = await page.evaluate(async (url) => {
    const { HeraldClient } = await import("/dist/index.js");
    const client = new HeraldClient(url);
    const states = [];
    client.onState((s) => states.push(s.state));
    const topics = Array.from({ length: 200 }, (_, i) => `run:${String(i).padStart(20, "0")}`);
    const settled = (subscription) =>
      Promise.race([
        subscription.ready().then(
          () => "subscribed",
          (error) => `refused: ${subscription.state.error?.code}: ${error.message}`,
        ),
        new Promise((resolve) => setTimeout(() => resolve(`still ${subscription.state.state}`), 5_000)),
      ]);
    // Made before `connect()`: checked against the client's own limit only.
    const big = client.subscribe(topics);
    const small = client.subscribe("run:small");
    client.connect();
    const before = await Promise.all([settled(big), settled(small)]);
    // Once the hub has said its limit, a subscription over it is refused at once.
    const after = await settled(client.subscribe(topics));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const seen = [...states];
    client.dispose();
    return { before, after, states: seen };
  }, hub.url);
  assert.match(outcome.before[0], /^refused: too_large: .*over the hub's frame limit of 1024/);
  assert.equal(outcome.before[1], "subscribed");
  assert.match(outcome.after, /^refused: too_large: .*over the hub's frame limit of 1024/);
  // The hub never closed the connection for a frame too large.
  assert.deepEqual(outcome.states, ["connecting", "open"]);
  await page.close();
  await stopHub(hub);
});

test("a_browser_websocket_that_sends_a_frame_over_the_hubs_limit_reads_close_code_1009", async () => {
  for (const args of [[], ["--compression"]]) {
    const hub = await startHub({ args: ["--max-frame-size", "1KiB", ...args] });
    const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
    await waitForDemo(page, "open", isOpen);
    // A plain WebSocket, as a frontend without the client would open it:
    // the rest of its frame is still arriving when the hub closes. Random
    // text, so that a compressed frame is as large as the text.
    const closes = await page.evaluate(async (url) => {
      const letters = "abcdefghijklmnopqrstuvwxyz0123456789";
      const random = (n) => {
        const bytes = new Uint8Array(n);
        for (let at = 0; at < n; at += 65_536) crypto.getRandomValues(bytes.subarray(at, Math.min(n, at + 65_536)));
        return Array.from(bytes, (b) => letters[b % letters.length]).join("");
      };
      const closes = [];
      for (const size of [2_000, 20_000, 200_000]) {
        const topic = `run:${random(size)}`;
        closes.push(
          await new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onmessage = () => ws.send(JSON.stringify({ action: "subscribe", topics: [topic] }));
            ws.onclose = (e) => resolve(`${e.code} ${e.reason}`);
            setTimeout(() => resolve("still open"), 5_000);
          }),
        );
      }
      return closes;
    }, `${hub.url.replace(/^http/, "ws")}/ws`);
    assert.deepEqual(closes, ["1009 frame too large", "1009 frame too large", "1009 frame too large"], `hub ${args.join(" ")}`);
    await page.close();
    await stopHub(hub);
  }
});

test("a_disposed_client_says_it_is_closed_and_refuses_to_connect_and_confirm_names_a_missing_id", async () => {
  const hub = await startHub();
  const page = await openExample(context, site, hub, { user: "u1", topics: "run:r1" });
  await waitForDemo(page, "open", isOpen);
  const outcome = await page.evaluate(async () => {
    const client = window.heraldDemo.client;
    const missing = await client.confirm(undefined, true).then(
      () => "resolved",
      (error) => `${error.name}: ${error.message}`,
    );
    client.dispose();
    const connected = await client.connect().then(
      () => "resolved",
      (error) => error.message,
    );
    return { missing, state: client.state, connected };
  });
  assert.match(outcome.missing, /^TypeError: confirm: callbackId/);
  assert.deepEqual(outcome.state, { state: "closed", reason: "disconnected" });
  assert.equal(outcome.connected, "HeraldClient was disposed");
  await page.close();
  await stopHub(hub);
});

test("checkpoints_persisted_in_session_storage_resume_after_a_reload", async () => {
  const hub = await startHub();
  const topic = "execution:reload";
  const page = await openExample(context, site, hub, { topics: topic, persist: "1" });
  await waitForDemo(page, "subscribed", subscribedTo, topic);
  for (let i = 1; i <= 3; i++) await publish(hub, { topic, event_type: "execution.progress", data: { progress: i } });
  await waitForDemo(page, "three events", (demo) => demo.events.length === 3);
  // Published while the page is away: the reloaded page must replay exactly these.
  await page.evaluate(() => window.heraldDemo.client.disconnect());
  await waitForDemo(page, "closed", (demo) => demo.states.at(-1).state === "closed");
  for (let i = 4; i <= 5; i++) await publish(hub, { topic, event_type: "execution.progress", data: { progress: i } });
  await page.reload();
  const events = await waitForDemo(
    page,
    "replay complete",
    (demo) => demo.notices.some((n) => n.kind === "replay_complete") && demo.events.length >= 2 && demo.events,
  );
  assert.deepEqual(
    events.map((e) => e.seq),
    [4, 5],
  );
  await page.close();
  await stopHub(hub);
});

function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

test("a_draining_hubs_retry_after_ms_is_the_pages_first_reconnect_delay", async () => {
  const hub = await startHub({ args: ["--drain-window", "1s"] });
  const page = await openExample(context, site, hub, { topics: "run:drain", initialDelay: "50", maxDelay: "30000" });
  await waitForDemo(page, "subscribed", subscribedTo, "run:drain");
  hub.child.kill("SIGTERM");
  const notice = await waitForDemo(page, "the shutdown notice", (demo) =>
    demo.events.find((e) => e.event_type === "system.shutdown"),
  );
  const hint = notice.data.retry_after_ms;
  assert.ok(Number.isInteger(hint) && hint >= 0 && hint <= 1000, JSON.stringify(notice));
  const waiting = await waitForDemo(page, "reconnecting after the drain", (demo) =>
    demo.states.find((s) => s.state === "reconnecting"),
  );
  // Not the backoff's first delay (at most 50 ms): the hub's hint.
  assert.equal(waiting.attempt, 1);
  assert.equal(waiting.delay, hint);
  await page.close();
  await stopHub(hub);
});

test("a_compressing_hub_serves_the_page_over_permessage_deflate", async () => {
  const hub = await startHub({ args: ["--compression"] });
  const page = await openExample(context, site, hub, { topics: "run:llm" });
  await waitForDemo(page, "subscribed", subscribedTo, "run:llm");
  const text = Array.from({ length: 400 }, (_, i) => `token ${i} of the model's long answer;`).join(" ");
  await publish(hub, { topic: "run:llm", event_type: "agent.message", data: { role: "assistant", text } });
  await publish(hub, { topic: "run:llm", event_type: "step.started", data: { step: 1 } });
  const events = await waitForDemo(page, "both events", (demo) => demo.events.length >= 2 && demo.events);
  assert.deepEqual(
    events.map((e) => [e.seq, e.event_type]),
    [
      [1, "agent.message"],
      [2, "step.started"],
    ],
  );
  assert.equal(events[0].data.text, text);
  // Chromium offered permessage-deflate and the large event went compressed.
  const metrics = await (await fetch(`${hub.url}/metrics`)).text();
  const deflated = Number(/^herald_bytes_deflated_total (\S+)$/m.exec(metrics)?.[1]);
  assert.ok(deflated > 0 && deflated < text.length / 2, `herald_bytes_deflated_total ${deflated}`);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("with_a_failover_node_the_page_resumes_on_it_when_its_node_is_killed", async () => {
  const redis = await startRedis();
  const first = await startHub({ args: ["--store", redis.url] });
  const second = await startHub({ args: ["--store", redis.url] });
  const page = await openExample(context, site, first, {
    topics: "run:nodes",
    failover: second.url,
    initialDelay: "50",
    maxDelay: "500",
  });
  await waitForDemo(page, "subscribed", subscribedTo, "run:nodes");
  await publish(first, { topic: "run:nodes", event_type: "step.started", data: { n: 1 } });
  await waitForDemo(page, "the first event", (demo) => demo.events.length >= 1);
  await stopHub(first);
  // Published on the node that stays while the page has no connection.
  await publish(second, { topic: "run:nodes", event_type: "step.progress", data: { n: 2 } });
  await publish(second, { topic: "run:nodes", event_type: "step.completed", data: { n: 3 } });
  const events = await waitForDemo(page, "every event, on the other node", (demo) => demo.events.length >= 3 && demo.events);
  assert.deepEqual(
    events.map((e) => [e.seq, e.data.n]),
    [
      [1, 1],
      [2, 2],
      [3, 3],
    ],
  );
  // Chromium logs the refused attempts on the killed node, if any.
  assert.deepEqual(
    page.errors.map(String).filter((e) => !e.includes("ERR_CONNECTION_REFUSED")),
    [],
  );
  await page.close();
  await stopHub(second);
});
