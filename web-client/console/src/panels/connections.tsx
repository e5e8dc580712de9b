// Connections: who is connected (user, origin, address), since when, on
// which node and when last heard from, what they subscribe to, their queue
// depth and shed count, with disconnect (close 4500: the client does not
// reconnect). The list is every node's that answered. Disconnecting this
// console's own connection is told to the link first, so the shell says
// that is why it is closed, and offers Reconnect.

import { useState } from "preact/hooks";
import type { Api } from "../api.js";
import { ago, dateTime, duration } from "../format.js";
import { useLoad, useNow } from "../hooks.js";
import type { Link } from "../link.js";

export function Connections({ api, link, ownSession }: { api: Api; link: Link; ownSession: string | undefined }) {
  const [list, reload] = useLoad(() => api.connections(), [], 2000);
  const [nodes] = useLoad(() => api.nodes(), [], 10_000);
  // What the last disconnect did: shown until the list is read again, and
  // a failure for as long as the connection is still listed (a node that
  // did not answer may carry the disconnect out when it does).
  const [message, setMessage] = useState<{ text: string; id: string; failed: boolean; list: unknown } | undefined>();
  const now = useNow(1000);
  const disconnect = (id: string) => {
    const shown = list.value;
    const own = id === ownSession ? link.disconnectingItself() : undefined;
    api.disconnect(id).then(
      () => {
        // Shown until the periodic read after the one that drops the row.
        setMessage({ text: `disconnected ${id}`, id, failed: false, list: undefined });
        reload();
      },
      (e: Error) => {
        own?.failed();
        setMessage({ text: `could not disconnect ${id}: ${e.message}`, id, failed: true, list: shown });
      },
    );
  };
  const connections = list.value?.connections ?? [];
  const ownNode = nodes.value?.node;
  // A failure stays while the connection may still be open: listed, or
  // on a node that did not answer.
  const current =
    message && (!message.failed || message.list === list.value || list.value?.partial || connections.some((c) => c.id === message.id))
      ? message.text
      : undefined;
  const open = list.value?.active_connections ?? connections.length;
  return (
    <section aria-labelledby="connections-title">
      <h1 id="connections-title">Connections</h1>
      <p class="toolbar">
        <span class="muted">
          {open} open{list.value?.truncated ? `, the oldest ${connections.length} listed` : ""}
          {list.value?.partial ? " (not every node answered, or the store is unreachable: some connections are missing)" : ""}
        </span>
        {current ? <span role="status">{current}</span> : null}
      </p>
      {list.error ? <p class="error-text">{list.error}</p> : null}
      <div class="table-wrap">
        <table class="connections">
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col">Origin / address</th>
              <th scope="col">Since</th>
              <th scope="col">Node / last heard</th>
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
              <tr key={c.id} data-connection={c.id} data-user={c.user_id ?? ""} data-node={c.node}>
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
                  <code title={c.node}>{c.node.slice(0, 12)}</code>
                  {c.node === ownNode ? <span class="tag">this console's node</span> : null}
                  <div class="muted small">{ago(c.last_heard_at, now)}</div>
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
                  <button
                    type="button"
                    class="danger"
                    onClick={() => disconnect(c.id)}
                    aria-label={c.id === ownSession ? "Disconnect this console" : `Disconnect ${c.user_id ?? c.id}`}
                  >
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
