// Topics: every topic the hub holds, with its seq, epoch, subscribers on
// this node, retained events and last event.

import { useState } from "preact/hooks";
import { type Api, TOPICS_DEFAULT, TOPICS_MAX } from "../api.js";
import { ago, bytes } from "../format.js";
import { useLoad, useNow } from "../hooks.js";
import { href, isRunTopic } from "../route.js";

export function Topics({ api }: { api: Api }) {
  const [limit, setLimit] = useState(TOPICS_DEFAULT);
  const [list, reload] = useLoad(() => api.topics(limit), [limit], 3000);
  const now = useNow(1000);
  const topics = list.value?.topics ?? [];
  return (
    <section aria-labelledby="topics-title">
      <h1 id="topics-title">Topics</h1>
      <p class="toolbar">
        {list.value && !list.error ? <span class="muted">{topics.length} topics</span> : null}
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </p>
      {list.error ? <p class="error-text">{list.error}</p> : null}
      {list.value?.truncated ? (
        <p class="error-text" role="status" data-truncated>
          The hub holds more topics: these are the first {topics.length.toLocaleString("en")} in name order.{" "}
          {limit < TOPICS_MAX ? (
            <button type="button" onClick={() => setLimit(TOPICS_MAX)}>
              Show up to {TOPICS_MAX.toLocaleString("en")}
            </button>
          ) : (
            <>
              Open any other at <code>#/topics/TOPIC</code>.
            </>
          )}
        </p>
      ) : null}
      <div class="table-wrap">
        <table class="topics">
          <thead>
            <tr>
              <th scope="col">Topic</th>
              <th scope="col">Seq</th>
              <th scope="col">Epoch</th>
              <th scope="col" title="Exact subscriptions held by the node serving this console">
                Subscribers (this node)
              </th>
              <th scope="col">Retained</th>
              <th scope="col">Last event</th>
            </tr>
          </thead>
          <tbody>
            {topics.map((topic) => (
              <tr key={topic.topic} data-topic={topic.topic}>
                <th scope="row">
                  <a href={href({ panel: "topic", topic: topic.topic })}>{topic.topic}</a>
                  {isRunTopic(topic.topic) ? (
                    <a class="tag" href={href({ panel: "run", topic: topic.topic })}>
                      run view
                    </a>
                  ) : null}
                </th>
                <td class="num" data-col="seq">
                  {topic.seq}
                </td>
                <td>
                  <code title={topic.epoch}>{topic.epoch.slice(0, 8)}…</code>
                </td>
                <td class="num">{topic.subscribers}</td>
                <td class="num">
                  {topic.retained}
                  {/* A shared store's bytes are its own (0 here): only a node's own memory is shown. */}
                  {topic.retained_bytes > 0 ? <span class="muted"> ({bytes(topic.retained_bytes)})</span> : null}
                </td>
                <td>
                  {topic.last_event ? (
                    <>
                      <code>{topic.last_event.event_type}</code>{" "}
                      <span class="muted">{ago(topic.last_event.timestamp, now)}</span>
                    </>
                  ) : (
                    <span class="muted">none retained</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
