// Connections: who is connected (user, origin, address), since when, what
// they subscribe to, their queue depth and shed count, with disconnect
// (close 4500: the client does not reconnect).

import { useState } from "preact/hooks";
import type { Api } from "../api.js";
import { dateTime, duration } from "../format.js";
import { useLoad, useNow } from "../hooks.js";

export function Connections({ api, ownSession }: { api: Api; ownSession: string | undefined }) {
  const [list, reload] = useLoad(() => api.connections(), [], 2000);
  const [message, setMessage] = useState<string | undefined>();
  const now = useNow(1000);
  const disconnect = (id: string) => {
    api.disconnect(id).then(
      () => {
        setMessage(`disconnected ${id}`);
        reload();
      },
      (e: Error) => setMessage(`could not disconnect ${id}: ${e.message}`),
    );
  };
  const connections = list.value?.connections ?? [];
  const open = list.value?.active_connections ?? connections.length;
  return (
    <section aria-labelledby="connections-title">
      <h1 id="connections-title">Connections</h1>
      <p class="toolbar">
        <span class="muted">
          {open} open{list.value?.truncated ? `, the oldest ${connections.length} listed` : ""}
          {list.value?.partial ? " (a node sharing the store did not answer: its connections are missing)" : ""}
        </span>
        {message ? <span role="status">{message}</span> : null}
      </p>
      {list.error ? <p class="error-text">{list.error}</p> : null}
      <div class="table-wrap">
        <table class="connections">
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col">Origin / address</th>
              <th scope="col">Since</th>
              <th scope="col">Subscriptions</th>
              <th scope="col">Queued</th>
              <th scope="col">Shed</th>
              <th scope="col">Sent / received</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {connections.map((c) => (
              <tr key={c.id} data-connection={c.id} data-user={c.user_id ?? ""}>
                <th scope="row">
                  {c.user_id ?? <span class="muted">anonymous</span>}
                  {c.id === ownSession ? <span class="tag">this console</span> : null}
                  <div class="muted small">
                    <code>{c.id.slice(0, 12)}</code>
                  </div>
                </th>
                <td>
                  {c.origin ?? <span class="muted">no origin</span>}
                  <div class="muted small">{c.remote_addr}</div>
                </td>
                <td>
                  {dateTime(c.connected_at)}
                  <div class="muted small">{duration(now - c.connected_at)}</div>
                </td>
                <td>
                  {c.subscriptions.map((s) => (
                    <code key={s} class="sub">
                      {s}
                    </code>
                  ))}
                </td>
                <td class="num">{c.queued}</td>
                <td class="num">{c.shed}</td>
                <td class="num">
                  {c.messages_sent} / {c.messages_received}
                </td>
                <td>
                  <button type="button" class="danger" onClick={() => disconnect(c.id)} aria-label={`Disconnect ${c.user_id ?? c.id}`}>
                    Disconnect
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
