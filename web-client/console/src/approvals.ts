// The approvals the console knows about: the hub's list (pending and
// decided, with the audit), re-read whenever an `approval.*` event arrives
// on any topic. One book for the whole console: the nav badge, the inbox,
// and each run's pending approval read it.

import type { ApprovalRecord, HeraldClient, Subscription } from "../../dist/index.js";
import type { Api } from "./api.js";
import type { Store } from "./hooks.js";

export interface ApprovalState {
  pending: ApprovalRecord[];
  decided: ApprovalRecord[];
  error?: string;
  /** The hub refused the subscription that keeps the list current. */
  watchError?: string;
  /**
   * Answers this console gave that the hub refused (another operator or the
   * timeout decided first), kept until dismissed: the card they were given
   * on leaves with the decision that won.
   */
  refused: Refusal[];
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

export class ApprovalBook implements Store<ApprovalState> {
  private state: ApprovalState = { pending: [], decided: [], refused: [], loaded: false };
  private readonly listeners = new Set<() => void>();
  private readonly subscription: Subscription;
  private reading = false;
  private again = false;

  constructor(
    private readonly api: Api,
    client: HeraldClient,
  ) {
    // Every approval event on every topic: requests go to `user:*` and `task:*`.
    this.subscription = client.subscribe("*", { filter: { types: ["approval.*"] } });
    this.subscription.on("approval.*", () => void this.refresh());
    // A new connection may have missed decisions: read the list again.
    this.subscription.onState((state) => {
      if (state.state === "subscribed") void this.refresh();
      // A token without `*`: the list still reads, but nothing says when it changes.
      if (state.state === "refused") {
        this.state = { ...this.state, watchError: `the hub refused to send approval events, so this list does not follow them: ${state.error.message}` };
        for (const listener of [...this.listeners]) listener();
      }
    });
    void this.refresh();
  }

  get(): ApprovalState {
    return this.state;
  }

  listen(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Keeps a refused answer in view until it is dismissed. */
  refuse(refusal: Refusal): void {
    const others = this.state.refused.filter((r) => r.callback_id !== refusal.callback_id);
    this.update({ refused: [...others, refusal] });
  }

  /** Forgets a refused answer. */
  dismiss(callbackId: string): void {
    this.update({ refused: this.state.refused.filter((r) => r.callback_id !== callbackId) });
  }

  private update(change: Partial<ApprovalState>): void {
    this.state = { ...this.state, ...change };
    for (const listener of [...this.listeners]) listener();
  }

  /** Reads the list again (one read at a time; a request during one runs once after it). */
  async refresh(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = true;
    try {
      const { approvals } = await this.api.approvals();
      this.state = {
        watchError: this.state.watchError,
        refused: this.state.refused,
        pending: approvals.filter((a) => a.status === "pending").sort((a, b) => a.expires_at - b.expires_at),
        decided: approvals.filter((a) => a.status !== "pending"),
        loaded: true,
      };
    } catch (error) {
      this.state = { ...this.state, error: (error as Error).message, loaded: true };
    } finally {
      this.reading = false;
    }
    for (const listener of [...this.listeners]) listener();
    if (this.again) {
      this.again = false;
      await this.refresh();
    }
  }
}
