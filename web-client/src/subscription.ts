// A subscription object: one `subscribe` of a client, with its own handlers
// (events, gaps, snapshots of its topics only), its state, and `ready()`.
// The session keeps the subscription across reconnects; this object only
// follows what the session reports about its topics.

import type { ErrorFrame, EventFilter, EventType, Gap, Priority, Snapshot, Subscribed } from "./protocol/index.js";
import type { HeraldEvent } from "./events.js";
import { typeMatches } from "./events.js";
import { RefusedError } from "./errors.js";
import { type Handler, add, call, remove } from "./handlers.js";

/** Where a subscription stands. */
export type SubscriptionState =
  /** Sent (or waiting for the connection); no `subscribed` yet for every topic. */
  | { state: "pending" }
  /** The hub confirmed every topic: `positions` has each one's epoch and seq at that moment. */
  | { state: "subscribed"; positions: Record<string, { epoch: string | null; seq: number | null }> }
  /** The hub refused it (`forbidden`, `invalid_topic`, ...). */
  | { state: "refused"; error: ErrorFrame }
  /** `unsubscribe()` was called, or the client was disposed. */
  | { state: "closed" };

const PRIORITIES: Priority[] = ["low", "normal", "high", "critical"];

/** Whether `topic` is covered by `pattern` (`kind:id`, `kind:*` or `*`). */
export function topicMatches(pattern: string, topic: string): boolean {
  if (pattern === "*" || pattern === topic) return true;
  return pattern.endsWith(":*") && topic.startsWith(pattern.slice(0, -1));
}

/** The client a subscription belongs to. */
export interface SubscriptionHost {
  /** Forgets `subscription` and tells the hub about topics no other subscription covers. */
  unsubscribeOne(subscription: Subscription): Promise<void>;
  /** Why the client is closed for good (nothing can be confirmed until it connects again), if it is. */
  closedForGood(): string | undefined;
}

/**
 * One `subscribe(...)`: handlers that see only its topics (and its filter),
 * its state, and `ready()`, which resolves once the hub confirmed every topic.
 *
 * ```ts
 * const run = client.subscribe("run:r1", { snapshot: true });
 * run.on("dag.node_status_changed", (e) => paint(e.data));
 * await run.ready();
 * ```
 */
