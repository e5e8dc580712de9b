// Herald's browser client: a typed wrapper over the wasm module built from
// crates/client-wasm, which drives herald-protocol's session (reconnect with
// backoff and jitter, heartbeat, checkpoints, resubscribe with `since`,
// de-duplication). This file only parses what the module emits, dispatches
// it to typed handlers and persists checkpoints.

import init, { WasmClient, checkEvent, payloadExample, payloadType } from "../pkg/herald_client_wasm.js";
import type {
  ConnectionState,
  ErrorFrame,
  EventFilter,
  EventType,
  Gap,
  ReplayComplete,
  Since,
  Snapshot,
  Subscribed,
  Welcome,
} from "./protocol/index.js";
import { type HeraldEvent, typeMatches } from "./events.js";
import { type Handler, add, call, remove, report } from "./handlers.js";
import { RefusedError } from "./errors.js";
import { Subscription, type SubscriptionHost } from "./subscription.js";

export type * from "./protocol/index.js";
export { KNOWN_EVENT_TYPES } from "./protocol/KnownEventType.js";
export { type HeraldEvent, isEvent, typeMatches } from "./events.js";
export { Subscription, type SubscriptionState, topicMatches } from "./subscription.js";

export { RefusedError } from "./errors.js";

/** How long a command waits for the hub's answer, queued offline included. */
const COMMAND_ANSWER_MS = 30_000;

/** Less frequent session notices, for diagnostics and tests. */
export type SessionNotice =
  | { kind: "welcome"; welcome: Welcome }
  | { kind: "subscribed"; subscribed: Subscribed }
  | { kind: "replay_complete"; replay: ReplayComplete }
  | { kind: "ack"; ref: unknown }
  | { kind: "dropped"; frame: unknown };

export interface HeraldOptions {
  /** Delay cap of the first reconnect attempt, ms. Default 1000. */
  initialReconnectDelay?: number;
  /** Largest delay between attempts, ms. Default 30000. */
  maxReconnectDelay?: number;
  /** Give up after this many failed attempts in a row. Default: never. */
  maxReconnectAttempts?: number;
  /** App-level ping interval, ms (0: off). Dead after 3 intervals without a frame. Default 30000. */
  heartbeatInterval?: number;
  /** Full jitter on reconnect delays (uniform in [0, cap]). Default true. */
  jitter?: boolean;
  /** Keep per-topic checkpoints (seq + epoch) in sessionStorage so a reload resumes
   * where the page was. `true` uses a key derived from the URL; a string is the key.
   * Default false. */
  persistCheckpoints?: boolean | string;
  /** A connection open this long resets the backoff, ms. Default 10000. */
  stableAfter?: number;
  /** Pings that may go unanswered before the connection is declared dead. Default 2. */
  missedPongsAllowed?: number;
  /** Frames buffered while offline (`confirm`, `cancel`, ...). Default 256. */
  offlineQueueCapacity?: number;
  /** Topics with a checkpoint; past it the least recently advanced is forgotten. Default 4096. */
  maxCheckpoints?: number;
  /** Bytes of `since` a resubscription carries, the most recently advanced topics first
   * (the rest resume live, and what they missed is a `trimmed` gap), so it stays below the
   * hub's frame limit. Default 32768. */
  maxSinceBytes?: number;
  /** The hub's `--max-frame-size`: a `subscribe()`, `unsubscribe()`, `confirm()` or control
   * request whose frame would be larger is refused (it would close the connection with 1009).
   * Default 65536. */
  maxFrameBytes?: number;
  /** A socket still connecting after this long counts as a failed attempt, ms (0: off). Default 10000. */
  connectTimeout?: number;
  /** Sent as `?user_id=`: the connection receives that user's messages and approvals. */
  userId?: string;
  /** A JWT, sent as the WebSocket subprotocol `bearer.<JWT>` (beside
   * `herald.v1`), never in the URL. */
  token?: string;
  /** Where the `.wasm` file is. Default: next to the wasm-bindgen JS in `pkg/`. */
  wasmUrl?: string | URL;
  /** Other nodes of the same hub (several nodes on one Redis), as `http(s)://` or
   * `ws(s)://` URLs: each reconnect moves to the next URL, in turn, and resumes
   * there with `since`. Default: none. */
  failover?: string[];
}

export interface SubscribeOptions {
  /** Replay from these checkpoints (per exact topic), then go live. */
  since?: Record<string, Since>;
  /** Only these event types (patterns like `execution.*`) / at least this priority. */
  filter?: EventFilter;
  /** Ask for a `snapshot` (latest event per key) first. */
  snapshot?: boolean;
}

