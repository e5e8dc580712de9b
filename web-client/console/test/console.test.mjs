// The console in headless Chromium against real `herald` processes, fed by
// the example producer (python-client/examples/workflow.py): every panel is
// opened and asserted on. Run by `cargo xtask ci` (or `cargo xtask console
// --test`). With CONSOLE_SCREENSHOTS=DIR, each panel is also photographed
// (light and dark, 1280×800 and phone width) into DIR.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { getJson, launchBrowser, publish, postJson, sleep, startHub, startRedis, stopAll, stopHub, within } from "../../test/harness.mjs";
import { startProducer } from "./producer.mjs";

const SHOTS = process.env.CONSOLE_SCREENSHOTS;
const VIEWS = [
  { name: "desktop", width: 1280, height: 800 },
  { name: "phone", width: 390, height: 844 },
];

let context;

before(async () => {
  context = await launchBrowser();
});

after(async () => {
  await stopAll();
});

/** Opens the console at `hash` and records page errors; `setup` runs on the page before it loads. */
async function openConsole(hub, hash = "#/overview", setup = async () => {}) {
  const page = await context.newPage();
  await setup(page);
  await page.setViewportSize({ width: 1280, height: 800 });
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") page.errors.push(message.text());
  });
  await page.goto(`${hub.url}/${hash}`);
  return page;
}

async function go(page, hash) {
  await page.evaluate((hash) => (location.hash = hash), hash);
}

const live = (page) => page.waitForSelector('[data-connection-state="open"]', { timeout: 15_000 });

/** Waits until `selector` matches in the page (bounded). */
function seen(page, selector, timeout = 15_000) {
  return page.waitForSelector(selector, { timeout, state: "attached" });
}

/** Screenshots of the page as it is now, in every view and scheme, when CONSOLE_SCREENSHOTS is set. */
async function shoot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  for (const view of VIEWS) {
    await page.setViewportSize({ width: view.width, height: view.height });
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      // Two frames: layout and the charts' resize observers settle.
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      await page.screenshot({ path: join(SHOTS, `${name}-${view.name}-${scheme}.png`), fullPage: true });
    }
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.emulateMedia({ colorScheme: "light" });
}

const node = (id, status) => `g.dag-node[data-node="${id}"][data-status="${status}"]`;

test("every_panel_follows_a_run_answers_its_approval_and_steers_its_producer", async () => {
  const hub = await startHub({ args: ["--metrics-interval", "250ms"] });
  const page = await openConsole(hub, "#/runs/run:t1");
  await live(page);
  await seen(page, "text=No DAG yet");

  // Runs: the DAG follows the producer's events as they arrive.
  const producer = startProducer(hub, ["--run", "t1", "--delay", "0.15", "--user", "operator"]);
  for (const [id, status] of [
    ["plan", "running"],
    ["plan", "completed"],
    ["research", "running"],
    ["write", "completed"],
    ["review", "running"],
  ]) {
    await seen(page, node(id, status), 20_000);
  }
  const waiting = await producer.next("that it waits for approval", (l) => l.waiting === "approval");
  for (const id of ["plan", "research", "analyse", "write"]) await seen(page, node(id, "completed"));
  assert.equal(await page.locator(node("review", "running")).count(), 1);
  await seen(page, 'li[data-step="analyse"][data-status="completed"]');
  await seen(page, 'li[data-step="review"][data-status="running"]');
  assert.equal(await page.locator('[data-cost="total_usd"]').textContent(), "$0.0300");
  assert.equal(await page.locator('[data-cost="tokens"]').textContent(), "15,000");
  await seen(page, '[data-file="report.md"]');
  assert.ok((await page.locator('li[data-kind="tool_call"]').count()) >= 2, "tool calls are listed");
  assert.match(await page.locator(".agents").textContent(), /researcher.*web_search/s);
  await seen(page, `.run-approvals article[data-callback="${waiting.callback_id}"]`);
  await seen(page, '[data-run-status="running"]');

  // Pause and resume reach the producer as control.pause / control.resume.
  await page.getByRole("button", { name: "Pause" }).click();
  await producer.next("control.pause", (l) => l.control === "pause");
  await seen(page, '[data-run-status="paused"]');
  await shoot(page, "run");
  await page.getByRole("button", { name: "Resume" }).click();
  await producer.next("control.resume", (l) => l.control === "resume");
  await seen(page, '[data-run-status="running"]');

  // Approvals: the inbox shows the request; approving it answers the producer's long-poll.
  await seen(page, '.badge[data-pending="1"]');
  await go(page, "#/approvals");
  const card = page.locator(`article[data-callback="${waiting.callback_id}"]`);
  await card.waitFor({ timeout: 10_000 });
  assert.match(await card.textContent(), /Publish the report\?/);
  assert.match(await card.locator(".countdown").textContent(), /in \d+ m \d+ s — then it stops by default/);
  await shoot(page, "approvals");
  await card.getByLabel("Feedback").fill("ship it");
  await card.getByRole("button", { name: "Approve" }).click();
  const decision = await producer.next("the decision", (l) => l.decision !== undefined);
  assert.deepEqual(decision, { decision: "approved", proceed: true, feedback: "ship it" });
  await seen(page, "text=Nothing waits for a decision.");
  await go(page, "#/approvals/history");
  // The decision's event shows the row at once, its reach unknown ("?")
  // until History's read answers with it.
  const row = page.locator(`tr[data-callback="${waiting.callback_id}"]`, { hasText: /\d+ connections/ });
  await row.waitFor({ timeout: 10_000 });
  assert.match(await row.textContent(), /approved.*proceed.*console.*\d+ connections.*ship it/s);
  await shoot(page, "approvals-history");

  // The run completes.
  await go(page, "#/runs/run:t1");
  await seen(page, '[data-run-status="completed"]');
  await seen(page, node("review", "completed"));
  assert.deepEqual(await producer.next("the outcome", (l) => l.done !== undefined), { done: "completed" });
  assert.equal(await producer.exited, 0);

  // Topics: every topic with its seq; a topic's history pages, its snapshot, and a filtered live tail.
  await postJson(
    hub,
    "/api/v1/events",
    Array.from({ length: 60 }, (_, i) => ({ topic: "load:t", event_type: "step.progress", key: `k${i % 3}`, data: { progress: i } })),
  );
  await go(page, "#/topics");
  const run = (await getJson(hub, "/api/v1/topics")).topics.find((t) => t.topic === "run:t1");
  await seen(page, `tr[data-topic="run:t1"] td[data-col="seq"]:text-is("${run.seq}")`);
  await seen(page, 'tr[data-topic="load:t"] td[data-col="seq"]:text-is("60")');
  await shoot(page, "topics");
  await page.locator('tr[data-topic="load:t"] a', { hasText: "load:t" }).click();
  await seen(page, "table.history tr[data-seq='11']");
  assert.equal(await page.locator("table.history tbody tr").count(), 50);
  await page.getByRole("button", { name: "Older" }).click();
  await seen(page, "table.history tr[data-seq='1']");
  assert.equal(await page.locator("table.history tbody tr").count(), 60);
  assert.equal(await page.locator("table.snapshot tbody tr").count(), 3);
  await page.waitForSelector("text=Waiting for events…");
  await publish(hub, { topic: "load:t", event_type: "task.progress", data: { progress: 1 } });
  await publish(hub, { topic: "load:t", event_type: "step.completed", priority: "high", data: { step: "x" } });
  await seen(page, "table.live-tail tr[data-seq='62']");
  assert.equal(await page.locator("table.live-tail tr[data-seq='61']").count(), 1);
  await page.getByLabel("Type pattern").fill("step.*");
  await page.waitForFunction(() => !document.querySelector("table.live-tail tr[data-seq='61']"), null, { timeout: 5000 });
  assert.equal(await page.locator("table.live-tail tr[data-seq='62']").count(), 1);
  await page.getByLabel("Type pattern").fill("");
  await page.getByLabel("At least").selectOption("high");
  await page.waitForFunction(() => !document.querySelector("table.live-tail tr[data-seq='61']"), null, { timeout: 5000 });
  assert.equal(await page.locator("table.live-tail tr[data-seq='62']").count(), 1);
  await shoot(page, "topic");

  // Connections: another client shows up, and Disconnect closes it with 4500.
  const visitor = await context.newPage();
  await visitor.goto(`${hub.url}/console/config`);
  await visitor.evaluate((url) => {
    window.visitorClosed = new Promise((resolve) => {
      const ws = new WebSocket(`${url.replace("http", "ws")}/ws?user_id=visitor&topics=global`);
      ws.onclose = (event) => resolve(event.code);
    });
  }, hub.url);
  await go(page, "#/connections");
  const visitorRow = page.locator('tr[data-user="visitor"]');
  await visitorRow.waitFor({ timeout: 10_000 });
  assert.match(await visitorRow.textContent(), /global/);
  assert.match(await visitorRow.textContent(), /127\.0\.0\.1/);
  await seen(page, "tr .tag:text-is('this console')");
  await shoot(page, "connections");
  await visitorRow.getByRole("button", { name: /Disconnect/ }).click();
  assert.equal(await within(10_000, "the visitor to be closed", visitor.evaluate(() => window.visitorClosed)), 4500);
  await page.waitForFunction(() => !document.querySelector('tr[data-user="visitor"]'), null, { timeout: 10_000 });
  await visitor.close();

  // Publish: the JSON is checked against the chosen type's payload before it is sent.
  await go(page, "#/publish");
  await page.getByLabel("Topic").fill("run:pub");
  await page.getByLabel("Event type").fill("execution.progress");
  await page.locator("textarea[name=data]").fill('{"progress": "most"}');
  await seen(page, "#data-check.error-text");
  assert.match(await page.locator("#data-check").textContent(), /data does not match the payload/);
  assert.equal(await page.getByRole("button", { name: "Publish" }).isDisabled(), true);
  await page.locator("textarea[name=data]").fill('{"progress": 80, "message": "from the console"}');
  await seen(page, "#data-check.ok-text");
  await shoot(page, "publish");
  await page.getByRole("button", { name: "Publish" }).click();
  await seen(page, "[data-receipt-seq='1']");
  const published = await getJson(hub, "/api/v1/topics/run:pub/events?since=0");
  assert.deepEqual(published.events.map((e) => [e.event_type, e.data]), [["execution.progress", { progress: 80, message: "from the console" }]]);
  await page.getByLabel("Event type").fill("my.custom_type");
  await page.locator("textarea[name=data]").fill('["any", "json"]');
  await seen(page, "#data-check.ok-text");

  // Overview: the hub's own figures, live; no node list on a single node.
  await go(page, "#/overview");
  await page.waitForFunction(() => Number(document.querySelector('[data-figure="Connections"]')?.textContent) >= 1, null, {
    timeout: 10_000,
  });
  await page.waitForFunction(() => document.querySelectorAll(".chart canvas").length === 6, null, { timeout: 10_000 });
  await page.waitForFunction(() => /\d/.test(document.querySelector('[data-figure="Delivery lag p99"]')?.textContent ?? ""), null, {
    timeout: 10_000,
  });
  assert.equal(await page.locator("#nodes-title").count(), 0);
  await shoot(page, "overview");

  assert.deepEqual(page.errors, []);
  await page.close();
  await producer.stop();
  await stopHub(hub);
});