export class Subscription {
  readonly topics: readonly string[];
  readonly filter: EventFilter | undefined;
  private currentState: SubscriptionState = { state: "pending" };
  private confirmed = new Map<string, { epoch: string | null; seq: number | null }>();
  private readonly eventHandlers: Array<{ pattern: string; handler: Handler<HeraldEvent<string>> }> = [];
  private readonly gapHandlers: Array<Handler<Gap>> = [];
  private readonly snapshotHandlers: Array<Handler<Snapshot>> = [];
  private readonly stateHandlers: Array<Handler<SubscriptionState>> = [];
  private waiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];

  constructor(
    private readonly host: SubscriptionHost,
    topics: readonly string[],
    filter: EventFilter | undefined,
    /** The request id its `subscribe` frame was sent with. */
    private readonly ref: string | null = null,
  ) {
    this.topics = topics;
    this.filter = filter;
  }

  get state(): SubscriptionState {
    return this.currentState;
  }

  /** @internal The request id its `subscribe` frame was sent with. */
  get requestId(): string | null {
    return this.ref;
  }

  /**
   * Resolves once the hub sent `subscribed` for every topic (at once if it
   * already did); rejects if the hub refuses it (a `RefusedError`, with the
   * hub's `code`), if it is closed first, or while the client is closed for
   * good (a terminal close code, its reconnect attempts exhausted: it stays
   * pending, and is sent again if `connect()` is called).
   */
  ready(): Promise<void> {
    const state = this.currentState;
    if (state.state === "subscribed") return Promise.resolve();
    if (state.state === "refused") return Promise.reject(new RefusedError(state.error));
    if (state.state === "closed") return Promise.reject(new Error("subscription closed"));
    const closed = this.host.closedForGood();
    if (closed) return Promise.reject(new Error(closed));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Events of its topics of `type` (an event type, `"domain.*"` or `"*"`). */
  on(type: "*", handler: Handler<HeraldEvent<string>>): () => void;
  on<T extends EventType>(type: T, handler: Handler<HeraldEvent<T>>): () => void;
  on(type: string, handler: Handler<HeraldEvent<any>>): () => void {
    const entry = { pattern: type, handler };
    this.eventHandlers.push(entry);
    return () => remove(this.eventHandlers, entry);
  }

  /** Events of its topics it will not get: re-read state. */
  onGap(handler: Handler<Gap>): () => void {
    return add(this.gapHandlers, handler);
  }

  onSnapshot(handler: Handler<Snapshot>): () => void {
    return add(this.snapshotHandlers, handler);
  }

  onState(handler: Handler<SubscriptionState>): () => void {
    return add(this.stateHandlers, handler);
  }

  /** Stops it: the hub is told once no other subscription of the client covers the same topics.
   * Rejects, and the subscription stays, if the client refuses the request (over the hub's frame limit). */
  unsubscribe(): Promise<void> {
    if (this.currentState.state === "closed") return Promise.resolve();
    return this.host.unsubscribeOne(this).then(() => this.close());
  }

  /** Whether the subscription covers `topic`. */
  covers(topic: string): boolean {
    return this.topics.some((pattern) => topicMatches(pattern, topic));
  }

  // ---- called by the client ----

  /** @internal */
  handleEvent(event: HeraldEvent<string>): void {
    if (!this.active() || !this.covers(event.topic) || !this.passes(event)) return;
    for (const { pattern, handler } of [...this.eventHandlers]) {
      if (typeMatches(pattern, event.event_type)) call(handler, event);
    }
  }

  /** @internal */
  handleGap(gap: Gap): void {
    if (this.active() && this.covers(gap.topic)) for (const h of [...this.gapHandlers]) call(h, gap);
  }

  /** @internal */
  handleSnapshot(snapshot: Snapshot): void {
    if (this.active() && this.covers(snapshot.topic)) for (const h of [...this.snapshotHandlers]) call(h, snapshot);
  }

  /** @internal */
  handleSubscribed(subscribed: Subscribed): void {
    if (!this.active() || !this.topics.includes(subscribed.topic)) return;
    this.confirmed.set(subscribed.topic, { epoch: subscribed.epoch, seq: subscribed.seq });
    if (this.topics.every((topic) => this.confirmed.has(topic))) {
      this.setState({ state: "subscribed", positions: Object.fromEntries(this.confirmed) });
      for (const waiter of this.waiters.splice(0)) waiter.resolve();
    }
  }

  /** @internal A new connection: every topic is sent again. */
  handleReconnecting(): void {
    if (!this.active()) return;
    this.confirmed.clear();
    if (this.currentState.state !== "pending") this.setState({ state: "pending" });
  }

  /**
   * @internal An `error` frame: its own when it answers its `subscribe`
   * frame (any refusal: `forbidden`, `rate_limited`, too many
   * subscriptions, ...), which carries its id on every connection.
   */
  handleError(error: ErrorFrame): void {
    if (!this.active() || this.currentState.state === "subscribed") return;
    if (this.ref !== null && error.ref === this.ref) {
      this.setState({ state: "refused", error });
      for (const waiter of this.waiters.splice(0)) waiter.reject(new RefusedError(error));
    }
  }

  /** @internal The client closed for good: whoever waits on `ready()` is told why. */
  handleClosedForGood(why: string): void {
    for (const waiter of this.waiters.splice(0)) waiter.reject(new Error(why));
  }

  /** @internal */
  close(): void {
    if (this.currentState.state === "closed") return;
    this.setState({ state: "closed" });
    for (const waiter of this.waiters.splice(0)) waiter.reject(new Error("subscription closed"));
  }

  private active(): boolean {
    return this.currentState.state !== "closed" && this.currentState.state !== "refused";
  }

  /** Its filter, applied here too: another subscription may widen what the connection receives. */
  private passes(event: HeraldEvent<string>): boolean {
    const filter = this.filter;
    if (!filter) return true;
    if (filter.types && filter.types.length > 0 && !filter.types.some((t) => typeMatches(t, event.event_type))) {
      return false;
    }
    const min = filter.min_priority;
    return !min || PRIORITIES.indexOf(event.priority) >= PRIORITIES.indexOf(min);
  }

  private setState(state: SubscriptionState): void {
    this.currentState = state;
    for (const handler of [...this.stateHandlers]) call(handler, state);
  }
}