/** `cancel`, `pause`, `resume` target a task or a run. */
export type ControlTarget = { task_id: string; reason?: string } | { run_id: string; reason?: string };

let wasmLoaded: Promise<unknown> | undefined;

function loadWasm(wasmUrl?: string | URL): Promise<unknown> {
  wasmLoaded ??= init(wasmUrl === undefined ? undefined : { module_or_path: wasmUrl });
  return wasmLoaded;
}

/** `ws(s)://host/ws?user_id=..` from an `http(s)://` or `ws(s)://` URL. */
export function webSocketUrl(url: string, options: Pick<HeraldOptions, "userId"> = {}): string {
  const base = typeof location === "undefined" ? undefined : location.href;
  const parsed = new URL(url, base);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.pathname === "/" || parsed.pathname === "") parsed.pathname = "/ws";
  if (options.userId !== undefined) parsed.searchParams.set("user_id", options.userId);
  return parsed.toString();
}

/**
 * Checks an event before it is published, with the protocol's own types:
 * `undefined` if `eventType` is well formed and `data` (JSON text) is valid
 * JSON of its typed payload (see `PayloadMap`), else what is wrong. Resolves
 * once the wasm module is loaded.
 */
export async function checkPublish(eventType: string, data: string, wasmUrl?: string | URL): Promise<string | undefined> {
  await loadWasm(wasmUrl);
  return checkEvent(eventType, data);
}

/** The typed payload of `eventType` (its name and a valid example), if Herald defines one. */
export async function typedPayload(
  eventType: string,
  wasmUrl?: string | URL,
): Promise<{ type: string; example: unknown } | undefined> {
  await loadWasm(wasmUrl);
  const type = payloadType(eventType);
  const example = payloadExample(eventType);
  return type === undefined || example === undefined ? undefined : { type, example: JSON.parse(example) };
}

/**
 * One logical connection to a Herald hub, across reconnects.
 *
 * ```ts
 * const client = new HeraldClient("http://127.0.0.1:8765", { userId: "u1" });
 * client.on("approval.requested", (e) => show(e.data.callback_id, e.data.step_result.message));
 * client.subscribe(["execution:exec_123"], { snapshot: true });
 * await client.connect();
 * ```
 */
export class HeraldClient implements SubscriptionHost {
  readonly url: string;
  private client: WasmClient | undefined;
  private failed: unknown;
  private pending: Array<(client: WasmClient) => void> = [];
  private readonly eventHandlers: Array<{ pattern: string; handler: Handler<HeraldEvent<string>> }> = [];
  private readonly stateHandlers: Array<Handler<ConnectionState>> = [];
  private readonly gapHandlers: Array<Handler<Gap>> = [];
  private readonly snapshotHandlers: Array<Handler<Snapshot>> = [];
  private readonly errorHandlers: Array<Handler<ErrorFrame>> = [];
  private readonly noticeHandlers: Array<Handler<SessionNotice>> = [];
  private readonly storageKey: string | undefined;
  private saveScheduled = false;
  private currentState: ConnectionState = { state: "connecting" };
  private disposed = false;
  private readonly subscriptions: Subscription[] = [];
  private welcomed: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  /** Commands sent with an id, waiting for the hub's `ack` or `error` with it as `ref`. */
  private readonly commands = new Map<string, { settle: (refusal?: ErrorFrame, failure?: unknown) => void }>();
  private lastCommand = 0;
  private lastSubscription = 0;

  constructor(url: string, options: HeraldOptions = {}) {
    this.url = webSocketUrl(url, options);
    const { persistCheckpoints, wasmUrl, userId: _userId, failover, ...rest } = options;
    const session = { ...rest, failover: (failover ?? []).map((node) => webSocketUrl(node, options)) };
    if (persistCheckpoints) {
      this.storageKey =
        typeof persistCheckpoints === "string"
          ? persistCheckpoints
          : `herald:checkpoints:${webSocketUrl(url, { userId: options.userId })}`;
    }
    const restored = this.loadCheckpoints();
    loadWasm(wasmUrl).then(
      () => {
        if (this.disposed) return;
        const client = new WasmClient(this.url, JSON.stringify(session), (kind: string, json: string) =>
          this.dispatch(kind, json),
        );
        if (restored !== undefined) {
          try {
            client.restoreCheckpoints(restored);
          } catch (error) {
            report(error);
          }
        }
        this.client = client;
        for (const run of this.pending.splice(0)) run(client);
      },
      (error: unknown) => {
        this.failed = error;
        for (const run of this.pending.splice(0)) {
          // Each queued call rejects with the load error.
          try {
            run(undefined as unknown as WasmClient);
          } catch {
            // Reported through the promise of the call.
          }
        }
      },
    );
  }

