// Runs: the topics whose events describe a run (`run:*`, `execution:*`,
// `task:*`, `crew:*`), newest activity first. The hub lists each kind the
// most recently published to first, so the latest runs show however many
// older ones it holds; past RUNS_LISTED, the older ones are left out (and
// the panel says so).

import type { TopicSummary } from "../../../dist/index.js";
import type { Api } from "../api.js";
import { ago } from "../format.js";
import { useLoad, useNow } from "../hooks.js";
import { href, RUN_KINDS } from "../route.js";

/** How many runs the panel lists: the most recently active. */
export const RUNS_LISTED = 1000;

/** The most recently active runs of every kind, and whether the hub holds more. */
async function latestRuns(api: Api): Promise<{ runs: TopicSummary[]; more: boolean }> {
  const lists = await Promise.all(RUN_KINDS.map((kind) => api.topics(RUNS_LISTED, { pattern: `${kind}:*`, order: "recent" })));
  const runs = lists
    .flatMap((list) => list.topics)
    .sort((a, b) => (b.last_event?.timestamp ?? 0) - (a.last_event?.timestamp ?? 0));
  const more = runs.length > RUNS_LISTED || lists.some((list) => list.truncated);
  return { runs: runs.slice(0, RUNS_LISTED), more };
}

export function Runs({ api }: { api: Api }) {
  const [list] = useLoad(() => latestRuns(api), [], 5000);
  const now = useNow(1000);
  const runs = list.value?.runs ?? [];
  return (
    <section aria-labelledby="runs-title">
      <h1 id="runs-title">Runs</h1>
      {list.error ? <p class="error-text">{list.error}</p> : null}
      {list.value?.more ? (
        <p class="muted" role="status" data-truncated>
          The hub holds more runs: these are the {RUNS_LISTED.toLocaleString("en")} most recently active (open any run at{" "}
          <code>#/runs/TOPIC</code>).
        </p>
      ) : null}
      {list.value && runs.length === 0 ? (
        <p class="muted">
          No run yet: a producer publishing on <code>run:ID</code>, <code>execution:ID</code>, <code>task:ID</code> or{" "}
          <code>crew:ID</code> shows up here (try the example producer in the README).
        </p>
      ) : null}
      <ul class="run-list">
        {runs.map((run) => (
          <li key={run.topic} data-run={run.topic}>
            <a href={href({ panel: "run", topic: run.topic })}>
              <code>{run.topic}</code>
            </a>
            <span class="muted">
              {" "}
              seq {run.seq}
              {run.last_event ? ` · ${run.last_event.event_type} ${ago(run.last_event.timestamp, now)}` : ""}
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}
