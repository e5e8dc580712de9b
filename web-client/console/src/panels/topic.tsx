// One topic: its history (paged over `GET /api/v1/topics/{topic}/events`),
// its keyed snapshot (re-read when a keyed event or a `gap` arrives), and a
// live tail filterable by type pattern and priority that shows `gap` frames
// for what they are, and the hub's refusal of the subscription (a token that
// does not cover the topic) instead of waiting for events that will not come.

import { useEffect, useRef, useState } from "preact/hooks";
import type { Event, Gap, HeraldClient, Priority, SubscriptionState } from "../../../dist/index.js";
import { typeMatches } from "../../../dist/index.js";
import type { Api } from "../api.js";
import { json, time } from "../format.js";
import { useFrameRender, useLoad, useSubscription, useThrottle } from "../hooks.js";
import { href, isRunTopic } from "../route.js";

const PAGE = 50;
/** Rows the live tail keeps. */
const TAIL = 500;
const PRIORITIES: Priority[] = ["low", "normal", "high", "critical"];
/**
 * The protocol's type pattern grammar (`TYPE_PATTERN_REGEX` in
 * `herald_protocol::filter`): an exact type, `domain.*`, or `*`.
 */
const TYPE_PATTERN = /^(\*|[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*\.(\*|[a-z][a-z0-9_-]*))$/;
/** The snapshot is re-read at most this often while keyed events arrive. */
const SNAPSHOT_EVERY_MS = 1000;
/** How often a history or snapshot read that failed is tried again while nothing else prompts it. */
const HISTORY_RETRY_MS = 3000;

/** History pages read so far, oldest first, each seq once. */
interface Pages {
  events: Event[];
  loading: boolean;
  /** The oldest retained event is shown: there is nothing older to page to. */
  complete: boolean;
  error?: string;
}

type TailRow = { kind: "event"; event: Event } | { kind: "gap"; gap: Gap; at: number };

/** `seq a–b`, `seq a`, or nothing when `to < from` (a range with no event). */
function seqRange(from: number, to: number): string | undefined {
  if (to < from) return undefined;
  return to === from ? `seq ${from}` : `seq ${from}–${to}`;
}

/** What a `gap` row says: the lost range, or for a new stream, that the history was reset. */
function GapText({ gap }: { gap: Gap }) {
  const range = seqRange(gap.from_seq, gap.to_seq);
  if (gap.reason === "epoch_changed") {
    // The hub names the new stream's events so far (`1..=seq`, none in a
    // stream still empty): they are not replayed, History shows them.
    return (
      <>
        <b>gap</b>: the topic's history was reset (a new stream, <code>epoch_changed</code>): the rows below are from the old stream
        {range ? `; ${range} of the new stream will not arrive here (History shows them)` : ""}
      </>
    );
  }
  return (
    <>
      <b>gap</b>: {range ?? "events"} will not arrive (<code>{gap.reason}</code>
      {gap.reason === "shed" ? ": this page read too slowly" : ": no longer retained"})
    </>
  );
}

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
  const refreshSnapshot = useThrottle(reloadSnapshot, SNAPSHOT_EVERY_MS);
  // A snapshot the store could not serve: read again, as a failed history is.
  const snapshotFailed = useRef(false);
  snapshotFailed.current = snapshot.error !== undefined;
  const [pages, setPages] = useState<Pages>({ events: [], loading: false, complete: false });
  // Bumped by each newest-page load: an older page that answers after it
  // belongs to what was shown before and is dropped.
  const generation = useRef(0);
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
  // After the topic's stream was reset, its history starts empty: the newest
  // page is read again as live events come, until it holds a whole page.
  const historyFollows = useRef(false);
  // The newest page could not be read (the store was unreachable): read
  // again when the subscription is confirmed again or an event comes.
  const historyFailed = useRef(false);

  /** The newest page (`before` undefined), or the page older than seq `before`. */
  const loadPage = async (before: number | undefined) => {
    const mine = before === undefined ? ++generation.current : generation.current;
    setPages((p) => ({ ...p, loading: true, error: undefined }));
    try {
      let since = 0;
      if (before === undefined) {
        const latest = await api.history(topic, Number.MAX_SAFE_INTEGER, 1);
        since = Math.max(0, latest.seq - PAGE);
      } else {
        since = Math.max(0, before - 1 - PAGE);
      }
      const page = await api.history(topic, since, PAGE);
      if (generation.current !== mine) return;
      // The hub answers the first retained events after `since`: on a
      // trimmed topic those can be the ones already shown.
      const fresh = before === undefined ? page.events : page.events.filter((e) => e.seq < before);
      const first = page.events[0]?.seq;
      // Read from the start, or the hub skipped seqs it no longer holds, or
      // nothing older came: the oldest retained event is shown.
      const complete = since === 0 || first === undefined || first > since + 1 || fresh.length === 0;
      if (before === undefined && fresh.length >= PAGE) historyFollows.current = false;
      if (before === undefined) historyFailed.current = false;
      setPages((p) => {
        if (before === undefined) return { events: fresh, loading: false, complete };
        const shown = new Set(p.events.map((e) => e.seq));
        return { events: [...fresh.filter((e) => !shown.has(e.seq)), ...p.events], loading: false, complete };
      });
    } catch (error) {
      if (generation.current !== mine) return;
      if (before === undefined) historyFailed.current = true;
      setPages((p) => ({ ...p, loading: false, error: (error as Error).message }));
    }
  };

  const refreshHistory = useThrottle(() => void loadPage(undefined), SNAPSHOT_EVERY_MS);
  // A quiet topic brings neither an event nor a new subscription: a failed
  // read is also tried again every few seconds.
  useEffect(() => {
    const timer = setInterval(() => {
      if (historyFailed.current) refreshHistory();
      if (snapshotFailed.current) refreshSnapshot();
    }, HISTORY_RETRY_MS);
    return () => clearInterval(timer);
  }, [topic]);

  useSubscription(
    client,
    [topic],
    {},
    (subscription) => {
      historyFollows.current = false;
      tail.current = [];
      render();
      subscription.onState((state) => {
        setWatching(state);
        if (state.state === "subscribed" && historyFailed.current) refreshHistory();
        if (state.state === "subscribed" && snapshotFailed.current) refreshSnapshot();
      });
      void loadPage(undefined);
      subscription.on("*", (event) => {
        add({ kind: "event", event: event as Event });
        // A keyed event changes the snapshot.
        if (event.key) refreshSnapshot();
        if (historyFollows.current || historyFailed.current) refreshHistory();
      });
      subscription.onGap((gap) => {
        add({ kind: "gap", gap, at: Date.now() });
        // Events were lost: re-read state; after a new stream the history
        // shown is the old stream's.
        refreshSnapshot();
        if (gap.reason === "epoch_changed") {
          historyFollows.current = true;
          void loadPage(undefined);
        }
      });
      subscription.onSnapshot(() => reloadSnapshot());
    },
    [],
  );

  const pattern = typeFilter.trim();
  const badPattern = pattern !== "" && !TYPE_PATTERN.test(pattern);
  const shown = badPattern
    ? []
    : tail.current.filter(
        (row) =>
          row.kind === "gap" ||
          ((!pattern || typeMatches(pattern, row.event.event_type)) &&
            PRIORITIES.indexOf(row.event.priority) >= PRIORITIES.indexOf(minPriority)),
      );
  const hidden = tail.current.length - shown.length;
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
              aria-invalid={badPattern ? "true" : "false"}
              aria-describedby={badPattern ? "type-filter-check" : undefined}
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
              ) : badPattern ? (
                <tr>
                  <td colSpan={6} id="type-filter-check" class="error-text" role="alert" data-type-filter="invalid">
                    <code>{pattern}</code> is not a type pattern: give a type (<code>step.completed</code>), a domain (
                    <code>step.*</code>) or <code>*</code>.
                  </td>
                </tr>
              ) : shown.length === 0 ? (
                <tr>
                  <td colSpan={6} class="muted">
                    {hidden > 0 ? `${hidden} events hidden by the filter.` : "Waiting for events…"}
                  </td>
                </tr>
              ) : null}
              {shown.map((row) =>
                row.kind === "event" ? (
                  <EventRow key={`e${row.event.seq}`} event={row.event} />
                ) : (
                  <tr key={`g${row.gap.from_seq}-${row.at}`} class="gap-row" data-gap={row.gap.reason}>
                    <td colSpan={6}>
                      <GapText gap={row.gap} />
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
        <p class="toolbar">
          {snapshot.value ? (
            <span class="muted" data-snapshot-seq={snapshot.value.seq}>
              as of seq {snapshot.value.seq}
            </span>
          ) : null}
          <button type="button" aria-label="Refresh the snapshot" onClick={reloadSnapshot}>
            Refresh
          </button>
        </p>
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
          <span class="muted" data-history-shown={pages.events.length}>
            {pages.events.length} retained events shown{oldest !== undefined ? ` from seq ${oldest}` : ""}
            {oldest !== undefined && pages.complete ? " (the oldest retained)" : ""}
          </span>
          <button type="button" disabled={pages.loading || oldest === undefined || pages.complete} onClick={() => {
              historyFollows.current = false;
              void loadPage(oldest);
            }}>
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