  /** The last state reported. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /**
   * Connects, and resolves on the hub's `welcome` (at once if open). Rejects
   * if the client closes for good first (a terminal close code, attempts
   * exhausted, `disconnect()`, `dispose()`); reconnect attempts in between
   * do not reject it.
   */
  connect(): Promise<void> {
    if (this.disposed) return Promise.reject(new Error("HeraldClient was disposed"));
    if (this.currentState.state === "open") return Promise.resolve();
    // The waiter is made once the call was applied (a `welcome` comes
    // later, on a socket event), so a call that failed leaves none behind.
    return this.run((client) => client.connect()).then(() =>
      this.currentState.state === "open"
        ? undefined
        : new Promise<void>((resolve, reject) => this.welcomed.push({ resolve, reject })),
    );
  }

  /**
   * Subscribes to `topics` (topics or patterns); kept and re-sent with
   * `since` on every reconnect. Returns the subscription: its own handlers,
   * its state, `ready()` (resolves on `subscribed`) and `unsubscribe()`.
   * Input the protocol refuses (a malformed topic) makes it `refused`.
   */
  subscribe(topics: string | string[], options: SubscribeOptions = {}): Subscription {
    const list = typeof topics === "string" ? [topics] : [...topics];
    this.lastSubscription += 1;
    const id = `sub-${this.lastSubscription}`;
    const subscription = new Subscription(this, list, options.filter, id);
    this.subscriptions.push(subscription);
    // The session core sends the frame with what every subscription sharing
    // a topic lets through (the hub keeps one filter per topic and
    // connection); each subscription filters its own events.
    const frame = {
      topics: list,
      ...(options.filter ? { filter: options.filter } : {}),
      ...(options.since ? { since: options.since } : {}),
      ...(options.snapshot ? { snapshot: true } : {}),
    };
    this.run((client) => client.subscribe(JSON.stringify(frame), id)).catch((error: unknown) => {
      if (this.disposed) {
        subscription.close();
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      // The session core's `FrameTooLarge` says "over the hub's frame limit";
      // everything else it refuses a subscription for is in its topics.
      const code = message.includes("over the hub's frame limit") ? "too_large" : "invalid_topic";
      subscription.handleError({ code, message: `${list.join(", ")}: ${message}`, ref: id });
    });
    return subscription;
  }

  /**
   * A fresh token (before the current one expires, or after the hub closed
   * with 4001 "token expired"): every connection from now on offers it, and
   * an open one sends it to the hub at once (`auth`), so the connection
   * outlives the old token's expiry.
   */
  setToken(token: string): Promise<void> {
    return this.run((client) => client.set_token(token));
  }

  /** Unsubscribes `topics` on the hub (every subscription object covering exactly them is closed). */
  unsubscribe(topics: string | string[]): Promise<void> {
    const list = typeof topics === "string" ? [topics] : topics;
    // The page's subscriptions close once the session took the request (it
    // refuses one over the hub's frame limit, and they then stay open).
    return this.run((client) => client.unsubscribe(JSON.stringify(list))).then(() => {
      for (const subscription of [...this.subscriptions]) {
        if (subscription.topics.every((t) => list.includes(t))) {
          subscription.close();
          remove(this.subscriptions, subscription);
        }
      }
    });
  }

  /** The open subscriptions. */
  get subscriptionList(): readonly Subscription[] {
    return this.subscriptions;
  }

  /**
   * @internal Why the client is closed for good (a terminal close code,
   * its reconnect attempts exhausted): nothing it holds can be confirmed
   * until `connect()` is called again. Undefined otherwise, a
   * `disconnect()` included.
   */
  closedForGood(): string | undefined {
    const state = this.currentState;
    if (state.state !== "closed" || state.reason === "disconnected") return undefined;
    return state.reason === "terminal" ? `connection closed by the hub (${state.code})` : `connection ${state.reason.replace("_", " ")}`;
  }

  /** @internal Called by `Subscription.unsubscribe()`: tells the hub about topics no other subscription lists. */
  unsubscribeOne(subscription: Subscription): Promise<void> {
    // The session core unsubscribes on the hub the topics no other
    // subscription lists, and from now on filters by the others alone.
    const id = subscription.requestId;
    const ended = id === null ? Promise.resolve() : this.run((client) => client.endSubscription(id));
    return ended.then(() => remove(this.subscriptions, subscription));
  }

  /**
   * Answers an approval (`approval.requested`'s `data.callback_id`). Queued
   * while offline. Resolves when the hub took the answer; rejects with a
   * `RefusedError` when it refused it (another user's approval, one already
   * decided), or after 30 s without an answer (a command queued offline may
   * still be carried out later).
   */
  confirm(callbackId: string, proceed: boolean, feedback?: string): Promise<void> {
    if (typeof callbackId !== "string" || callbackId === "") {
      return Promise.reject(new TypeError(`confirm: callbackId must be the approval's callback_id, not ${String(callbackId)}`));
    }
    return this.command((client, id) => client.confirm(callbackId, proceed, feedback, id));
  }

  /** Asks the producer to cancel a task or run; settles as `confirm` does. */
  cancel(target: ControlTarget): Promise<void> {
    return this.command((client, id) => client.control("cancel", JSON.stringify(target), id));
  }

  /** Asks the producer to pause; settles as `confirm` does. */
  pause(target: ControlTarget): Promise<void> {
    return this.command((client, id) => client.control("pause", JSON.stringify(target), id));
  }

  /** Asks the producer to resume; settles as `confirm` does. */
  resume(target: ControlTarget): Promise<void> {
    return this.command((client, id) => client.control("resume", JSON.stringify(target), id));
  }

  /** Closes for good (code 1000) until `connect()` or `reconnect()`; subscriptions are kept. */
  disconnect(): Promise<void> {
    return this.run((client) => client.disconnect());
  }

  /** Reconnects now, skipping any backoff. */
  reconnect(): Promise<void> {
    return this.run((client) => client.reconnect());
  }

  /** Disconnects and releases the wasm side (socket, timers, listeners). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // Calls still waiting for the wasm module reject.
    this.failed ??= new Error("HeraldClient was disposed");
    for (const run of this.pending.splice(0)) run(undefined as unknown as WasmClient);
    for (const subscription of this.subscriptions.splice(0)) subscription.close();
    for (const waiter of this.welcomed.splice(0)) waiter.reject(new Error("HeraldClient was disposed"));
    for (const command of [...this.commands.values()]) command.settle(undefined, new Error("HeraldClient was disposed"));
    const client = this.client;
    this.client = undefined;
    if (client) {
      this.saveCheckpoints();
      client.dispose();
      client.free();
    }
    if (this.currentState.state !== "closed") this.changeState({ state: "closed", reason: "disconnected" });
  }

  /** The current connection's `session_id` (from `welcome`). */
  get sessionId(): string | undefined {
    return this.client?.sessionId() ?? undefined;
  }

  /** Per-topic checkpoints `{topic: {seq, epoch}}`. */
  checkpoints(): Record<string, { seq: number; epoch?: string }> {
    return this.client ? JSON.parse(this.client.checkpoints()) : {};
  }

  /**
   * Calls `handler` for every event of `type`: an exact type (its `data` is
   * typed when Herald defines the payload), a pattern like `"execution.*"`,
   * or `"*"`. Returns a function that removes the handler.
   */
  on(type: "*", handler: Handler<HeraldEvent<string>>): () => void;
  on<T extends EventType>(type: T, handler: Handler<HeraldEvent<T>>): () => void;
  on(type: string, handler: Handler<HeraldEvent<any>>): () => void {
    const entry = { pattern: type, handler };
    this.eventHandlers.push(entry);
    return () => remove(this.eventHandlers, entry);
  }

  onState(handler: Handler<ConnectionState>): () => void {
    return add(this.stateHandlers, handler);
  }

  /** Events the client will not get (trimmed, shed, or a new epoch): re-read state. */
  onGap(handler: Handler<Gap>): () => void {
    return add(this.gapHandlers, handler);
  }

  onSnapshot(handler: Handler<Snapshot>): () => void {
    return add(this.snapshotHandlers, handler);
  }

  /** `error` frames from the hub (a refused subscription, an approval already resolved, ...). */
  onError(handler: Handler<ErrorFrame>): () => void {
    return add(this.errorHandlers, handler);
  }

  onNotice(handler: Handler<SessionNotice>): () => void {
    return add(this.noticeHandlers, handler);
  }

  /** Sends a command with a fresh id and settles on the hub's answer to it. */
  private command(send: (client: WasmClient, id: string) => void): Promise<void> {
    this.lastCommand += 1;
    const id = `cmd-${this.lastCommand}`;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => settle(undefined, new Error(`no answer from the hub within ${COMMAND_ANSWER_MS / 1000} s`)), COMMAND_ANSWER_MS);
      const settle = (refusal?: ErrorFrame, failure?: unknown) => {
        clearTimeout(timer);
        this.commands.delete(id);
        if (refusal) reject(new RefusedError(refusal));
        else if (failure !== undefined) reject(failure);
        else resolve();
      };
      this.commands.set(id, { settle });
      this.run((client) => send(client, id)).catch((error: unknown) => settle(undefined, error));
    });
  }

  private run(call: (client: WasmClient) => void): Promise<void> {
    if (this.disposed) return Promise.reject(new Error("HeraldClient was disposed"));
    if (this.client) {
      try {
        call(this.client);
        return Promise.resolve();
      } catch (error) {
        return Promise.reject(error);
      }
    }
    if (this.failed !== undefined) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.pending.push((client) => {
        if (this.failed !== undefined) return reject(this.failed);
        try {
          call(client);
          resolve();
        } catch (error) {
          reject(error);
        }
      });
    });
  }

  private dispatch(kind: string, json: string): void {
    const value = JSON.parse(json);
    switch (kind) {
      case "event": {
        const event = value as HeraldEvent<string>;
        for (const { pattern, handler } of [...this.eventHandlers]) {
          if (typeMatches(pattern, event.event_type)) call(handler, event);
        }
        for (const subscription of [...this.subscriptions]) subscription.handleEvent(event);
        this.scheduleSave();
        return;
      }
      case "state":
        return this.changeState(value as ConnectionState);
      case "gap":
        for (const handler of [...this.gapHandlers]) call(handler, value as Gap);
        for (const subscription of [...this.subscriptions]) subscription.handleGap(value as Gap);
        this.scheduleSave();
        return;
      case "snapshot":
        for (const handler of [...this.snapshotHandlers]) call(handler, value as Snapshot);
        for (const subscription of [...this.subscriptions]) subscription.handleSnapshot(value as Snapshot);
        this.scheduleSave();
        return;
      case "error":
        if (typeof value.ref === "string") this.commands.get(value.ref)?.settle(value as ErrorFrame);
        for (const handler of [...this.errorHandlers]) call(handler, value as ErrorFrame);
        for (const subscription of [...this.subscriptions]) subscription.handleError(value as ErrorFrame);
        return;
      case "welcome":
        for (const waiter of this.welcomed.splice(0)) waiter.resolve();
        return this.notice({ kind, welcome: value });
      case "subscribed":
        for (const subscription of [...this.subscriptions]) subscription.handleSubscribed(value as Subscribed);
        this.scheduleSave();
        return this.notice({ kind, subscribed: value });
      case "replay_complete":
        this.scheduleSave();
        return this.notice({ kind, replay: value });
      case "ack":
        if (typeof value.ref === "string") this.commands.get(value.ref)?.settle();
        return this.notice({ kind, ref: value.ref });
      case "dropped":
        // The offline queue was full: the command never goes.
        if (typeof value?.id === "string") {
          this.commands.get(value.id)?.settle(undefined, new Error("the offline queue was full: the command was dropped"));
        }
        return this.notice({ kind, frame: value });
      default:
      // Kinds a newer module adds are ignored.
    }
  }

  private changeState(state: ConnectionState): void {
    this.currentState = state;
    if (state.state === "connecting" || state.state === "reconnecting") {
      for (const subscription of this.subscriptions) subscription.handleReconnecting();
    }
    if (state.state === "closed") {
      const reason = state.reason === "terminal" ? `closed by the hub (${state.code})` : state.reason.replace("_", " ");
      for (const waiter of this.welcomed.splice(0)) waiter.reject(new Error(`connection ${reason}`));
      const why = this.closedForGood();
      if (why) for (const subscription of this.subscriptions) subscription.handleClosedForGood(why);
    }
    for (const handler of [...this.stateHandlers]) call(handler, state);
  }

  private notice(notice: SessionNotice): void {
    for (const handler of [...this.noticeHandlers]) call(handler, notice);
  }

  private loadCheckpoints(): string | undefined {
    if (this.storageKey === undefined || typeof sessionStorage === "undefined") return undefined;
    try {
      return sessionStorage.getItem(this.storageKey) ?? undefined;
    } catch {
      return undefined; // Storage disabled: nothing to restore.
    }
  }

  private scheduleSave(): void {
    if (this.storageKey === undefined || this.saveScheduled) return;
    this.saveScheduled = true;
    queueMicrotask(() => {
      this.saveScheduled = false;
      this.saveCheckpoints();
    });
  }

  private saveCheckpoints(): void {
    if (this.storageKey === undefined || !this.client || typeof sessionStorage === "undefined") return;
    try {
      sessionStorage.setItem(this.storageKey, this.client.checkpoints());
    } catch {
      // Quota or disabled storage: checkpoints stay in memory only.
    }
  }
}
