// One run, live from its topic's events: status, the DAG, steps on a
// timeline, agent messages and tool calls, cost, files, its pending
// approval, and pause / resume / cancel (control requests the producer gets
// as `control.*` on its topic). The hub's refusals (of the subscription,
// of a control request) are shown where they happened.

import { Fragment } from "preact";
import { useRef, useState } from "preact/hooks";
import type { HeraldClient, HeraldEvent, SubscriptionState } from "../../../dist/index.js";
import type { ApprovalBook } from "../approvals.js";
import type { Api } from "../api.js";
import { bytes, duration, number, time } from "../format.js";
import { useFrameRender, useNow, useStore, useSubscription } from "../hooks.js";
import { href } from "../route.js";
import { type Run as RunModel, apply, emptyRun } from "../run/model.js";
import { Dag } from "../ui/dag.js";
import { ApprovalCard, Refusals } from "./approval_card.js";

/** Events one history request asks for. */
const PAGE = 1000;
/**
 * The most retained events read before going live: past this the view says
 * its state may be stale instead of paging on (a run this long is better
 * read from its own records than replayed in a browser).
 */
const MAX_EVENTS = 50_000;
/** Live events held while the history loads (the newest). */
const WAITING = 10_000;

/** Why the view could not rebuild the run from everything the hub retains. */
type Incomplete = { kind: "capped"; read: number; lastSeq: number; topicSeq: number } | { kind: "failed"; message: string };

