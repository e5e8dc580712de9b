// Type-level checks of the wrapper's public API, compiled (never run) by
// `cargo xtask wasm` with test/tsconfig.json: a wrong type here fails the build.

import {
  HeraldClient,
  KNOWN_EVENT_TYPES,
  isEvent,
  type ApprovalResolved,
  type ConnectionState,
  type HeraldEvent,
  type KnownEventType,
  type SubscriptionState,
} from "../dist/index.js";

const client = new HeraldClient("http://127.0.0.1:8765", { userId: "u1", heartbeatInterval: 300, jitter: false });

client.on("approval.requested", (event) => {
  const id: string = event.data.callback_id;
  const message: string = event.data.step_result.message;
  const proceedByDefault: boolean = event.data.default_proceed;
  void client.confirm(id, true, `${message} ${proceedByDefault}`);
  // @ts-expect-error: an approval request has no `progress`.
  void event.data.progress;
});

client.on("execution.progress", (event) => {
  const percent: number = event.data.progress;
  const seq: number = event.seq;
  void [percent, seq];
});

client.on("my.custom_type", (event) => {
  // Unknown types carry `unknown` data.
  // @ts-expect-error: `data` is unknown until checked.
  void event.data.anything;
});

client.on("*", (event: HeraldEvent<string>) => {
  if (isEvent(event, "state.changed")) {
    const state: string = event.data.state;
    void state;
  }
});

client.onState((state: ConnectionState) => {
  if (state.state === "reconnecting") {
    const delay: number = state.delay + state.attempt;
    void delay;
  }
});

client.onState((state: ConnectionState) => {
  if (state.state === "closed" && state.reason === "terminal") {
    const code: number = state.code;
    void code;
  }
});

client.on("approval.resolved", (event) => {
  const resolved: ApprovalResolved = event.data;
  const task: string = event.data.task_id;
  void [resolved, task];
});

client.onGap((gap) => void gap.reason);
const subscription = client.subscribe(["execution:exec_1", "run:*"], { since: { "execution:exec_1": { seq: 4, epoch: "e" } }, snapshot: true, filter: { types: ["execution.*"] } });
const ready: Promise<void> = subscription.ready();
subscription.on("execution.progress", (event) => {
  const percent: number = event.data.progress;
  void percent;
});
subscription.onState((state: SubscriptionState) => {
  if (state.state === "subscribed") void state.positions["execution:exec_1"]?.seq;
});
const welcomed: Promise<void> = client.connect();
const known: readonly KnownEventType[] = KNOWN_EVENT_TYPES;
void [ready, welcomed, known, subscription.unsubscribe()];
void client.cancel({ task_id: "t1", reason: "stop" });
void client.pause({ run_id: "r1" });
// @ts-expect-error: a control request needs task_id or run_id.
void client.resume({ reason: "nothing to resume" });
