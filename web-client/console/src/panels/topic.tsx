// One topic: its history (paged over `GET /api/v1/topics/{topic}/events`),
// its keyed snapshot, and a live tail filterable by type pattern and
// priority that shows `gap` frames for what they are, and the hub's refusal
// of the subscription (a token that does not cover the topic) instead of
// waiting for events that will not come.

import { useRef, useState } from "preact/hooks";
import type { Event, Gap, HeraldClient, Priority, SubscriptionState } from "../../../dist/index.js";
import { typeMatches } from "../../../dist/index.js";
import type { Api } from "../api.js";
import { json, time } from "../format.js";
import { useFrameRender, useLoad, useSubscription } from "../hooks.js";
import { href, isRunTopic } from "../route.js";

const PAGE = 50;
/** Rows the live tail keeps. */
const TAIL = 500;
const PRIORITIES: Priority[] = ["low", "normal", "high", "critical"];

type TailRow = { kind: "event"; event: Event } | { kind: "gap"; gap: Gap; at: number };

function EventRow({ event }: { event: Event }) {
  return (
    <tr class={`priority-${event.priority}`} data-seq={event.seq}>
      <td class="num">{event.seq}</td>
      <td>{time(event.timestamp)}</td>
      <td>
        <code>{event.event_type}</code>
      </td>
      <td>{event.priority}</td>
      <td>{event.key ?? ""}</td>
      <td class="data">
        <code>{json(event.data)}</code>
      </td>
    </tr>
  );
}

