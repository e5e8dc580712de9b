// The approvals the console knows about. One book for the whole console:
// the nav badge, the inbox, the history and each run's pending approval
// read it.
//
// The pending list is read from the hub (`GET /api/v1/approvals?status=pending`)
// when the book starts and whenever the approval events' subscription is
// (re)confirmed, then kept current from the events themselves:
// `approval.requested` carries the whole request and `approval.resolved` the
// decision, so neither costs a read. A read is only asked for when events
// may have been missed (a new connection, a `gap` on a `user:` or `task:`
// topic), and reads are coalesced: one in flight, at most one per
// READ_INTERVAL_MS. The decided ones (the whole audit trail, which can be
// thousands of records) are read only when History is shown, and kept to
// the newest DECIDED_KEPT.

import type { ApprovalRecord, ApprovalRequested, ApprovalResolved, HeraldClient, Subscription } from "../../dist/index.js";
import type { Api } from "./api.js";
import type { Store } from "./hooks.js";

/** The least time between the starts of two reads of the same list. */
const READ_INTERVAL_MS = 2000;
/** Decided approvals kept (and listed in History), newest first. */
export const DECIDED_KEPT = 200;
/** Pending approvals tracked; past this the book says it holds only some (no inbox is worked through faster). */
export const PENDING_KEPT = 10_000;
/** Ids of resolved approvals remembered, so that a request replayed or delivered late does not bring a card back. */
const RESOLVED_REMEMBERED = 10_000;

/**
 * An approval as the book holds it: the hub's record, except that one
 * learnt from its `approval.requested` event does not know how many
 * connections the request reached (`delivered_to` null) until History is
 * read from the hub again.
 */
export type Approval = Omit<ApprovalRecord, "delivered_to"> & { delivered_to: number | null };

export interface ApprovalState {
  /** Every pending approval (at most PENDING_KEPT), soonest timeout first. */
  pending: Approval[];
  /** More approvals are pending than the book tracks. */
  pendingTruncated: boolean;
  /** When the pending list was last read from the hub (ms since the epoch). */
  readAt?: number;
  /** The newest decided approvals (at most DECIDED_KEPT), newest first; empty until History was read. */
  decided: Approval[];
  /** How many decided approvals the hub listed at the last History read; undefined before one. */
  decidedListed?: number;
  /** Why the last read of the pending list failed; cleared by one that succeeds. */
  error?: string;
  /** Why the last read of History failed. */
  historyError?: string;
  /** The hub refused the subscription that keeps the list current. */
  watchError?: string;
  /**
   * Answers this console gave that the hub refused (another operator or the
   * timeout decided first), kept until dismissed or until this console's
   * next answer to the same approval is taken: the card they were given on
   * leaves with the decision that won.
   */
  refused: Refusal[];
  /** The pending list was read (or failed to be) at least once. */
  loaded: boolean;
}

/** An answer the hub refused, and why. */
export interface Refusal {
  callback_id: string;
  task_id: string;
  step: number;
  /** What was answered: approve or reject. */
  answer: "approve" | "reject";
  message: string;
}

/**
 * One list read from the hub, coalesced: `request()` during a read runs
 * one more after it, and reads start at most once per `intervalMs`.
 */
class CoalescedRead {
  private reading = false;
  private again = false;
  private lastStart = Number.NEGATIVE_INFINITY;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly read: () => Promise<void>,
    private readonly intervalMs: number,
  ) {}

  request(): void {
    if (this.reading) {
      this.again = true;
      return;
    }
    if (this.timer !== undefined) return;
    const wait = this.lastStart + this.intervalMs - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.start();
      }, wait);
    } else {
      this.start();
    }
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.again = false;
  }

  private start(): void {
    this.reading = true;
    this.lastStart = Date.now();
    void this.read().finally(() => {
      this.reading = false;
      if (this.again) {
        this.again = false;
        this.request();
      }
    });
  }
}

const byTimeout = (a: Approval, b: Approval) => a.expires_at - b.expires_at;

export class ApprovalBook implements Store<ApprovalState> {
  private state: ApprovalState = { pending: [], pendingTruncated: false, decided: [], refused: [], loaded: false };
  private readonly listeners = new Set<() => void>();
  private readonly subscription: Subscription;
  /** The pending approvals by callback id (the state's `pending` is these, sorted). */
  private readonly pending = new Map<string, Approval>();
  /** Callback ids resolved, oldest first (a Set keeps insertion order), at most RESOLVED_REMEMBERED. */
  private readonly resolved = new Set<string>();
  /** Ids requested while a pending read was in flight: the read may predate them. */
  private requestedDuringRead: Set<string> | undefined;
  /** Ids decided while a History read was in flight: the read may predate them. */
  private decidedDuringRead: Set<string> | undefined;
  private readonly pendingRead: CoalescedRead;
  private readonly historyRead: CoalescedRead;
  /** History was asked for (it is shown): decisions the events cannot complete are read again. */
  private historyWanted = false;

