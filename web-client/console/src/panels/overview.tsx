// Overview: live charts of the hub's figures (the `metrics.updated` events
// of topic `metrics`, what `/ws/metrics` follows), over the last minutes,
// and the node list when several nodes share a store.

import { useState } from "preact/hooks";
import type { HeraldClient, HeraldEvent, Metrics } from "../../../dist/index.js";
import type { Api } from "../api.js";
import { ago, dateTime, number } from "../format.js";
import { useLoad, useNow, useSubscription } from "../hooks.js";
import { Chart } from "../ui/chart.js";

/** Points kept per chart: ten minutes at the default 5 s interval. */
const POINTS = 120;

const FIGURES: Array<{ key: string; title: string; unit?: string }> = [
  { key: "events_per_s", title: "Events/s" },
  { key: "deliveries_per_s", title: "Deliveries/s" },
  { key: "active_connections", title: "Connections" },
  { key: "events_shed_per_s", title: "Shed/s" },
  { key: "delivery_lag_p99_ms", title: "Delivery lag p99", unit: "ms" },
  { key: "pending_approvals", title: "Approvals pending" },
];

interface Series {
  seq: number;
  times: number[];
  values: Record<string, Array<number | null>>;
  latest: Record<string, number>;
}

function add(series: Series, event: { seq: number; timestamp: number; data: Metrics }): Series {
  if (event.seq <= series.seq) return series;
  const figures = event.data.metrics ?? {};
  const keep = (list: Array<number | null>) => list.slice(-(POINTS - 1));
  const values: Series["values"] = {};
  for (const { key } of FIGURES) values[key] = [...keep(series.values[key] ?? []), figures[key] ?? null];
  return {
    seq: event.seq,
    times: [...series.times.slice(-(POINTS - 1)), event.timestamp / 1000],
    values,
    latest: { ...series.latest, ...figures },
  };
}

export function Overview({ client, api }: { client: HeraldClient; api: Api }) {
  const [series, setSeries] = useState<Series>({ seq: 0, times: [], values: {}, latest: {} });
  const [nodes] = useLoad(() => api.nodes(), [], 10_000);
  const now = useNow(1000);

  useSubscription(client, ["metrics"], {}, (subscription) => {
    // What the topic retained first (the last minutes), then live.
    void api.history("metrics", 0, POINTS).then(
      (history) => {
        for (const event of history.events) {
          if (event.event_type === "metrics.updated") setSeries((s) => add(s, event as unknown as HeraldEvent<"metrics.updated">));
        }
      },
      () => undefined,
    );
    subscription.on("metrics.updated", (event) => setSeries((s) => add(s, event)));
  });

  const latest = (key: string) => {
    const value = series.latest[key];
    return value === undefined ? undefined : number(value, key.endsWith("_ms") ? 2 : 1);
  };
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      <div class="cards">
        <div class="card">
          <span>Uptime</span>
          <b>{series.latest.uptime_s === undefined ? "–" : `${Math.round(series.latest.uptime_s)} s`}</b>
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
      {series.times.length === 0 ? (
        <p class="muted">Waiting for the hub's first figures (every <code>--metrics-interval</code>, 5 s by default)…</p>
      ) : null}
      <div class="charts">
        {FIGURES.map(({ key, title, unit }) => (
          <Chart key={key} title={title} unit={unit} times={series.times} values={series.values[key] ?? []} latest={latest(key)} />
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
