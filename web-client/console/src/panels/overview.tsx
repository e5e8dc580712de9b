// Overview: the hub's status (connections and pending approvals of every
// node, saying when a node did not answer), live charts of the figures of
// the node serving the console (its `metrics.updated` events on topic
// `metrics`, what `/ws/metrics` follows; every node sharing a store
// publishes its own there) over the last minutes, and the node list when
// several nodes share a store. A restarted node is a new node id: on a
// single node the charts keep the earlier process's figures, so the
// outage reads as a break in the line; the node list is read again when
// the console's connection opens again.

import { useEffect, useMemo, useState } from "preact/hooks";
import type { HeraldClient, Metrics } from "../../../dist/index.js";
import type { Api } from "../api.js";
import { ago, dateTime, number } from "../format.js";
import { useLoad, useNow, useSubscription } from "../hooks.js";
import { Chart } from "../ui/chart.js";

/** Points kept per chart: ten minutes at the default 5 s interval. */
const POINTS = 120;
/** The hub publishes its figures at most this often (`--metrics-interval` floor). */
const MIN_INTERVAL_S = 0.1;
/** A step this many times the usual one between two figures is a hole in time. */
const HOLE = 2.5;

const FIGURES: Array<{ key: string; title: string; unit?: string }> = [
  { key: "events_per_s", title: "Events/s" },
  { key: "deliveries_per_s", title: "Deliveries/s" },
  { key: "active_connections", title: "Connections" },
  { key: "events_shed_per_s", title: "Shed/s" },
  { key: "delivery_lag_p99_ms", title: "Delivery lag p99", unit: "ms" },
  { key: "pending_approvals", title: "Approvals pending" },
];

/** One `metrics.updated`: its id, seq, time (s since the epoch), node and figures. */
interface Point {
  id: string;
  seq: number;
  time: number;
  /** The node that published it (absent from hubs that do not say). */
  node?: string;
  figures: Record<string, number>;
}

type MetricsEvent = { id: string; seq: number; timestamp: number; data: Metrics };

/**
 * The newest POINTS of `points` and `events`, each event once (by its id: a
 * hub that restarted without its store counts seqs from 1 again), in time
 * order (then seq order, for figures of one millisecond).
 */
function merge(points: Point[], events: MetricsEvent[]): Point[] {
  const byId = new Map(points.map((p) => [p.id, p]));
  for (const event of events) {
    const { metrics, node } = event.data;
    byId.set(event.id, { id: event.id, seq: event.seq, time: event.timestamp / 1000, node, figures: metrics ?? {} });
  }
  return [...byId.values()].sort((a, b) => a.time - b.time || a.seq - b.seq).slice(-POINTS * MAX_NODES);
}

/**
 * Every node publishes its figures on the same topic: this many nodes'
 * points are kept, so that the node's own POINTS are among them.
 */
const MAX_NODES = 16;

interface Series {
  times: number[];
  values: Record<string, Array<number | null>>;
}

/**
 * The charts' data: a null point in each hole in time (a step well over the
 * usual one: no figures were published, or the page missed them), so uPlot
 * breaks the line there instead of drawing a ramp that never happened.
 */
function series(points: Point[]): Series {
  const steps = points
    .slice(1)
    .map((p, i) => p.time - (points[i]?.time ?? p.time))
    .sort((a, b) => a - b);
  const usual = Math.max(MIN_INTERVAL_S, steps[Math.floor(steps.length / 2)] ?? 0);
  const times: number[] = [];
  const values: Series["values"] = Object.fromEntries(FIGURES.map(({ key }) => [key, []]));
  let previous: number | undefined;
  for (const point of points) {
    if (previous !== undefined && point.time - previous > HOLE * usual) {
      times.push(previous + usual);
      for (const { key } of FIGURES) values[key]?.push(null);
    }
    times.push(point.time);
    for (const { key } of FIGURES) values[key]?.push(point.figures[key] ?? null);
    previous = point.time;
  }
  return { times, values };
}

