// Runs: the topics whose events describe a run (`run:*`, `execution:*`,
// `task:*`, `crew:*`), newest activity first. The hub lists topics in name
// order, at most 10,000 an answer, with no filter by kind nor order by
// activity: so the panel reads the most it can and says when the hub holds
// more (runs among those are not listed).

import { type Api, TOPICS_MAX } from "../api.js";
import { ago } from "../format.js";
import { useLoad, useNow } from "../hooks.js";
import { href, isRunTopic } from "../route.js";

export function Runs({ api }: { api: Api }) {
  const [list] = useLoad(() => api.topics(TOPICS_MAX), [], 5000);
  const now = useNow(1000);
  const runs = (list.value?.topics ?? [])
    .filter((t) => isRunTopic(t.topic))
    .sort((a, b) => (b.last_event?.timestamp ?? 0) - (a.last_event?.timestamp ?? 0));
  return (
    <section aria-labelledby="runs-title">
      <h1 id="runs-title">Runs</h1>
      {list.error ? <p class="error-text">{list.error}</p> : null}
      {list.value?.truncated ? (
        <p class="error-text" role="status" data-truncated>
          The hub holds more than {TOPICS_MAX.toLocaleString("en")} topics and lists only the first in name order: runs
          among the rest are not shown here (open one at <code>#/runs/TOPIC</code>).
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