  constructor(
    private readonly api: Api,
    client: HeraldClient,
  ) {
    this.pendingRead = new CoalescedRead(() => this.readPending(), READ_INTERVAL_MS);
    this.historyRead = new CoalescedRead(() => this.readHistory(), READ_INTERVAL_MS);
    // Every approval event on every topic: requests go to `user:*` and
    // `task:*` (so most arrive twice, and are applied once).
    this.subscription = client.subscribe("*", { filter: { types: ["approval.*"] } });
    this.subscription.on("approval.requested", (event) => this.requested(event.data));
    this.subscription.on("approval.resolved", (event) => this.decided(event.data));
    // Approval events this connection will not get: the list may be behind.
    this.subscription.onGap((gap) => {
      if (gap.topic.startsWith("user:") || gap.topic.startsWith("task:")) this.pendingRead.request();
    });
    this.subscription.onState((state) => {
      // A new connection may have missed requests and decisions.
      if (state.state === "subscribed") this.pendingRead.request();
      // A token without `*`: the list still reads, but nothing says when it changes.
      if (state.state === "refused") {
        this.update({ watchError: `the hub refused to send approval events, so this list does not follow them: ${state.error.message}` });
      }
    });
    this.pendingRead.request();
  }

  get(): ApprovalState {
    return this.state;
  }

  listen(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads the pending list again (coalesced with any other read). */
  refresh(): void {
    this.pendingRead.request();
  }

  /** Reads History (the decided approvals) from the hub: when it is shown, and on Refresh. */
  loadHistory(): void {
    this.historyWanted = true;
    this.historyRead.request();
  }

  /** Keeps a refused answer in view until it is dismissed. */
  refuse(refusal: Refusal): void {
    const others = this.state.refused.filter((r) => r.callback_id !== refusal.callback_id);
    this.update({ refused: [...others, refusal] });
  }

  /** Forgets a refused answer. */
  dismiss(callbackId: string): void {
    if (!this.state.refused.some((r) => r.callback_id === callbackId)) return;
    this.update({ refused: this.state.refused.filter((r) => r.callback_id !== callbackId) });
  }

  private update(change: Partial<ApprovalState>): void {
    this.state = { ...this.state, ...change };
    for (const listener of [...this.listeners]) listener();
  }

  /** The state's `pending` from the map. */
  private pendingChanged(change: Partial<ApprovalState> = {}): void {
    this.update({ pending: [...this.pending.values()].sort(byTimeout), ...change });
  }

  private remember(callbackId: string): void {
    this.resolved.delete(callbackId);
    this.resolved.add(callbackId);
    if (this.resolved.size > RESOLVED_REMEMBERED) {
      const oldest = this.resolved.values().next().value;
      if (oldest !== undefined) this.resolved.delete(oldest);
    }
  }

  private requested(request: ApprovalRequested): void {
    const id = request.callback_id;
    if (this.pending.has(id) || this.resolved.has(id)) return;
    this.requestedDuringRead?.add(id);
    if (this.pending.size >= PENDING_KEPT) {
      if (!this.state.pendingTruncated) this.update({ pendingTruncated: true });
      return;
    }
    this.pending.set(id, {
      ...request,
      status: "pending",
      proceed: null,
      feedback: null,
      decided_by: null,
      decided_at: null,
      created_at: request.expires_at - request.timeout_ms,
      delivered_to: null,
    });
    this.pendingChanged();
  }

  private decided(decision: ApprovalResolved): void {
    const id = decision.callback_id;
    if (this.resolved.has(id)) return;
    this.remember(id);
    this.decidedDuringRead?.add(id);
    const asked = this.pending.get(id);
    this.pending.delete(id);
    let decided = this.state.decided;
    if (asked) {
      const record: Approval = { ...asked, ...decision };
      decided = [record, ...decided.filter((a) => a.callback_id !== id)].slice(0, DECIDED_KEPT);
    } else if (this.historyWanted) {
      // Asked before the book's first read, and decided: only the hub has the request.
      this.historyRead.request();
    }
    const listed = this.state.decidedListed;
    this.pendingChanged({ decided, decidedListed: asked && listed !== undefined ? listed + 1 : listed });
  }

  private async readPending(): Promise<void> {
    const during = new Set<string>();
    this.requestedDuringRead = during;
    try {
      const { approvals } = await this.api.approvals({ status: "pending" });
      // What the events said meanwhile wins over the read: a decision that
      // arrived stays applied, a request that arrived stays listed.
      const kept = [...this.pending.values()].filter((a) => during.has(a.callback_id));
      this.pending.clear();
      let truncated = false;
      for (const approval of [...approvals, ...kept]) {
        if (this.resolved.has(approval.callback_id)) continue;
        if (this.pending.size >= PENDING_KEPT) {
          truncated = true;
          break;
        }
        this.pending.set(approval.callback_id, approval);
      }
      this.pendingChanged({ pendingTruncated: truncated, readAt: Date.now(), error: undefined, loaded: true });
    } catch (error) {
      this.update({ error: (error as Error).message, loaded: true });
    } finally {
      if (this.requestedDuringRead === during) this.requestedDuringRead = undefined;
    }
  }

  private async readHistory(): Promise<void> {
    const during = new Set<string>();
    this.decidedDuringRead = during;
    try {
      const { approvals } = await this.api.approvals();
      const listed: Approval[] = approvals.filter((a) => a.status !== "pending");
      // Decisions that arrived during the read and are not in it stay, newest first.
      const ids = new Set(listed.map((a) => a.callback_id));
      const newer = this.state.decided.filter((a) => during.has(a.callback_id) && !ids.has(a.callback_id));
      this.update({
        decided: [...newer, ...listed].slice(0, DECIDED_KEPT),
        decidedListed: newer.length + listed.length,
        historyError: undefined,
      });
    } catch (error) {
      this.update({ historyError: (error as Error).message });
    } finally {
      if (this.decidedDuringRead === during) this.decidedDuringRead = undefined;
    }
  }
}
