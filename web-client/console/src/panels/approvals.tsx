// Approvals: the inbox of pending approvals (step result, countdown, the
// default on timeout, approve / reject with feedback) and the history with
// its audit (who decided, when, how many connections the request reached).
// The inbox renders the INBOX_SHOWN that time out soonest and counts the
// rest; while the console's connection is not open it says the list may be
// out of date, why, and offers Reconnect (the book re-reads it then).

import { useEffect } from "preact/hooks";
import type { HeraldClient } from "../../../dist/index.js";
import { type ApprovalBook, PENDING_KEPT } from "../approvals.js";
import { dateTime, duration, number, time } from "../format.js";
import { useNow, useStore } from "../hooks.js";
import type { Link, LinkState } from "../link.js";
import { href } from "../route.js";
import { ApprovalCard, Refusals } from "./approval_card.js";

/** Pending approvals rendered as cards; the rest are counted. */
export const INBOX_SHOWN = 50;

/**
 * What the inbox says while events do not reach it: that it may be out of
 * date, why, since when, and Reconnect. Nothing while the connection is
 * open, or on its way to the first open (it is not down yet then).
 */
export function Offline({ link, state, readAt }: { link: Link; state: LinkState; readAt?: number }) {
  if (state.live || state.downSince === undefined) return null;
  return (
    <div class="offline" role="status" data-offline={state.connection.state === "closed" ? "closed" : "reconnecting"}>
      <p>
        <b>Not live: this list may be out of date.</b> {state.why}.{" "}
        {readAt !== undefined ? `It was last read from the hub at ${time(readAt)}` : "It was never read from the hub"}
        ; requests and decisions since {time(state.downSince)} do not show here.
      </p>
      {state.canReconnect ? (
        <button type="button" class="primary" onClick={() => link.reconnect()}>
          Reconnect
        </button>
      ) : null}
    </div>
  );
}

export function Approvals({ client, approvals, link, view }: { client: HeraldClient; approvals: ApprovalBook; link: Link; view: "inbox" | "history" }) {
  const book = useStore(approvals);
  const connection = useStore(link);
  const now = useNow(1000);
  // History is the whole audit trail: read when shown, not on every event.
  useEffect(() => {
    if (view === "history") approvals.loadHistory();
  }, [view]);
  const shown = book.pending.slice(0, INBOX_SHOWN);
  const more = book.pending.length - shown.length;
  return (
    <section aria-labelledby="approvals-title">
      <h1 id="approvals-title">Approvals</h1>
      <nav class="tabs" aria-label="Approvals">
        <a href={href({ panel: "approvals", view: "inbox" })} aria-current={view === "inbox" ? "page" : undefined}>
          Inbox ({number(book.pending.length, 0)}
          {book.pendingTruncated ? "+" : ""})
        </a>
        <a href={href({ panel: "approvals", view: "history" })} aria-current={view === "history" ? "page" : undefined}>
          History{book.decidedListed === undefined ? "" : ` (${number(book.decidedListed, 0)})`}
        </a>
      </nav>
      {book.error ? <p class="error-text">{book.error}</p> : null}
      {book.watchError ? (
        <p class="error-text" role="alert">
          {book.watchError}
        </p>
      ) : null}
      <Offline link={link} state={connection} readAt={book.readAt} />
      <Refusals approvals={approvals} refused={book.refused} />
      {view === "inbox" ? (
        <div class="inbox">
          {book.loaded && !book.error && book.pending.length === 0 ? (
            connection.live ? (
              <p class="muted">Nothing waits for a decision.</p>
            ) : (
              <p class="muted" data-empty="stale">
                Nothing waited for a decision at the last read{book.readAt === undefined ? "" : ` (${time(book.readAt)})`}.
              </p>
            )
          ) : null}
          {book.pendingTruncated ? (
            <p class="muted">More than {number(PENDING_KEPT, 0)} approvals are pending: only that many are tracked here.</p>
          ) : null}
          {shown.map((approval) => (
            <ApprovalCard key={approval.callback_id} client={client} approvals={approvals} approval={approval} now={now} />
          ))}
          {more > 0 ? (
            <p class="muted" data-more-pending={more}>
              {number(more, 0)} more pending, timing out later than these, not shown: decide these first.
            </p>
          ) : null}
        </div>
      ) : (
        <div class="table-wrap">
          {book.historyError ? <p class="error-text">{book.historyError}</p> : null}
          <p class="toolbar">
            <span class="muted" data-history-count>
              {book.decidedListed === undefined
                ? "Reading the decided approvals…"
                : book.decidedListed > book.decided.length
                  ? `The newest ${number(book.decided.length, 0)} of the ${number(book.decidedListed, 0)} decisions the hub lists.`
                  : `${number(book.decided.length, 0)} decisions.`}
            </span>
            <button type="button" onClick={() => approvals.loadHistory()}>
              Refresh
            </button>
          </p>
          <table class="approval-history">
            <thead>
              <tr>
                <th scope="col">Task / step</th>
                <th scope="col">Asked</th>
                <th scope="col">Outcome</th>
                <th scope="col">Decided by</th>
                <th scope="col">Decided</th>
                <th scope="col">Reached</th>
                <th scope="col">Feedback</th>
              </tr>
            </thead>
            <tbody>
              {book.decided.map((a) => (
                <tr key={a.callback_id} data-callback={a.callback_id}>
                  <th scope="row">
                    <code>{a.task_id}</code> · {a.step} <span class="muted">{a.step_result.message}</span>
                  </th>
                  <td>
                    {dateTime(a.created_at)} <span class="muted">for {a.user_id}</span>
                  </td>
                  <td>
                    <span class={`pill status-${a.status}`} data-status={a.status}>
                      {a.status}
                    </span>{" "}
                    {a.proceed === null ? "" : a.proceed ? "proceed" : "stop"}
                  </td>
                  <td>{a.decided_by ?? <span class="muted">the hub</span>}</td>
                  <td>
                    {a.decided_at === null ? "" : dateTime(a.decided_at)}
                    {a.decided_at === null ? "" : <span class="muted"> (after {duration(a.decided_at - a.created_at)})</span>}
                  </td>
                  <td class="num">
                    {a.delivered_to === null ? <span class="muted" title="learnt from its event, which does not say; Refresh reads it">?</span> : a.delivered_to} connections
                  </td>
                  <td>{a.feedback ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
