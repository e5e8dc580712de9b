// Type-level checks of the wrapper's public API, compiled (never run) by
// `cargo xtask wasm` with test/tsconfig.json: a wrong type here fails the build.

import { HeraldClient, isEvent, type ConnectionState, type HeraldEvent } from "../dist/index.js";

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

client.onGap((gap) => void gap.reason);
void client.subscribe(["execution:exec_1", "run:*"], { since: { "execution:exec_1": { seq: 4, epoch: "e" } }, snapshot: true, filter: { types: ["execution.*"] } });
void client.cancel({ task_id: "t1", reason: "stop" });
void client.pause({ run_id: "r1" });
// @ts-expect-error: a control request needs task_id or run_id.
void client.resume({ reason: "nothing to resume" });