test("a_busy_runs_view_shows_its_retained_history_however_late_the_history_answers", async () => {
  const hub = await startHub();
  const topic = "run:race";
  const event = (event_type, data) => ({ topic, event_type, data });
  await publish(hub, event("workflow.started", {}));
  await publish(hub, event("dag.created", { nodes: [{ id: "a" }, { id: "b" }, { id: "c" }] }));
  for (const step of ["s1", "s2", "s3"]) await publish(hub, event("step.completed", { step }));
  // The run stays busy: live events keep coming while the view opens.
  let busy = true;
  const chatter = (async () => {
    for (let i = 0; busy; i++) {
      await publish(hub, event("agent.message", { agent: "w", message: `m${i}` }));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    const page = await openConsole(hub);
    await live(page);
    // A remote hub: the history answers after live events have arrived.
    await page.route("**/api/v1/topics/*/events*", async (route) => {
      await new Promise((r) => setTimeout(r, 400));
      await route.continue();
    });
    await go(page, `#/runs/${topic}`);
    for (const id of ["a", "b", "c"]) await seen(page, `g.dag-node[data-node="${id}"]`);
    for (const step of ["s1", "s2", "s3"]) await seen(page, `li[data-step="${step}"][data-status="completed"]`);
    await seen(page, '[data-run-status="running"]');
    assert.deepEqual(page.errors, []);
  } finally {
    busy = false;
    await chatter;
  }
});

/** Publishes `events` in batches of at most 200 (one request each). */
async function publishAll(hub, events) {
  for (let i = 0; i < events.length; i += 200) await postJson(hub, "/api/v1/events", events.slice(i, i + 200));
}

test("a_run_longer_than_one_history_page_shows_its_latest_state_not_its_first_thousand_events", async () => {
  const hub = await startHub({ args: ["--history-size", "5000"] });
  const topic = "run:long";
  const event = (event_type, data) => ({ topic, event_type, data });
  await publishAll(hub, [
    event("workflow.started", {}),
    event("dag.created", { nodes: [{ id: "a" }, { id: "b" }], edges: [{ from: "a", to: "b" }] }),
    event("step.started", { step: "a" }),
    ...Array.from({ length: 1400 }, (_, i) => event("agent.message", { agent: "w", content: `m${i}` })),
    event("dag.node_status_changed", { node_id: "a", new_status: "completed" }),
    event("dag.node_status_changed", { node_id: "b", new_status: "completed" }),
    event("step.completed", { step: "a" }),
    event("cost.updated", { metrics: { total_usd: 9.99 } }),
    event("workflow.completed", {}),
  ]);
  const page = await openConsole(hub, `#/runs/${topic}`);
  await live(page);
  await seen(page, '[data-run-status="completed"]');
  for (const id of ["a", "b"]) await seen(page, node(id, "completed"));
  await seen(page, 'li[data-step="a"][data-status="completed"]');
  assert.equal(await page.locator('[data-cost="total_usd"]').textContent(), "$9.9900");
  assert.equal(await page.locator("[data-history]").count(), 0, "everything retained was read");
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("a_run_too_long_to_replay_says_its_state_may_be_stale_and_stops_reading", async () => {
  const hub = await startHub();
  const topic = "run:endless";
  await publish(hub, { topic, event_type: "workflow.started", data: {} });
  const page = await openConsole(hub, "#/publish");
  await live(page);
  // A topic far longer than the view replays: every page the hub answers is full.
  let requests = 0;
  await page.route((url) => url.pathname === `/api/v1/topics/${encodeURIComponent(topic)}/events`, async (route) => {
    requests++;
    const url = new URL(route.request().url());
    const since = Number(url.searchParams.get("since"));
    const limit = Number(url.searchParams.get("limit"));
    const answer = await (await route.fetch()).json();
    const template = answer.events[0];
    answer.seq = 10_000_000;
    answer.events = Array.from({ length: limit }, (_, i) => ({
      ...template,
      seq: since + i + 1,
      event_type: "agent.message",
      data: { agent: "w", content: `m${since + i}` },
    }));
    await route.fulfill({ json: answer });
  });
  await go(page, `#/runs/${topic}`);
  await seen(page, '[data-history="capped"]');
  assert.match(await page.locator('[data-history="capped"]').textContent(), /Only the first 50,000 retained events were read .*of 10000000.*may be stale/s);
  assert.equal(requests, 50, "the replay is bounded");
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("history_older_on_a_trimmed_topic_shows_each_retained_event_once_and_stops_at_the_oldest", async () => {
  const hub = await startHub({ args: ["--history-size", "120"] });
  const topic = "trim:t";
  await publishAll(hub, Array.from({ length: 300 }, (_, i) => ({ topic, event_type: "step.progress", data: { i } })));
  const page = await openConsole(hub, `#/topics/${topic}`);
  await live(page);
  await seen(page, "table.history tr[data-seq='251']");
  const older = page.getByRole("button", { name: "Older" });
  // 251–300, then 201–250, then what is left: 181–200 (the hub retains 181–300).
  for (const oldest of [201, 181]) {
    await older.click();
    await seen(page, `table.history tr[data-seq='${oldest}']`);
  }
  await page.waitForFunction(() => document.querySelector("[data-history-shown]")?.textContent.includes("oldest retained"), null, {
    timeout: 5000,
  });
  const seqs = await page.locator("table.history tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  assert.equal(seqs.length, 120);
  assert.equal(new Set(seqs).size, 120, "each retained event once");
  assert.deepEqual([Math.min(...seqs), Math.max(...seqs)], [181, 300]);
  assert.match(await page.locator("[data-history-shown]").textContent(), /^120 retained events shown from seq 181 \(the oldest retained\)$/);
  assert.equal(await older.isDisabled(), true);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("a_topics_snapshot_follows_live_keyed_events_and_a_bad_type_pattern_says_so", async () => {
  const hub = await startHub();
  const topic = "snap:t";
  await publishAll(
    hub,
    ["k1", "k2"].map((key) => ({ topic, event_type: "state.changed", key, data: { old: true } })),
  );
  const page = await openConsole(hub, `#/topics/${topic}`);
  await live(page);
  await seen(page, "table.snapshot tbody tr th:text-is('k2')");
  await page.waitForSelector("text=Waiting for events…");
  // The tail shows the subscription in effect; then keyed events change the snapshot.
  await publish(hub, { topic, event_type: "step.progress", data: {} });
  await seen(page, "table.live-tail tr[data-seq='3']");
  await publish(hub, { topic, event_type: "state.changed", key: "k1", data: { now: 1 } });
  await publish(hub, { topic, event_type: "state.changed", key: "new", data: { now: 2 } });
  await seen(page, "table.snapshot tbody tr:has(th:text-is('new'))");
  await page.waitForFunction(
    () => [...document.querySelectorAll("table.snapshot tbody tr")].some((r) => r.querySelector("th")?.textContent === "k1" && r.querySelector("td.num")?.textContent === "4"),
    null,
    { timeout: 5000 },
  );
  assert.equal(await page.locator("table.snapshot tbody tr").count(), 3);
  // An event without a key leaves the snapshot alone; Refresh re-reads it at the topic's seq.
  await publish(hub, { topic, event_type: "step.progress", data: {} });
  await seen(page, "table.live-tail tr[data-seq='6']");
  await page.getByRole("button", { name: "Refresh the snapshot" }).click();
  await seen(page, "[data-snapshot-seq='6']");

  // A malformed type pattern is named as such, not taken for silence.
  await page.getByLabel("Type pattern").fill("bogus pattern!!");
  await seen(page, '[data-type-filter="invalid"]');
  assert.match(await page.locator('[data-type-filter="invalid"]').textContent(), /bogus pattern!! is not a type pattern/);
  assert.equal(await page.locator("text=Waiting for events…").count(), 0);
  await page.getByLabel("Type pattern").fill("nothing.*");
  await seen(page, "text=4 events hidden by the filter.");
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("the_overview_charts_the_newest_retained_figures_and_breaks_the_line_at_a_hole_in_time", async () => {
  // The hub's own figures off: the test's are the only ones.
  const hub = await startHub({ args: ["--metrics-interval", "0s"] });
  const figures = (values) => values.map((v) => ({ topic: "metrics", event_type: "metrics.updated", data: { metrics: { active_connections: v } } }));
  await publishAll(hub, figures(Array.from({ length: 130 }, (_, i) => i)));
  // A hole in time is what is under test: nothing is published for a while.
  await sleep(1000);
  await publishAll(hub, figures(Array.from({ length: 10 }, (_, i) => 500 + i)));
  const page = await openConsole(hub, "#/overview");
  await live(page);
  await page.waitForFunction(() => document.querySelector('[data-figure="Connections"]')?.textContent === "509", null, { timeout: 10_000 });
  const chart = page.locator('figure.chart:has([data-figure="Connections"])');
  // The newest 120 figures (110 before the hole, 10 after) and one null point between.
  assert.equal(await chart.getAttribute("data-points"), "121");
  assert.equal(await chart.getAttribute("data-breaks"), "1");
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("at_phone_width_the_connections_page_does_not_scroll_sideways", async () => {
  const hub = await startHub();
  const page = await openConsole(hub, "#/connections");
  await page.setViewportSize({ width: 390, height: 844 });
  await live(page);
  await seen(page, "tr .tag:text-is('this console')");
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  assert.ok(scrollWidth <= innerWidth, `the page is ${scrollWidth} px wide in a ${innerWidth} px window`);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("a_publish_refusal_is_cleared_when_any_field_changes", async () => {
  const hub = await startHub();
  const page = await openConsole(hub, "#/publish");
  await live(page);
  await page.getByLabel("Topic").fill("run:*");
  await seen(page, "#data-check.ok-text");
  await page.getByRole("button", { name: "Publish" }).click();
  await seen(page, "[data-publish-refused]");
  assert.match(await page.locator("[data-publish-refused]").textContent(), /run:\*/);
  // The refusal was about the topic as it was: another field's edit takes it away.
  await page.getByLabel("Event type").fill("NotDotted");
  await page.waitForFunction(() => !document.querySelector("[data-publish-refused]"), null, { timeout: 5000 });
  await seen(page, "#data-check.error-text");
  // Chromium logs the refused request (HTTP 400).
  assert.deepEqual(page.errors.filter((e) => !e.includes("400 (Bad Request)")), []);
  await page.close();
  await stopHub(hub);
});

test("a_topic_pages_live_tail_keeps_up_with_a_burst_of_a_thousand_events", async () => {
  const hub = await startHub();
  const topic = "run:burst";
  const page = await openConsole(hub, `#/topics/${topic}`);
  await live(page);
  // Once the page's subscription is in effect, a probe shows in the tail.
  let following = false;
  for (let i = 0; i < 20 && !following; i++) {
    await publish(hub, { topic, event_type: "step.progress", data: { probe: i } });
    following = await page.waitForSelector(".live-tail tr[data-seq]", { timeout: 500 }).then(
      () => true,
      () => false,
    );
  }
  assert.ok(following, "the tail shows no live event");
  let last = 0;
  for (let batch = 0; batch < 10; batch++) {
    const events = Array.from({ length: 100 }, (_, i) => ({ topic, event_type: "step.progress", data: { i: batch * 100 + i } }));
    const receipts = await postJson(hub, "/api/v1/events", events);
    last = receipts[receipts.length - 1].seq;
  }
  // Rendered once per frame, not once per event: the last one shows while
  // the burst is still fresh (one render per event took ~40 s here).
  await seen(page, `.live-tail tr[data-seq="${last}"]`, 20_000);
  assert.equal(await page.locator(".live-tail tbody tr").count(), 500);
  assert.deepEqual(page.errors, []);
});

test("with_allowed_origins_set_the_hubs_own_console_still_loads_and_goes_live", async () => {
  const hub = await startHub({ args: ["--allowed-origins", "https://app.example"] });
  const page = await openConsole(hub);
  await live(page);
  assert.deepEqual(page.errors, []);
});

test("the_console_survives_a_hub_restart_and_shows_the_gap_and_the_new_streams_snapshot_and_history", async () => {
  let hub = await startHub();
  const port = hub.port;
  const page = await openConsole(hub, "#/topics/run:restart");
  await live(page);
  await page.evaluate(() => (window.notReloaded = true));
  await page.waitForSelector("text=Waiting for events…");
  await publish(hub, { topic: "run:restart", event_type: "step.started", key: "k", data: { step: "a" } });
  await seen(page, "table.live-tail tr[data-seq='1']");
  await seen(page, "table.snapshot tbody tr:has(th:text-is('k'))");
  await page.getByRole("button", { name: "Newest" }).click();
  await seen(page, "table.history tr[data-seq='1']");

  await stopHub(hub);
  await seen(page, '[data-connection-state="reconnecting"]');
  hub = await startHub({ port });
  await live(page);
  // The memory store restarted: a new stream, which the page is told about.
  await seen(page, 'tr.gap-row[data-gap="epoch_changed"]');
  const gapText = await page.locator('tr.gap-row[data-gap="epoch_changed"]').textContent();
  assert.match(gapText, /the topic's history was reset \(a new stream, epoch_changed\): the rows below are from the old stream$/);
  assert.doesNotMatch(gapText, /1–0/);
  // Snapshot and history are re-read: the old stream's event is gone from both.
  await seen(page, "text=No keyed events");
  await page.waitForFunction(() => document.querySelectorAll("table.history tbody tr").length === 0, null, { timeout: 10_000 });
  await publish(hub, { topic: "run:restart", event_type: "step.completed", key: "k", data: { step: "a" } });
  await page.waitForFunction(
    () => [...document.querySelectorAll("table.live-tail tr[data-seq='1'] code")].some((c) => c.textContent === "step.completed"),
    null,
    { timeout: 10_000 },
  );
  await page.waitForFunction(
    () => document.querySelector("table.snapshot tbody tr:has(th) code")?.textContent === "step.completed",
    null,
    { timeout: 10_000 },
  );
  // The history follows the new stream without Newest being clicked.
  await page.waitForFunction(
    () => [...document.querySelectorAll("table.history tr[data-seq='1'] code")].some((c) => c.textContent === "step.completed"),
    null,
    { timeout: 10_000 },
  );
  assert.equal(await page.evaluate(() => window.notReloaded), true);
  // Chromium logs each refused reconnect attempt while the hub is down.
  assert.deepEqual(page.errors.filter((e) => !e.includes("ERR_CONNECTION_REFUSED")), []);
  await page.close();
  await stopHub(hub);
});

test("with_two_nodes_on_redis_the_overview_lists_both_and_a_run_published_on_one_shows_on_the_other", async () => {
  const redis = await startRedis();
  const first = await startHub({ args: ["--store", redis.url] });
  const second = await startHub({ args: ["--store", redis.url] });
  const a = (await getJson(first, "/api/v1/nodes")).node;
  const b = (await getJson(second, "/api/v1/nodes")).node;
  assert.notEqual(a, b);
  const page = await openConsole(first, "#/overview");
  await live(page);
  // Each node says where it is every few seconds; both rows come within that.
  await seen(page, `tr[data-node="${a}"]`, 20_000);
  await seen(page, `tr[data-node="${b}"]`, 20_000);
  assert.match(await page.locator(`tr[data-node="${a}"]`).textContent(), /this console's node/);
  assert.doesNotMatch(await page.locator(`tr[data-node="${b}"]`).textContent(), /this console's node/);

  await go(page, "#/topics/run:across");
  await page.waitForSelector("text=Waiting for events…");
  await publish(second, { topic: "run:across", event_type: "step.started", data: { step: "on b" } });
  await seen(page, "table.live-tail tr[data-seq='1']");
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(second);
  await stopHub(first);
});

test("with_two_nodes_the_overview_charts_its_own_nodes_figures_counts_every_node_and_says_when_one_does_not_answer", async () => {
  const redis = await startRedis();
  const first = await startHub({ args: ["--store", redis.url, "--metrics-interval", "200ms"] });
  const second = await startHub({ args: ["--store", redis.url, "--metrics-interval", "200ms"] });
  const a = (await getJson(first, "/api/v1/nodes")).node;
  const b = (await getJson(second, "/api/v1/nodes")).node;
  // Published through the first node only: its count is far above the
  // second's (which publishes only its own figures, five a second).
  await postJson(
    first,
    "/api/v1/events",
    Array.from({ length: 200 }, (_, i) => ({ topic: "run:figures", event_type: "step.progress", data: { i } })),
  );
  // A watcher of the second node's figures (so it publishes them too), and a connection held there.
  const visitor = await context.newPage();
  await visitor.goto(`${second.url}/console/config`);
  await visitor.evaluate((url) => {
    window.watcher = new WebSocket(`${url.replace("http", "ws")}/ws/metrics`);
  }, second.url);

  const page = await openConsole(first, "#/overview");
  await live(page);
  await seen(page, `[data-charts-node="${a}"]`, 20_000);
  // Both nodes' connections are counted: the console's and the watcher.
  await page.waitForFunction(() => Number(document.querySelector('[data-figure="status-connections"]')?.textContent) >= 2, null, {
    timeout: 10_000,
  });
  // Every reading shown is the first node's, never the second's interleaved.
  const published = page.locator(".card", { hasText: "Events published" }).locator("b");
  await page.waitForFunction(() => /\d/.test([...document.querySelectorAll(".card")].find((c) => c.textContent.includes("Events published"))?.textContent ?? ""), null, {
    timeout: 10_000,
  });
  for (let i = 0; i < 8; i++) {
    const shown = Number((await published.textContent()).replace(/,/g, ""));
    assert.ok(shown >= 200, `events published shown: ${shown}`);
    await sleep(150);
  }

  // Connections name their node; this console's is marked.
  await go(page, "#/connections");
  await seen(page, `tr[data-node="${b}"]`);
  assert.match(await page.locator(`tr[data-node="${a}"]`).first().textContent(), /this console's node/);
  assert.doesNotMatch(await page.locator(`tr[data-node="${b}"]`).first().textContent(), /this console's node/);

  // A node that does not answer: both pages say the figures leave some out, then recover.
  second.child.kill("SIGSTOP");
  await page.waitForFunction(() => document.body.textContent.includes("not every node answered"), null, { timeout: 15_000 });
  await go(page, "#/overview");
  await seen(page, "[data-partial]", 15_000);
  second.child.kill("SIGCONT");
  await page.waitForFunction(() => !document.querySelector("[data-partial]"), null, { timeout: 15_000 });
  assert.deepEqual(page.errors, []);
  await visitor.close();
  await page.close();
  await stopHub(second);
  await stopHub(first);
});

test("a_history_and_snapshot_the_store_could_not_serve_are_read_again_once_the_store_is_back", async () => {
  const redis = await startRedis();
  const hub = await startHub({ args: ["--store", redis.url] });
  await publish(hub, { topic: "run:stalled", event_type: "step.started", data: {}, key: "s1" });
  const page = await openConsole(hub, "#/overview");
  await live(page);
  redis.child.kill("SIGSTOP");
  await go(page, "#/topics/run:stalled");
  await page.waitForSelector("section[aria-labelledby='history-title'] .error-text", { timeout: 15_000 });
  await page.waitForSelector("section[aria-labelledby='snapshot-title'] .error-text", { timeout: 15_000 });
  redis.child.kill("SIGCONT");
  // No click on Newest, no event: the page reads both again by itself.
  await page.waitForFunction(() => document.querySelector("[data-history-shown]")?.getAttribute("data-history-shown") === "1", null, {
    timeout: 20_000,
  });
  await page.waitForFunction(() => !document.querySelector("section[aria-labelledby='snapshot-title'] .error-text"), null, {
    timeout: 20_000,
  });
  assert.equal(await page.locator("section[aria-labelledby='history-title'] .error-text").count(), 0);
  // Chromium logs the refused requests and sockets while the store was away.
  await page.close();
  await stopHub(hub);
});

/** An HS256 JWT. */
function jwt(secret, claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

test("with_auth_the_console_signs_in_with_a_key_and_a_token_kept_in_the_session_never_the_url", async () => {
  const secret = "console-test-secret-0123456789abcdef";
  const key = "console-admin-key-0123456789";
  const hub = await startHub({ args: ["--api-keys", `${key}:admin,publish`, "--jwt-secret", secret] });
  const token = jwt(secret, { sub: "ops", topics: ["*"], exp: Math.floor(Date.now() / 1000) + 3600 });
  const page = await openConsole(hub, "#/connections");

  await page.getByLabel(/Admin API key/).fill("wrong-key-0123456789");
  await page.getByLabel(/Admin token/).fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await seen(page, "text=the hub refused the key");

  await page.getByLabel(/Admin API key/).fill(key);
  await page.getByLabel(/Admin token/).fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await live(page);
  // The console's own WebSocket authenticated (by subprotocol) as the token's user.
  await seen(page, 'tr[data-user="ops"] .tag:text-is("this console")');
  // The token's user decides: no name to give.
  assert.equal(await page.locator(".deciding-as").count(), 0);
  const url = page.url();
  assert.ok(!url.includes(key) && !url.includes(token), `credentials in the URL: ${url}`);
  const stored = await page.evaluate(() => sessionStorage.getItem("herald:console:credentials"));
  assert.deepEqual(JSON.parse(stored), { apiKey: key, token });
  await page.reload();
  await live(page);
  await seen(page, 'tr[data-user="ops"]');
  await shoot(page, "sign-in-connections");
  assert.deepEqual(page.errors.filter((e) => !e.includes("401")), []);
  await page.close();
  await stopHub(hub);
});

/** Fills in and submits the sign-in form (the fields the hub asks for). */
async function signIn(page, { key, token }) {
  if (key !== undefined) await page.getByLabel(/Admin API key/).fill(key);
  if (token !== undefined) await page.getByLabel(/Admin token/).fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** `POST` with an API key; throws on a non-2xx answer. */
async function postWithKey(hub, key, path, body) {
  const response = await fetch(`${hub.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`POST ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

test("the_hubs_refusals_of_an_answer_a_cancel_and_a_subscription_are_shown_where_they_were_made", async () => {
  const secret = "console-test-secret-0123456789abcdef";
  const key = "console-admin-key-0123456789";
  const hub = await startHub({ args: ["--api-keys", `${key}:admin,publish`, "--jwt-secret", secret] });
  // A user who may watch only run:mine, signed in with the admin key.
  const token = jwt(secret, { sub: "alice", topics: ["run:mine"], exp: Math.floor(Date.now() / 1000) + 3600 });
  const approval = await postWithKey(hub, key, "/api/v1/approvals", {
    user_id: "bob",
    task_id: "t-bob",
    step: 1,
    step_result: { step: "deploy", result: null, completed: true, message: "Deploy for bob?", status: "ok" },
    timeout_ms: 600_000,
  });
  await postWithKey(hub, key, "/api/v1/events", { topic: "run:other", event_type: "workflow.started", data: {} });
  const page = await openConsole(hub, "#/approvals");
  await signIn(page, { key, token });
  await live(page);

  // Bob's approval: the hub answers alice's Approve with `forbidden`, and the inbox says so.
  const card = page.locator(`article[data-callback="${approval.callback_id}"]`);
  await card.waitFor({ timeout: 10_000 });
  await card.getByRole("button", { name: "Approve" }).click();
  const refusal = page.locator(`[data-refused="${approval.callback_id}"]`);
  await refusal.waitFor({ timeout: 10_000 });
  assert.match(await refusal.textContent(), /approve of task t-bob step 1 was refused: .*only the approval's user may answer it/);
  assert.equal(await card.getByRole("button", { name: "Approve" }).isDisabled(), false);
  assert.equal((await getApproval(hub, key, approval.callback_id)).status, "pending");

  // A run alice may not steer: Cancel reads as refused, not as sent.
  await go(page, "#/runs/run:other");
  await seen(page, '[data-subscription="refused"]');
  assert.match(await page.locator('[data-subscription="refused"]').textContent(), /not allowed to subscribe to run:other/);
  await page.getByRole("button", { name: "Cancel" }).click();
  await seen(page, '[data-control-refused="true"]');
  assert.match(await page.locator('[data-control-refused="true"]').textContent(), /cancel refused by the hub: not allowed to steer run:other/);

  // A topic alice may not watch: the live tail says the hub refused it, not "Waiting for events…".
  await go(page, "#/topics/run:other");
  await seen(page, 'td[data-subscription="refused"]');
  assert.match(await page.locator('td[data-subscription="refused"]').textContent(), /not allowed to subscribe to run:other/);
  assert.equal(await page.locator("text=Waiting for events…").count(), 0);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("an_answer_refused_because_another_operator_decided_first_stays_in_view_after_the_card_leaves", async () => {
  const hub = await startHub();
  const approval = await postJson(hub, "/api/v1/approvals", {
    user_id: "u1",
    task_id: "t-race",
    step: 2,
    step_result: { step: "deploy", result: null, completed: true, message: "Deploy?", status: "ok" },
    timeout_ms: 600_000,
  });
  // The other decision's `approval.resolved` is held back on its way to
  // the console, so the card is still there to be clicked, as for an
  // operator who clicks in the moment between the two.
  const resolved = holdBack('"approval.resolved"');
  const page = await openConsole(hub, "#/approvals", resolved.route);
  await live(page);
  const card = page.locator(`article[data-callback="${approval.callback_id}"]`);
  await card.waitFor({ timeout: 10_000 });

  // Another operator rejects first, over their own WebSocket.
  const other = await context.newPage();
  await other.goto(`${hub.url}/console/config`);
  const answered = await other.evaluate(
    ({ url, id }) =>
      new Promise((resolve) => {
        const ws = new WebSocket(`${url.replace("http", "ws")}/ws`);
        ws.onopen = () => ws.send(JSON.stringify({ action: "confirm", callback_id: id, proceed: false, id: "other-1" }));
        ws.onmessage = (m) => {
          const frame = JSON.parse(m.data);
          if (frame.ref === "other-1") resolve(frame.type);
        };
      }),
    { url: hub.url, id: approval.callback_id },
  );
  assert.equal(answered, "ack");

  await card.getByRole("button", { name: "Approve" }).click();
  const refusal = page.locator(`[data-refused="${approval.callback_id}"]`);
  await refusal.waitFor({ timeout: 10_000 });
  resolved.release();
  await page.waitForFunction((id) => !document.querySelector(`article[data-callback="${id}"]`), approval.callback_id, { timeout: 10_000 });
  assert.match(await refusal.textContent(), /Your approve of task t-race step 2 was refused: .*already resolved \(rejected\)/);
  await refusal.getByRole("button", { name: "Dismiss" }).click();
  assert.equal(await page.locator("[data-refused]").count(), 0);
  assert.deepEqual(page.errors, []);
  await other.close();
  await page.close();
  await stopHub(hub);
});

/** Asks u1 to approve a step of `task` (POST /api/v1/approvals); resolves to the record. */
function ask(hub, task, timeout_ms = 600_000) {
  return postJson(hub, "/api/v1/approvals", {
    user_id: "u1",
    task_id: task,
    step: 1,
    step_result: { step: "deploy", result: null, completed: true, message: `Deploy ${task}?`, status: "ok" },
    timeout_ms,
  });
}

/** Answers the approvals `ids` over a WebSocket of another operator's (not the console's); resolves once the hub acked each. */
async function answerElsewhere(hub, ids, proceed) {
  const other = await context.newPage();
  await other.goto(`${hub.url}/console/config`);
  const answers = await within(
    10_000,
    "the other operator's answers to be acked",
    other.evaluate(
      ({ url, ids, proceed }) =>
        new Promise((resolve) => {
          const ws = new WebSocket(`${url.replace("http", "ws")}/ws?user_id=other`);
          const acked = [];
          ws.onopen = () => ids.forEach((id, i) => ws.send(JSON.stringify({ action: "confirm", callback_id: id, proceed, id: `other-${i}` })));
          ws.onmessage = (m) => {
            const frame = JSON.parse(m.data);
            if (typeof frame.ref === "string" && frame.ref.startsWith("other-")) acked.push(frame.type);
            if (acked.length === ids.length) {
              ws.close();
              resolve(acked);
            }
          };
        }),
      { url: hub.url, ids, proceed },
    ),
  );
  assert.deepEqual(answers, ids.map(() => "ack"));
  await other.close();
}

const cards = (page) => page.locator(".inbox article[data-callback]");

test("after_this_console_disconnects_itself_its_inbox_says_it_is_not_live_and_reconnect_reads_it_again", async () => {
  const hub = await startHub();
  const page = await openConsole(hub, "#/connections");
  await live(page);
  await page.getByRole("button", { name: "Disconnect this console" }).click();
  await seen(page, '[data-connection-state="closed"]');
  assert.match(await page.locator("[data-connection-state]").textContent(), /^disconnected here: this console disconnected its own connection/);

  // Asked while the console is not connected: the inbox does not claim that nothing waits.
  const approval = await ask(hub, "t-offline");
  await go(page, "#/approvals");
  const offline = page.locator('[data-offline="closed"]');
  await offline.waitFor({ timeout: 10_000 });
  assert.match(await offline.textContent(), /Not live: this list may be out of date\. this console disconnected its own connection .*last read from the hub at/);
  assert.equal(await page.locator("text=Nothing waits for a decision.").count(), 0);
  await seen(page, '[data-empty="stale"]');

  // Reconnect: live again, and the inbox is read again.
  await offline.getByRole("button", { name: "Reconnect" }).click();
  await live(page);
  await seen(page, `.inbox article[data-callback="${approval.callback_id}"]`);
  assert.equal(await page.locator("[data-offline]").count(), 0);
  assert.equal(await page.locator("[data-reconnect]").count(), 0);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("a_console_the_hub_refuses_at_its_connection_limit_says_why_its_inbox_is_not_live_and_catches_up_once_admitted", async () => {
  // Every console tab on an open hub is the user "console" until its operator names themselves: one is its limit here.
  const hub = await startHub({ args: ["--max-connections-per-user", "1"] });
  const first = await openConsole(hub, "#/approvals");
  await live(first);
  await seen(first, "text=Nothing waits for a decision.");
  const second = await openConsole(hub, "#/approvals");
  const offline = second.locator('[data-offline="reconnecting"]');
  await offline.waitFor({ timeout: 15_000 });
  assert.match(await offline.textContent(), /closed the connection with 1013 \(try again later: the hub is at its connection limit/);

  const approval = await ask(hub, "t-limit");
  await seen(first, `.inbox article[data-callback="${approval.callback_id}"]`);
  assert.equal(await second.locator("text=Nothing waits for a decision.").count(), 0);
  assert.equal(await second.locator('[data-connection-state="open"]').count(), 0);

  // The first tab leaves: the second is admitted (its attempts go on by
  // themselves), reads the inbox again, and says it is live once the hub
  // kept the connection.
  await first.close();
  await seen(second, `.inbox article[data-callback="${approval.callback_id}"]`, 20_000);
  await second.waitForSelector("[data-offline]", { state: "detached", timeout: 10_000 });
  await seen(second, '[data-connection-state="open"]');
  assert.deepEqual(second.errors, []);
  await second.close();
  await stopHub(hub);
});

test("approval_events_keep_the_inbox_current_without_rereading_the_list_and_it_renders_the_fifty_that_time_out_first", async () => {
  const hub = await startHub();
  // Sixty waiting, each timing out a second after the one before.
  const early = [];
  for (let i = 0; i < 60; i++) early.push(await ask(hub, `t-early-${i}`, 600_000 + i * 1000));
  const reads = [];
  const page = await openConsole(hub, "#/approvals", (page) =>
    page.on("request", (request) => {
      const url = new URL(request.url());
      if (url.pathname === "/api/v1/approvals") reads.push(url.search);
    }),
  );
  await live(page);
  await seen(page, '.badge[data-pending="60"]');
  await seen(page, '[data-more-pending="10"]');
  assert.equal(await cards(page).count(), 50);
  assert.equal(await cards(page).first().getAttribute("data-callback"), early[0].callback_id);

  // Twenty new ones that time out sooner; ten early and five new ones decided by another operator.
  const late = [];
  for (let i = 0; i < 20; i++) late.push(await ask(hub, `t-late-${i}`, 300_000 + i * 1000));
  const decided = [...early.slice(0, 10), ...late.slice(0, 5)].map((a) => a.callback_id);
  await answerElsewhere(hub, decided, false);

  await seen(page, '.badge[data-pending="65"]');
  await seen(page, '[data-more-pending="15"]');
  assert.equal(await cards(page).count(), 50);
  const shown = await cards(page).evaluateAll((articles) => articles.map((a) => a.dataset.callback));
  assert.deepEqual(shown.slice(0, 15), late.slice(5).map((a) => a.callback_id), "the new ones that time out first lead");
  for (const id of decided) assert.ok(!shown.includes(id), `decided ${id} left the inbox`);
  // The list was read when the console started and when its subscription was confirmed, pending only: never per event.
  assert.ok(reads.length <= 2, `reads of the approvals list: ${reads.join(" ")}`);
  assert.ok(reads.every((search) => search === "?status=pending"), `reads: ${reads.join(" ")}`);

  // History reads the audit trail when it is shown.
  await go(page, "#/approvals/history");
  for (const id of decided) await seen(page, `tr[data-callback="${id}"]`);
  assert.equal(reads.filter((search) => search === "").length, 1);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("a_refusal_is_cleared_once_this_consoles_next_answer_to_the_same_approval_is_taken", async () => {
  const hub = await startHub();
  const approval = await ask(hub, "t-feedback");
  const page = await openConsole(hub, "#/approvals");
  await live(page);
  const card = page.locator(`article[data-callback="${approval.callback_id}"]`);
  await card.waitFor({ timeout: 10_000 });
  await card.getByLabel("Feedback").fill("é".repeat(2100));
  await card.getByRole("button", { name: "Approve" }).click();
  const refusal = page.locator(`[data-refused="${approval.callback_id}"]`);
  await refusal.waitFor({ timeout: 10_000 });
  assert.match(await refusal.textContent(), /feedback must be at most 4096 bytes/);
  await card.getByLabel("Feedback").fill("shorter");
  await card.getByRole("button", { name: "Approve" }).click();
  await page.waitForFunction((id) => !document.querySelector(`[data-refused="${id}"]`), approval.callback_id, { timeout: 10_000 });
  await page.waitForFunction((id) => !document.querySelector(`article[data-callback="${id}"]`), approval.callback_id, { timeout: 10_000 });
  const { approvals } = await getJson(hub, "/api/v1/approvals?status=approved");
  assert.equal(approvals.find((a) => a.callback_id === approval.callback_id)?.feedback, "shorter");
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

/** Waits until the hub lists exactly `users` as its connections' users (bounded). */
async function connectedUsers(hub, users, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let seenUsers;
  while (Date.now() < deadline) {
    const { connections } = await getJson(hub, "/api/v1/connections");
    seenUsers = connections.map((c) => c.user_id).sort();
    if (JSON.stringify(seenUsers) === JSON.stringify(users)) return;
    await sleep(100);
  }
  assert.deepEqual(seenUsers, users, "the users of the hub's connections");
}

test("on_an_open_hub_an_operator_decides_under_the_name_they_give_and_a_reload_keeps_it", async () => {
  const hub = await startHub();
  const approval = await ask(hub, "t-named");
  const page = await openConsole(hub, "#/approvals");
  await live(page);
  // Until the operator names themselves, the console is the user "console".
  await seen(page, '[data-deciding-as="console"]');
  await connectedUsers(hub, ["console"]);

  // A name the hub could not address is refused before it is used.
  await page.getByRole("button", { name: "Deciding as console: change" }).click();
  const name = page.getByLabel("Decide as");
  await name.fill("alice smith");
  await page.locator("#operator-help", { hasText: /a space cannot be in a user id/ }).waitFor({ timeout: 5000 });
  assert.equal(await page.getByRole("button", { name: "Save" }).isDisabled(), true);
  await name.fill("a".repeat(129));
  await page.locator("#operator-help", { hasText: /at most 128 characters/ }).waitFor({ timeout: 5000 });
  await name.fill("   ");
  await page.locator("#operator-help", { hasText: /a name is needed/ }).waitFor({ timeout: 5000 });

  // Saved (trimmed), the console connects again as alice, and her Approve is recorded as hers.
  await name.fill("  alice ");
  await page.getByRole("button", { name: "Save" }).click();
  await seen(page, '[data-deciding-as="alice"]');
  await live(page);
  await connectedUsers(hub, ["alice"]);
  const card = page.locator(`article[data-callback="${approval.callback_id}"]`);
  await card.waitFor({ timeout: 10_000 });
  await card.getByRole("button", { name: "Approve" }).click();
  await page.waitForFunction((id) => !document.querySelector(`article[data-callback="${id}"]`), approval.callback_id, { timeout: 10_000 });
  const decision = await getJson(hub, `/api/v1/approvals/${approval.callback_id}`);
  assert.equal(decision.status, "approved");
  assert.equal(decision.decided_by, "alice");
  await go(page, "#/approvals/history");
  const row = page.locator(`tr[data-callback="${approval.callback_id}"]`);
  await row.waitFor({ timeout: 10_000 });
  assert.match(await row.textContent(), /approved.*proceed.*alice/s);

  // The name is kept for this browser: a reload connects as alice again.
  await page.reload();
  await seen(page, '[data-deciding-as="alice"]');
  await live(page);
  await connectedUsers(hub, ["alice"]);
  assert.deepEqual(page.errors, []);
  // Later tests on another hub of the same address start from "console".
  await page.evaluate(() => localStorage.clear());
  await page.close();
  await stopHub(hub);
});

test("after_a_hub_restart_the_overview_charts_go_on_with_a_break_where_the_hub_was_down", async () => {
  let hub = await startHub({ args: ["--metrics-interval", "250ms"] });
  const port = hub.port;
  const page = await openConsole(hub, "#/overview");
  await live(page);
  const points = () => page.locator('figure.chart:has([data-figure="Connections"])').getAttribute("data-points").then(Number);
  await page.waitForFunction(() => Number(document.querySelector('figure.chart:has([data-figure="Connections"])')?.dataset.points) >= 8, null, {
    timeout: 10_000,
  });
  const before = await points();
  await stopHub(hub);
  await seen(page, '[data-connection-state="reconnecting"]');
  // The outage under test: no figures for a while (ten usual steps and more).
  await sleep(2000);
  hub = await startHub({ port, args: ["--metrics-interval", "250ms"] });
  await live(page);
  // The earlier process's figures stay, the new one's follow, and the outage is a break.
  await page.waitForFunction(
    (before) => {
      const chart = document.querySelector('figure.chart:has([data-figure="Connections"])');
      return Number(chart?.dataset.points) >= before + 6 && Number(chart?.dataset.breaks) >= 1;
    },
    before,
    { timeout: 15_000 },
  );
  assert.equal(await page.locator('[data-charts-node="unknown"]').count(), 0);
  // Chromium logs each refused reconnect attempt while the hub is down.
  assert.deepEqual(page.errors.filter((e) => !e.includes("ERR_CONNECTION_REFUSED")), []);
  await page.close();
  await stopHub(hub);
});

/**
 * Holds back the hub's frames to the console's WebSocket that contain
 * `text` until `release()`; the rest pass. `route` goes to `openConsole`
 * as its setup (the socket must be routed before the page opens it).
 */
function holdBack(text) {
  const held = [];
  let toPage;
  let holding = true;
  return {
    route: (page) =>
      page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
        const server = ws.connectToServer();
        toPage = ws;
        ws.onMessage((message) => server.send(message));
        server.onMessage((message) => {
          if (holding && String(message).includes(text)) held.push(message);
          else ws.send(message);
        });
      }),
    release: () => {
      holding = false;
      for (const message of held.splice(0)) toPage.send(message);
    },
  };
}

/** `GET /api/v1/approvals/{id}` with an API key. */
async function getApproval(hub, key, id) {
  const response = await fetch(`${hub.url}/api/v1/approvals?status=pending`, {
    headers: { authorization: `Bearer ${key}` },
    signal: AbortSignal.timeout(5_000),
  });
  const { approvals } = await response.json();
  return approvals.find((a) => a.callback_id === id) ?? { status: "not pending" };
}

/** Chromium's log line for a WebSocket upgrade the hub answered with 401. */
const refusedUpgrade = (error) => /WebSocket connection to .* failed: HTTP Authentication failed/.test(error);

test("a_token_the_hub_refuses_returns_the_console_to_sign_in_saying_so", async () => {
  const hub = await startHub({ args: ["--jwt-secret", "console-test-secret-0123456789abcdef"] });
  const forged = jwt("another-hubs-secret-0123456789abcdef", { sub: "ops", topics: ["*"], exp: Math.floor(Date.now() / 1000) + 3600 });
  const page = await openConsole(hub);
  await signIn(page, { token: forged });
  await seen(page, "text=the hub refused the token");
  await seen(page, "input[name=token]");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("herald:console:credentials")), null);
  // Chromium logs each refused upgrade (HTTP 401).
  assert.deepEqual(page.errors.filter((e) => !refusedUpgrade(e)), []);
  await page.close();
  await stopHub(hub);
});

test("a_console_signed_in_with_a_token_that_meets_a_draining_hub_stays_signed_in_and_comes_back_with_it", async () => {
  const secret = "console-test-secret-0123456789abcdef";
  const args = ["--jwt-secret", secret, "--drain-window", "20s"];
  const first = await startHub({ args });
  const token = jwt(secret, { sub: "ops", topics: ["*"], exp: Math.floor(Date.now() / 1000) + 3600 });
  const page = await openConsole(first);
  await signIn(page, { token });
  await live(page);
  // Sockets of another page, closed at random moments of the window, keep
  // the hub draining for most of it.
  const other = await openConsole(first);
  await other.evaluate(
    ([url, token]) => {
      window.others = Array.from({ length: 6 }, () => new WebSocket(url, ["herald.v1", `bearer.${token}`]));
    },
    [first.url.replace("http", "ws") + "/ws", token],
  );
  await other.waitForFunction(() => window.others.every((socket) => socket.readyState === WebSocket.OPEN), null, { timeout: 10_000 });
  first.child.kill("SIGTERM");
  await within(
    10_000,
    "the hub to drain",
    (async () => {
      while ((await fetch(`${first.url}/health/ready`)).status !== 503) await sleep(50);
    })(),
  );
  // Opened now, the console meets a hub that answers HTTP and refuses its
  // socket (503): not a refused token.
  await page.reload();
  await seen(page, '[data-connection-state="reconnecting"]', 10_000);
  await sleep(3_000);
  assert.equal((await fetch(`${first.url}/health/ready`)).status, 503, "the hub stopped draining during the check");
  assert.equal(await page.locator("input[name=token]").count(), 0);
  await within(25_000, "herald to exit", first.exited);
  const hub = await startHub({ port: first.port, args });
  await live(page);
  assert.notEqual(await page.evaluate(() => sessionStorage.getItem("herald:console:credentials")), null);
  await other.close();
  await page.close();
  await stopHub(hub);
});

test("a_token_that_expires_while_live_returns_the_console_to_sign_in_saying_it_expired", async () => {
  const secret = "console-test-secret-0123456789abcdef";
  const hub = await startHub({ args: ["--jwt-secret", secret] });
  const token = jwt(secret, { sub: "ops", topics: ["*"], exp: Math.floor(Date.now() / 1000) + 5 });
  const page = await openConsole(hub);
  await signIn(page, { token });
  await live(page);
  // The hub closes with 4001 at `exp`; the same token is then refused with 401.
  await seen(page, "text=/the hub refused the token: it expired at/", 20_000);
  await seen(page, "input[name=token]");
  assert.deepEqual(page.errors.filter((e) => !refusedUpgrade(e)), []);
  await page.close();
  await stopHub(hub);
});

/**
 * The console signed in with an admin key on `hash`, then its hub restarted
 * on the same port with `keys` as `--api-keys`; `before(page)` runs first.
 */
async function signedInThenRekeyed(hash, keys, before = async () => {}) {
  const key = "console-admin-key-0123456789";
  const first = await startHub({ args: ["--api-keys", `${key}:admin`] });
  const page = await openConsole(first, hash);
  await signIn(page, { key });
  await live(page);
  await before(page);
  await stopHub(first);
  const hub = await startHub({ port: first.port, args: ["--api-keys", keys(key)] });
  return { hub, page };
}

test("a_key_the_hub_no_longer_accepts_returns_the_console_to_sign_in_saying_so", async () => {
  // The same hub comes back with other keys: the next call is refused with 401.
  const { hub, page } = await signedInThenRekeyed("#/topics", () => "another-admin-key-0123456789:admin");
  await go(page, "#/connections");
  await seen(page, "text=the hub no longer accepts this key", 15_000);
  await seen(page, "input[name=api-key]");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("herald:console:credentials")), null);
  await page.close();
  await stopHub(hub);
});

test("an_approvals_list_the_hub_refuses_shows_the_refusal_and_not_an_empty_inbox", async () => {
  // Back after a restart, the hub refuses the list (403, as it answers a
  // key without the scope it takes).
  const { hub, page } = await signedInThenRekeyed(
    "#/approvals",
    (key) => `${key}:admin`,
    async (page) => {
      await seen(page, "text=Nothing waits for a decision.");
      await page.route(
        (url) => url.pathname === "/api/v1/approvals",
        (route) =>
          route.fulfill({
            status: 403,
            contentType: "application/json",
            body: JSON.stringify({ code: "forbidden", message: "the key lacks the publish scope" }),
          }),
      );
    },
  );
  await seen(page, "p.error-text", 15_000);
  assert.equal(await page.locator("text=Nothing waits for a decision.").count(), 0);
  await page.close();
  await stopHub(hub);
});

test("a_malformed_escape_in_the_address_says_so_and_the_console_keeps_working", async () => {
  const hub = await startHub();
  const page = await openConsole(hub, "#/runs/%");
  await seen(page, '[data-panel="malformed"]');
  assert.match(await page.locator("#main").textContent(), /Not a console address.*#\/runs\/%/s);
  await live(page);
  // Followed from inside the console: the shell stays, and a good address works again.
  await go(page, "#/overview");
  await seen(page, '[data-panel="overview"]');
  await go(page, "#/topics/%E0%A4%A");
  await seen(page, '[data-panel="malformed"]');
  await seen(page, 'nav[aria-label="Panels"]');
  await go(page, "#/topics");
  await seen(page, '[data-panel="topics"]');
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});

test("past_a_thousand_runs_runs_lists_the_most_recently_active_and_topics_says_more_exist", async () => {
  const hub = await startHub();
  for (let batch = 0; batch < 5; batch++) {
    const events = Array.from({ length: 201 }, (_, i) => ({
      topic: `execution:e${String(batch * 201 + i).padStart(5, "0")}`,
      event_type: "step.progress",
      data: {},
    }));
    await postJson(hub, "/api/v1/events", events);
  }
  // After 1005 `execution:` topics, two runs published to last: the list
  // is by activity, not by name.
  await publish(hub, { topic: "execution:a-latest", event_type: "workflow.started", data: {} });
  await publish(hub, { topic: "run:newest", event_type: "workflow.started", data: {} });
  const page = await openConsole(hub, "#/runs");
  await live(page);
  await seen(page, 'li[data-run="run:newest"]');
  await seen(page, 'li[data-run="execution:a-latest"]');
  assert.match(await page.locator("p[data-truncated]").textContent(), /more runs: these are the 1,000 most recently active/);
  assert.equal(await page.locator("li[data-run]").count(), 1000);
  await go(page, "#/topics");
  await seen(page, "p[data-truncated]");
  assert.match(await page.locator("p[data-truncated]").textContent(), /more topics: these are the first 1,000 in name order/);
  await page.getByRole("button", { name: /Show up to 10,000/ }).click();
  await seen(page, 'tr[data-topic="run:newest"]');
  assert.equal(await page.locator("p[data-truncated]").count(), 0);
  assert.deepEqual(page.errors, []);
  await page.close();
  await stopHub(hub);
});