export function Topic({ client, api, topic }: { client: HeraldClient; api: Api; topic: string }) {
  const [snapshot, reloadSnapshot] = useLoad(() => api.snapshot(topic), [topic]);
  const [pages, setPages] = useState<{ events: Event[]; since: number; loading: boolean; error?: string }>({
    events: [],
    since: -1,
    loading: false,
  });
  // Newest first, at most TAIL rows; rendered once per frame.
  const tail = useRef<TailRow[]>([]);
  const render = useFrameRender();
  const add = (row: TailRow) => {
    tail.current.unshift(row);
    if (tail.current.length > TAIL) tail.current.length = TAIL;
    render();
  };
  const [typeFilter, setTypeFilter] = useState("");
  const [minPriority, setMinPriority] = useState<Priority>("low");
  const [watching, setWatching] = useState<SubscriptionState>({ state: "pending" });

  const loadPage = async (before: number | undefined) => {
    setPages((p) => ({ ...p, loading: true }));
    try {
      let since = 0;
      if (before === undefined) {
        const latest = await api.history(topic, Number.MAX_SAFE_INTEGER, 1);
        since = Math.max(0, latest.seq - PAGE);
      } else {
        since = Math.max(0, before - 1 - PAGE);
      }
      const page = await api.history(topic, since, before === undefined ? PAGE : Math.min(PAGE, before - 1 - since));
      setPages((p) => ({
        events: before === undefined ? page.events : [...page.events, ...p.events],
        since,
        loading: false,
      }));
    } catch (error) {
      setPages((p) => ({ ...p, loading: false, error: (error as Error).message }));
    }
  };

  useSubscription(
    client,
    [topic],
    {},
    (subscription) => {
      tail.current = [];
      render();
      subscription.onState(setWatching);
      void loadPage(undefined);
      subscription.on("*", (event) => add({ kind: "event", event: event as Event }));
      subscription.onGap((gap) => add({ kind: "gap", gap, at: Date.now() }));
      subscription.onSnapshot(() => reloadSnapshot());
    },
    [],
  );

  const pattern = typeFilter.trim();
  const shown = tail.current.filter(
    (row) =>
      row.kind === "gap" ||
      ((!pattern || typeMatches(pattern, row.event.event_type)) &&
        PRIORITIES.indexOf(row.event.priority) >= PRIORITIES.indexOf(minPriority)),
  );
  const oldest = pages.events[0]?.seq;
  return (
    <section aria-labelledby="topic-title">
      <p class="crumbs">
        <a href={href({ panel: "topics" })}>Topics</a> /
      </p>
      <h1 id="topic-title">
        <code>{topic}</code>
      </h1>
      <p class="toolbar">
        {isRunTopic(topic) ? <a href={href({ panel: "run", topic })}>Run view</a> : null}
        <a href={href({ panel: "publish", topic })}>Publish to this topic</a>
      </p>

      <section aria-labelledby="tail-title">
        <h2 id="tail-title">Live</h2>
        <div class="filters" role="group" aria-label="Live tail filter">
          <label>
            Type pattern
            <input
              value={typeFilter}
              placeholder="e.g. step.* or *"
              onInput={(e) => setTypeFilter((e.target as HTMLInputElement).value)}
              name="type-filter"
            />
          </label>
          <label>
            At least
            <select value={minPriority} onChange={(e) => setMinPriority((e.target as HTMLSelectElement).value as Priority)} name="min-priority">
              {PRIORITIES.map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
          </label>
        </div>
        <div class="table-wrap tail">
          <table aria-live="polite" aria-relevant="additions" class="live-tail">
            <thead>
              <tr>
                <th scope="col">Seq</th>
                <th scope="col">Time</th>
                <th scope="col">Type</th>
                <th scope="col">Priority</th>
                <th scope="col">Key</th>
                <th scope="col">Data</th>
              </tr>
            </thead>
            <tbody>
              {watching.state === "refused" ? (
                <tr>
                  <td colSpan={6} class="error-text" role="alert" data-subscription="refused">
                    The hub refused the subscription: {watching.error.message}
                  </td>
                </tr>
              ) : shown.length === 0 ? (
                <tr>
                  <td colSpan={6} class="muted">
                    Waiting for events…
                  </td>
                </tr>
              ) : null}
              {shown.map((row) =>
                row.kind === "event" ? (
                  <EventRow key={`e${row.event.seq}`} event={row.event} />
                ) : (
                  <tr key={`g${row.gap.from_seq}-${row.at}`} class="gap-row" data-gap={row.gap.reason}>
                    <td colSpan={6}>
                      <b>gap</b>: seq {row.gap.from_seq}–{row.gap.to_seq} will not arrive (<code>{row.gap.reason}</code>
                      {row.gap.reason === "shed"
                        ? ": this page read too slowly"
                        : row.gap.reason === "trimmed"
                          ? ": no longer retained"
                          : ": the topic's history is a new stream"}
                      )
                    </td>
                  </tr>
                ),
              )}
            </tbody>
          </table>
        </div>
      </section>

      <section aria-labelledby="snapshot-title">
        <h2 id="snapshot-title">Snapshot</h2>
        {snapshot.error ? <p class="error-text">{snapshot.error}</p> : null}
        {snapshot.value && snapshot.value.events.length === 0 ? (
          <p class="muted">No keyed events (publish with a <code>key</code> to build a snapshot).</p>
        ) : null}
        {snapshot.value && snapshot.value.events.length > 0 ? (
          <div class="table-wrap">
            <table class="snapshot">
              <thead>
                <tr>
                  <th scope="col">Key</th>
                  <th scope="col">Seq</th>
                  <th scope="col">Type</th>
                  <th scope="col">Data</th>
                </tr>
              </thead>
              <tbody>
                {snapshot.value.events.map((event) => (
                  <tr key={event.key}>
                    <th scope="row">{event.key}</th>
                    <td class="num">{event.seq}</td>
                    <td>
                      <code>{event.event_type}</code>
                    </td>
                    <td class="data">
                      <code>{json(event.data)}</code>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </section>

      <section aria-labelledby="history-title">
        <h2 id="history-title">History</h2>
        {pages.error ? <p class="error-text">{pages.error}</p> : null}
        <p class="toolbar">
          <span class="muted">
            {pages.events.length} retained events shown{oldest !== undefined ? ` from seq ${oldest}` : ""}
          </span>
          <button type="button" disabled={pages.loading || oldest === undefined || oldest <= 1} onClick={() => void loadPage(oldest)}>
            Older
          </button>
          <button type="button" disabled={pages.loading} onClick={() => void loadPage(undefined)}>
            Newest
          </button>
        </p>
        <div class="table-wrap">
          <table class="history">
            <thead>
              <tr>
                <th scope="col">Seq</th>
                <th scope="col">Time</th>
                <th scope="col">Type</th>
                <th scope="col">Priority</th>
                <th scope="col">Key</th>
                <th scope="col">Data</th>
              </tr>
            </thead>
            <tbody>
              {[...pages.events].reverse().map((event) => (
                <EventRow key={event.seq} event={event} />
              ))}
            </tbody>
          </table>
        </div>
      </section>
    </section>
  );
}
