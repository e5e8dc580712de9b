// One pending approval: the step result, a countdown to the timeout and what
// happens then, and approve / reject with feedback (sent as `confirm` over
// the console's WebSocket). The hub's refusal of the answer (another user's
// approval, one already resolved) goes to the approval book, which keeps it
// in view after the card leaves with the decision that won (`Refusals`),
// until dismissed or until this console's next answer to it is taken.

import { useState } from "preact/hooks";
import type { HeraldClient } from "../../../dist/index.js";
import type { Approval, ApprovalBook, Refusal } from "../approvals.js";
import { duration, json } from "../format.js";

export function ApprovalCard({
  client,
  approvals,
  approval,
  now,
}: {
  client: HeraldClient;
  approvals: ApprovalBook;
  approval: Approval;
  now: number;
}) {
  const [feedback, setFeedback] = useState("");
  const [sent, setSent] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  const left = approval.expires_at - now;
  const result = approval.step_result;
  const answer = (proceed: boolean) => {
    setError(undefined);
    setSent(proceed ? "approve" : "reject");
    // Settles on the hub's answer: taken (the card leaves once the decision
    // arrives), or refused (another user's approval, one already decided).
    client.confirm(approval.callback_id, proceed, feedback.trim() || undefined).then(
      // An earlier refusal of this approval (feedback too long, say) no longer holds.
      () => approvals.dismiss(approval.callback_id),
      (e: Error) => {
        setSent(undefined);
        if (e.name === "RefusedError") {
          const { callback_id, task_id, step } = approval;
          approvals.refuse({ callback_id, task_id, step, answer: proceed ? "approve" : "reject", message: e.message });
        } else {
          setError(e.message);
        }
      },
    );
  };
  const id = `approval-${approval.callback_id}`;
  return (
    <article class="approval" data-callback={approval.callback_id} aria-labelledby={`${id}-title`}>
      <header>
        <h3 id={`${id}-title`}>
          {result.message || `Step ${approval.step}`}
        </h3>
        <p class="muted">
          task <code>{approval.task_id}</code> · step {approval.step} ({result.step}) · for <code>{approval.user_id}</code>
        </p>
      </header>
      <dl class="facts">
        <dt>Status</dt>
        <dd>
          <span class={`pill status-${result.status}`}>{result.status}</span>
          {result.error_code ? ` ${result.error_code}` : ""}
          {result.error_message ? `: ${result.error_message}` : ""}
        </dd>
        {result.result !== null && result.result !== undefined ? (
          <>
            <dt>Result</dt>
            <dd>
              <code>{json(result.result)}</code>
            </dd>
          </>
        ) : null}
        <dt>Times out</dt>
        <dd class="countdown" data-expires={approval.expires_at}>
          {left > 0 ? `in ${duration(left)}` : "now"} — then it {approval.default_proceed ? "proceeds" : "stops"} by default
        </dd>
      </dl>
      <label class="feedback">
        Feedback
        <input
          name="feedback"
          value={feedback}
          onInput={(e) => setFeedback((e.target as HTMLInputElement).value)}
          placeholder="optional, sent with the decision"
        />
      </label>
      <div class="actions">
        <button type="button" class="primary" disabled={sent !== undefined} onClick={() => answer(true)}>
          Approve
        </button>
        <button type="button" class="danger" disabled={sent !== undefined} onClick={() => answer(false)}>
          Reject
        </button>
        {sent ? <span class="muted" role="status">sent ({sent}), waiting for the hub…</span> : null}
        {error ? (
          <span class="error-text" role="alert">
            {error}
          </span>
        ) : null}
      </div>
    </article>
  );
}

/** The answers the hub refused, each until dismissed. */
export function Refusals({ approvals, refused }: { approvals: ApprovalBook; refused: Refusal[] }) {
  if (refused.length === 0) return null;
  return (
    <ul class="refusals" aria-label="Refused answers">
      {refused.map((r) => (
        <li key={r.callback_id} class="error-text" role="alert" data-refused={r.callback_id}>
          Your {r.answer} of task <code>{r.task_id}</code> step {r.step} was refused: {r.message}{" "}
          <button type="button" onClick={() => approvals.dismiss(r.callback_id)}>
            Dismiss
          </button>
        </li>
      ))}
    </ul>
  );
}
