// Approvals: the inbox of pending approvals (step result, countdown, the
// default on timeout, approve / reject with feedback) and the history with
// its audit (who decided, when, how many connections the request reached).

import type { HeraldClient } from "../../../dist/index.js";
import type { ApprovalBook } from "../approvals.js";
import { dateTime, duration } from "../format.js";
import { useNow, useStore } from "../hooks.js";
import { href } from "../route.js";
import { ApprovalCard, Refusals } from "./approval_card.js";

export function Approvals({ client, approvals, view }: { client: HeraldClient; approvals: ApprovalBook; view: "inbox" | "history" }) {
  const book = useStore(approvals);
  const now = useNow(1000);
  return (
    <section aria-labelledby="approvals-title">
      <h1 id="approvals-title">Approvals</h1>
      <nav class="tabs" aria-label="Approvals">
        <a href={href({ panel: "approvals", view: "inbox" })} aria-current={view === "inbox" ? "page" : undefined}>
          Inbox ({book.pending.length})
        </a>
        <a href={href({ panel: "approvals", view: "history" })} aria-current={view === "history" ? "page" : undefined}>
          History ({book.decided.length})
        </a>
      </nav>
      {book.error ? <p class="error-text">{book.error}</p> : null}
      {book.watchError ? (
        <p class="error-text" role="alert">
          {book.watchError}
        </p>
      ) : null}
      <Refusals approvals={approvals} refused={book.refused} />
      {view === "inbox" ? (
        <div class="inbox">
          {book.loaded && !book.error && book.pending.length === 0 ? <p class="muted">Nothing waits for a decision.</p> : null}
          {book.pending.map((approval) => (
            <ApprovalCard key={approval.callback_id} client={client} approvals={approvals} approval={approval} now={now} />
          ))}
        </div>
      ) : (
        <div class="table-wrap">
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
                  <td class="num">{a.delivered_to} connections</td>
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
