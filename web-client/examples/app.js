// The example page: live events and approval buttons over HeraldClient.
// It also records what it saw on `window.heraldDemo` (events, states, gaps,
// notices), which the browser tests read.
import { HeraldClient } from "../dist/index.js";

const params = new URLSearchParams(location.search);
const number = (name) => (params.has(name) ? Number(params.get(name)) : undefined);
const hub = params.get("hub") ?? location.origin;
const user = params.get("user") ?? "u1";
const topics = (params.get("topics") ?? "global").split(",").filter(Boolean);

const demo = { events: [], states: [], gaps: [], errors: [], notices: [], sent: [] };
window.heraldDemo = demo;

const options = { userId: user, persistCheckpoints: params.get("persist") === "1" };
for (const [param, option] of [
  ["heartbeat", "heartbeatInterval"],
  ["initialDelay", "initialReconnectDelay"],
  ["maxDelay", "maxReconnectDelay"],
  ["maxAttempts", "maxReconnectAttempts"],
]) {
  const value = number(param);
  if (value !== undefined) options[option] = value;
}
if (params.get("jitter") === "0") options.jitter = false;
if (params.get("token")) options.token = params.get("token");
// Other nodes of the same hub (comma-separated), tried in turn on reconnect.
if (params.get("failover")) options.failover = params.get("failover").split(",").filter(Boolean);

const client = new HeraldClient(hub, options);
demo.client = client;

const stateEl = document.getElementById("state");
const eventsEl = document.getElementById("events");
const approvalsEl = document.getElementById("approvals");

client.onState((state) => {
  demo.states.push({ ...state, at: performance.now() });
  stateEl.dataset.state = state.state;
  stateEl.textContent =
    state.state === "reconnecting"
      ? `reconnecting (attempt ${state.attempt}, in ${state.delay} ms)`
      : state.state === "closed"
        ? `closed (${state.reason})`
        : state.state;
  document.getElementById("session").textContent = client.sessionId ?? "";
});

client.onNotice((notice) => demo.notices.push(notice));
client.onError((error) => demo.errors.push(error));

client.onGap((gap) => {
  demo.gaps.push(gap);
  addLine(`gap ${gap.topic} ${gap.from_seq}..${gap.to_seq} (${gap.reason})`, "gap");
});

client.on("*", (event) => {
  demo.events.push(event);
  addLine(`${event.topic} #${event.seq} ${event.event_type} ${JSON.stringify(event.data)}`);
});

client.on("approval.requested", (event) => showApproval(event.data));

// Approvals already pending when the page connects come in the snapshot of
// `user:{id}` the hub sends on connect (the latest event per approval: a
// request still pending is an `approval.requested`).
client.onSnapshot((snapshot) => {
  for (const event of snapshot.events) {
    if (event.event_type === "approval.requested") showApproval(event.data);
  }
});

function showApproval({ callback_id, task_id, step, step_result }) {
  // The same request can arrive on more than one topic (user:…, task:…): one card.
  if (approvalsEl.querySelector(`[data-callback-id="${CSS.escape(callback_id)}"]`)) return;
  document.getElementById("no-approvals")?.remove();
  const card = document.createElement("div");
  card.className = "approval";
  card.dataset.callbackId = callback_id;
  card.dataset.status = "pending";
  const text = document.createElement("p");
  text.textContent = `Task ${task_id}, step ${step}: ${step_result.message} (${step_result.status})`;
  card.append(text);
  for (const [label, proceed] of [["Approve", true], ["Reject", false]]) {
    const button = document.createElement("button");
    button.textContent = label;
    button.className = proceed ? "approve" : "reject";
    button.dataset.callbackId = callback_id;
    button.addEventListener("click", () => {
      client.confirm(callback_id, proceed, `${label.toLowerCase()}d from the example page`);
      demo.sent.push({ callback_id, proceed });
      card.dataset.status = "sent";
      for (const b of card.querySelectorAll("button")) b.disabled = true;
    });
    card.append(button);
  }
  approvalsEl.append(card);
}

client.on("approval.resolved", (event) => {
  const card = approvalsEl.querySelector(`[data-callback-id="${CSS.escape(event.data.callback_id)}"]`);
  if (!card) return;
  card.dataset.status = event.data.status;
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  const outcome = document.createElement("p");
  outcome.textContent = `${event.data.status} by ${event.data.decided_by ?? "the hub"}`;
  card.append(outcome);
});

function addLine(text, className) {
  const li = document.createElement("li");
  li.textContent = text;
  if (className) li.className = className;
  eventsEl.prepend(li);
  while (eventsEl.childElementCount > 200) eventsEl.lastElementChild.remove();
}

client.subscribe(topics);
client.connect();
