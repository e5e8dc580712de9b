// Runs: the topics whose events describe a run (`run:*`, `execution:*`,
// `task:*`, `crew:*`), newest activity first.

import type { Api } from "../api.js";
import { ago } from "../format.js";
import { useLoad, useNow } from "../hooks.js";
import { href, isRunTopic } from "../route.js";

export function Runs({ api }: { api: Api }) {
  const [list] = useLoad(() => api.topics(), [], 3000);
  const now = useNow(1000);
  const runs = (list.value?.topics ?? [])
    .filter((t) => isRunTopic(t.topic))
    .sort((a, b) => (b.last_event?.timestamp ?? 0) - (a.last_event?.timestamp ?? 0));
  return (
    <section aria-labelledby="runs-title">
      <h1 id="runs-title">Runs</h1>
      {list.error ? <p class="error-text">{list.error}</p> : null}
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