export function Overview({ client, api }: { client: HeraldClient; api: Api }) {
  const [points, setPoints] = useState<Point[]>([]);
  const [nodes, reloadNodes] = useLoad(() => api.nodes(), [], 10_000);
  const [status, reloadStatus] = useLoad(() => api.status(), [], 5000);
  const now = useNow(1000);
  const ownNode = nodes.value?.node;
  const several = (nodes.value?.nodes.length ?? 0) > 1;

  // A connection that opens again may be to a restarted hub (a new node id,
  // new counts): read them now rather than at the next period.
  useEffect(
    () =>
      client.onState((state) => {
        if (state.state !== "open") return;
        reloadNodes();
        reloadStatus();
      }),
    [client],
  );

  useSubscription(client, ["metrics"], {}, (subscription) => {
    // The newest figures the topic retained (the last minutes), merged with
    // the live ones, whichever answers first.
    const retained = async () => {
      const latest = await api.history("metrics", Number.MAX_SAFE_INTEGER, 1);
      const history = await api.history("metrics", Math.max(0, latest.seq - POINTS), POINTS);
      const events = history.events.filter((e) => e.event_type === "metrics.updated") as unknown as MetricsEvent[];
      setPoints((p) => merge(p, events));
    };
    void retained().catch(() => undefined);
    subscription.on("metrics.updated", (event) => setPoints((p) => merge(p, [event])));
  });

  // This node's figures only when several nodes publish: theirs
  // interleaved would zigzag. One node's figures are all kept, whichever of
  // its processes published them.
  const own = useMemo(
    () => points.filter((p) => !several || ownNode === undefined || p.node === undefined || p.node === ownNode).slice(-POINTS),
    [points, ownNode, several],
  );
  const { times, values } = useMemo(() => series(own), [own]);
  // Each figure's newest value (a figure can be left out of one event).
  const newest = useMemo(() => Object.assign({}, ...own.map((p) => p.figures)) as Record<string, number>, [own]);
  const latest = (key: string) => {
    const value = newest[key];
    return value === undefined ? undefined : number(value, key.endsWith("_ms") ? 2 : 1);
  };
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      {status.error ? <p class="error-text">{status.error}</p> : null}
      {status.value?.partial ? (
        <p class="error-text" role="status" data-partial>
          Not every node answered (or the store is unreachable): the counts below leave some out.
        </p>
      ) : null}
      <div class="cards">
        <div class="card">
          <span>Connections{several ? " (all nodes)" : ""}</span>
          <b data-figure="status-connections">{status.value ? number(status.value.active_connections, 0) : "–"}</b>
        </div>
        <div class="card">
          <span>Approvals pending</span>
          <b data-figure="status-approvals">{status.value ? number(status.value.pending_approvals, 0) : "–"}</b>
        </div>
        <div class="card">
          <span>Uptime</span>
          <b>{newest.uptime_s === undefined ? "–" : `${Math.round(newest.uptime_s)} s`}</b>
        </div>
        <div class="card">
          <span>Topics</span>
          <b data-figure="topics">{latest("topics") ?? "–"}</b>
        </div>
        <div class="card">
          <span>Events published</span>
          <b>{latest("events_published_total") ?? "–"}</b>
        </div>
        <div class="card">
          <span>Deliveries</span>
          <b>{latest("events_delivered_total") ?? "–"}</b>
        </div>
      </div>
      {nodes.error ? (
        <p class="muted" data-charts-node="unknown">
          Which node serves this console is not known ({nodes.error}): with several nodes, the charts mix their figures.
        </p>
      ) : null}
      {several && ownNode ? (
        <p class="muted" data-charts-node={ownNode}>
          The charts and the figures above them are this console's node's (<code>{ownNode.slice(0, 12)}</code>): each node publishes its own.
        </p>
      ) : null}
      {times.length === 0 ? (
        <p class="muted">Waiting for the hub's first figures (every <code>--metrics-interval</code>, 5 s by default)…</p>
      ) : null}
      <div class="charts">
        {FIGURES.map(({ key, title, unit }) => (
          <Chart key={key} title={title} unit={unit} times={times} values={values[key] ?? []} latest={latest(key)} />
        ))}
      </div>
      {nodes.value && nodes.value.nodes.length > 1 ? (
        <section aria-labelledby="nodes-title">
          <h2 id="nodes-title">Nodes</h2>
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>Node</th>
                  <th>Started</th>
                  <th>Last heard</th>
                </tr>
              </thead>
              <tbody>
                {nodes.value.nodes.map((node) => (
                  <tr key={node.node} data-node={node.node}>
                    <td>
                      <code>{node.node}</code>
                      {node.node === nodes.value?.node ? <span class="muted"> (this console's node)</span> : null}
                    </td>
                    <td>{dateTime(node.started_at)}</td>
                    <td>{ago(node.seen_at, now)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
      ) : null}
    </section>
  );
}