export function Run({ client, api, approvals, topic }: { client: HeraldClient; api: Api; approvals: ApprovalBook; topic: string }) {
  const run = useRef<RunModel>(emptyRun(topic));
  const render = useFrameRender();
  const [control, setControl] = useState<{ text: string; refused: boolean } | undefined>();
  const [watching, setWatching] = useState<SubscriptionState>({ state: "pending" });
  const [incomplete, setIncomplete] = useState<Incomplete | undefined>();
  const book = useStore(approvals);
  const now = useNow(1000);
  const [kind = "", id = ""] = topic.split(/:(.*)/s);

  useSubscription(client, [topic], {}, (subscription) => {
    run.current = emptyRun(topic);
    setIncomplete(undefined);
    render();
    subscription.onState(setWatching);
    // Every retained event first, page by page (each from the last seq
    // read) up to the topic's seq when the load began, then the live events
    // that came meanwhile (`apply` skips the seqs it has): applied first, a
    // live event would move `lastSeq` past the whole history. A later load
    // (after a gap) replaces one still under way.
    let loading: { waiting: HeraldEvent<string>[]; dropped: boolean } | undefined;
    const load = async () => {
      const mine = { waiting: [] as HeraldEvent<string>[], dropped: false };
      loading = mine;
      const fresh = emptyRun(topic);
      let short: Incomplete | undefined;
      try {
        let read = 0;
        let topicSeq = Number.POSITIVE_INFINITY;
        for (;;) {
          // Live events dropped from the bounded buffer are read here too.
          const first = mine.waiting[0]?.seq;
          const goal = mine.dropped && first !== undefined ? Math.max(topicSeq, first - 1) : topicSeq;
          if (fresh.lastSeq >= goal) break;
          if (read >= MAX_EVENTS) {
            short = { kind: "capped", read, lastSeq: fresh.lastSeq, topicSeq: goal };
            break;
          }
          const page = await api.history(topic, fresh.lastSeq, PAGE);
          if (loading !== mine) return;
          if (topicSeq === Number.POSITIVE_INFINITY) topicSeq = page.seq;
          const events = page.events as unknown as HeraldEvent<string>[];
          // Nothing after the last seq read: the history ends here.
          if (events.length === 0) break;
          for (const event of events) apply(fresh, event);
          read += events.length;
        }
      } catch (error) {
        if (loading !== mine) return;
        short = { kind: "failed", message: (error as Error).message };
      }
      loading = undefined;
      for (const event of mine.waiting) apply(fresh, event);
      run.current = fresh;
      setIncomplete(short);
      render();
    };
    void load();
    subscription.on("*", (event) => {
      if (loading) {
        loading.waiting.push(event);
        // Bounded: the load reads what is dropped here from the history.
        if (loading.waiting.length > WAITING) {
          loading.waiting.shift();
          loading.dropped = true;
        }
        return;
      }
      apply(run.current, event);
      render();
    });
    // Events were lost: rebuild from what the hub retains.
    subscription.onGap(() => void load());
    // Leaving the view stops a load under way at its next page.
    return () => {
      loading = undefined;
    };
  });

  const target = kind === "run" ? { run_id: id } : { task_id: id };
  const send = (action: "pause" | "resume" | "cancel") => {
    const reason = `from the console`;
    setControl({ text: `${action} sent, waiting for the hub…`, refused: false });
    client[action]({ ...target, reason }).then(
      () => setControl({ text: `${action} sent`, refused: false }),
      (e: Error) =>
        setControl({
          text: e.name === "RefusedError" ? `${action} refused by the hub: ${e.message}` : `${action} failed: ${e.message}`,
          refused: true,
        }),
    );
  };

  const model = run.current;
  const pending = book.pending.filter((a) => a.task_id === id);
  const steps = [...model.steps.values()].sort((a, b) => a.started - b.started);
  const start = steps[0]?.started ?? model.started ?? now;
  const end = Math.max(now, ...steps.map((s) => s.ended ?? now));
  const span = Math.max(1, end - start);
  const costNames = Object.keys(model.cost).sort();
  return (
    <section aria-labelledby="run-title">
      <p class="crumbs">
        <a href={href({ panel: "runs" })}>Runs</a> /
      </p>
      <h1 id="run-title">
        <code>{topic}</code> <span class={`pill status-${model.status}`} data-run-status={model.status}>{model.status}</span>
      </h1>
      <div class="toolbar" role="group" aria-label="Control the run">
        <button type="button" onClick={() => send("pause")}>
          Pause
        </button>
        <button type="button" onClick={() => send("resume")}>
          Resume
        </button>
        <button type="button" class="danger" onClick={() => send("cancel")}>
          Cancel
        </button>
        {control ? (
          <span class={control.refused ? "error-text" : "muted"} role={control.refused ? "alert" : "status"} data-control-refused={control.refused}>
            {control.text}
          </span>
        ) : null}
        <a href={href({ panel: "topic", topic })}>Raw events</a>
      </div>

      {watching.state === "refused" ? (
        <p class="error-text" role="alert" data-subscription="refused">
          The hub refused to follow this run: {watching.error.message}
        </p>
      ) : null}

      {incomplete?.kind === "capped" ? (
        <p class="error-text" role="alert" data-history="capped">
          Only the first {number(incomplete.read, 0)} retained events were read (up to seq {incomplete.lastSeq} of{" "}
          {incomplete.topicSeq}): what the run did after that, until the live events, is not shown, so its state may be stale.
        </p>
      ) : incomplete?.kind === "failed" ? (
        <p class="error-text" role="alert" data-history="failed">
          Could not read all of the run's retained events ({incomplete.message}): the state shown may be incomplete.
        </p>
      ) : null}

      <Refusals approvals={approvals} refused={book.refused.filter((r) => r.task_id === id)} />
      {pending.length > 0 ? (
        <section aria-labelledby="run-approval-title" class="run-approvals">
          <h2 id="run-approval-title">Waiting for approval</h2>
          {pending.map((approval) => (
            <ApprovalCard key={approval.callback_id} client={client} approvals={approvals} approval={approval} now={now} />
          ))}
        </section>
      ) : null}

      <div class="run-grid">
        <section aria-labelledby="dag-title" class="panel-box wide">
          <h2 id="dag-title">DAG</h2>
          <Dag nodes={[...model.nodes.values()]} edges={model.edges} />
        </section>

        <section aria-labelledby="steps-title" class="panel-box">
          <h2 id="steps-title">Steps</h2>
          {steps.length === 0 ? <p class="muted">No step events yet.</p> : null}
          <ol class="timeline">
            {steps.map((step) => {
              const left = ((step.started - start) / span) * 100;
              const width = Math.max(1, (((step.ended ?? now) - step.started) / span) * 100);
              return (
                <li key={step.name} data-step={step.name} data-status={step.status}>
                  <div class="timeline-label">
                    <b>{step.name}</b> <span class={`pill status-${step.status}`}>{step.status}</span>{" "}
                    <span class="muted">{duration((step.ended ?? now) - step.started)}</span>
                    {step.message ? <span class="muted"> · {step.message}</span> : null}
                  </div>
                  <div class="timeline-track" aria-hidden="true">
                    <span class={`timeline-bar status-${step.status}`} style={{ left: `${left}%`, width: `${width}%` }} />
                  </div>
                </li>
              );
            })}
          </ol>
        </section>

        <section aria-labelledby="cost-title" class="panel-box">
          <h2 id="cost-title">Cost</h2>
          {costNames.length === 0 ? <p class="muted">No <code>cost.updated</code> yet.</p> : null}
          <dl class="facts cost">
            {costNames.map((name) => (
              <Fragment key={name}>
                <dt>{name}</dt>
                <dd data-cost={name}>
                  {name.endsWith("usd") ? `$${(model.cost[name] ?? 0).toFixed(4)}` : number(model.cost[name] ?? 0, 2)}
                </dd>
              </Fragment>
            ))}
          </dl>
        </section>

        <section aria-labelledby="files-title" class="panel-box">
          <h2 id="files-title">Files</h2>
          {model.files.size === 0 ? <p class="muted">No file events yet.</p> : null}
          <ul class="files">
            {[...model.files.values()].map((file) => (
              <li key={file.path} data-file={file.path}>
                <code>{file.path}</code>
                <span class="muted">
                  {file.size !== undefined ? ` ${bytes(file.size)}` : ""} · {time(file.at)}
                  {file.updates > 1 ? ` · ${file.updates} updates` : ""}
                </span>
              </li>
            ))}
          </ul>
        </section>

        <section aria-labelledby="agents-title" class="panel-box wide">
          <h2 id="agents-title">Agents</h2>
          {model.agents.length === 0 ? <p class="muted">No agent events yet.</p> : null}
          <ol class="agents" aria-live="polite">
            {[...model.agents].reverse().map((entry) => (
              <li key={entry.seq} class={`agent-${entry.kind}`} data-kind={entry.kind}>
                <span class="muted">{time(entry.at)}</span> <b>{entry.agent}</b>{" "}
                {entry.kind === "tool_call" ? (
                  <>
                    <span class="pill">tool</span> <code>{entry.tool}</code> <span class="muted">{entry.detail}</span>
                  </>
                ) : entry.kind === "thinking" ? (
                  <i class="muted">{entry.text}</i>
                ) : (
                  <span>{entry.text}</span>
                )}
              </li>
            ))}
          </ol>
        </section>
      </div>
    </section>
  );
}
