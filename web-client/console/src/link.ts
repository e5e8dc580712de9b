// The console's own connection to the hub as the shell and the panels show
// it: its state, since when it is not live, why (the close code's meaning,
// or this console's own Disconnect), and Reconnect. What the console shows
// from events (the approvals inbox, live tails) is only current while the
// connection is open; the panels read `live` and `why` to say so.

import type { ConnectionState, HeraldClient } from "../../dist/index.js";
import type { Store } from "./hooks.js";

export interface LinkState {
  connection: ConnectionState;
  /** Whether the WebSocket is open, so events reach the console. */
  live: boolean;
  /** When it stopped being open, or first failed to open (ms since the epoch); absent while open and while it first connects. */
  downSince?: number;
  /** Why it is not open, for people; absent while open. */
  why?: string;
  /** Whether Reconnect is offered: it is down (closed for good, or between attempts). */
  canReconnect: boolean;
  /** Closed because this console disconnected its own connection. */
  byItself: boolean;
}

/** The close code 4500: an admin's Disconnect, after which a client does not reconnect. */
const DISCONNECTED_BY_ADMIN = 4500;

/**
 * How long a connection must stay open to count as live: a hub at its
 * connection limit greets a connection (so it reads as open) and closes it
 * with 1013 at once, and a console that counted that as live would flicker
 * between live and not, attempt after attempt.
 */
const SETTLE_MS = 1000;

/** How long after this console asked to disconnect itself a 4500 is taken as that Disconnect. */
const OWN_DISCONNECT_MS = 30_000;

/**
 * What a close code means for this console: the hub's names for the codes
 * (`CloseReason::meaning` in herald-protocol), with 1013 spelled out,
 * since a browser is not shown the close reason the hub sends with it.
 * `operator` is the user this console connects as on an open hub.
 */
export function closeMeaning(code: number, operator?: string): string {
  switch (code) {
    case 1000:
      return "a normal close";
    case 1001:
      return "the hub is going away";
    case 1006:
      return "the connection dropped, or the hub refused it, without a close frame";
    case 1008:
      return "a policy violation";
    case 1009:
      return "a frame over the hub's size limit";
    case 1011:
      return "the hub failed";
    case 1013:
      return operator === undefined
        ? "try again later: the hub is at its connection limit (its own, or this user's), or this console fell too far behind"
        : `try again later: the hub is at its connection limit (its own, or this user's: on an open hub every console tab of this browser is the user it decides as, "${operator}"), or this console fell too far behind`;
    case 4000:
      return "heartbeat timeout";
    case 4001:
      return "the token expired";
    case 4029:
      return "too many frames";
    case 4500:
      return "disconnected by an admin";
    case 4503:
      return "forbidden";
    default:
      return "a code the protocol does not name";
  }
}

export class Link implements Store<LinkState> {
  private state: LinkState;
  private readonly listeners = new Set<() => void>();
  /** Why it last closed or failed, until it opens again. */
  private reason: string | undefined;
  /** When this console asked the hub to disconnect its own connection (ms), until that close or the next open. */
  private ownDisconnectAt: number | undefined;
  private readonly stop: () => void;
  /** Makes an open connection live once it stayed open SETTLE_MS. */
  private settling: ReturnType<typeof setTimeout> | undefined;

  /** `operator`: the user this console connects as on an open hub (none with a token). */
  constructor(
    private readonly client: HeraldClient,
    private readonly operator?: string,
  ) {
    this.state = this.describe(client.state);
    this.stop = client.onState((connection) => this.change(this.describe(connection)));
  }

  private change(state: LinkState): void {
    this.state = state;
    for (const listener of [...this.listeners]) listener();
  }

  get(): LinkState {
    return this.state;
  }

  listen(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Says that this console is about to disconnect its own connection (the
   * Connections page): the 4500 that follows reads as that, not as another
   * admin's. `failed` undoes it when the hub did not carry it out.
   */
  disconnectingItself(): { failed: () => void } {
    const at = Date.now();
    this.ownDisconnectAt = at;
    return {
      failed: () => {
        if (this.ownDisconnectAt === at) this.ownDisconnectAt = undefined;
      },
    };
  }

  /** Connects again now: after a close for good, or skipping the rest of a backoff. */
  reconnect(): void {
    const connection = this.client.state;
    if (connection.state === "closed") {
      // Rejects if it closes for good again; the state says why.
      this.client.connect().catch(() => undefined);
    } else if (connection.state !== "open") {
      this.client.reconnect().catch(() => undefined);
    }
  }

  dispose(): void {
    clearTimeout(this.settling);
    this.stop();
  }

  private describe(connection: ConnectionState): LinkState {
    // Down since it stopped being live, or first failed: an attempt in
    // between (`connecting`, an open not yet live) does not end it, nor
    // does it forget why.
    const down = this.state?.live || connection.state === "reconnecting" || connection.state === "closed";
    const downSince = this.state?.downSince ?? (down ? Date.now() : undefined);
    clearTimeout(this.settling);
    this.settling = undefined;
    switch (connection.state) {
      case "open":
        if (this.state?.live) return this.state;
        this.settling = setTimeout(() => {
          this.settling = undefined;
          if (this.client.state.state !== "open") return;
          this.ownDisconnectAt = undefined;
          this.reason = undefined;
          this.change({ connection: this.client.state, live: true, canReconnect: false, byItself: false });
        }, SETTLE_MS);
        return {
          connection,
          live: false,
          downSince,
          why: this.reason === undefined ? "connected; waiting to see that the hub keeps the connection" : `${this.reason}; connected again, waiting to see that the hub keeps the connection`,
          canReconnect: false,
          byItself: false,
        };
      case "connecting":
        return {
          connection,
          live: false,
          downSince,
          why: this.reason === undefined ? "connecting to the hub" : `${this.reason}; connecting again`,
          canReconnect: downSince !== undefined,
          byItself: false,
        };
      case "reconnecting":
        this.reason =
          connection.code === undefined
            ? "the hub does not answer"
            : `the hub closed the connection with ${connection.code} (${closeMeaning(connection.code, this.operator)})`;
        return {
          connection,
          live: false,
          downSince,
          why: `${this.reason}; reconnecting (attempt ${connection.attempt})`,
          canReconnect: true,
          byItself: false,
        };
      case "closed": {
        let byItself = false;
        if (connection.reason === "terminal") {
          const own = this.ownDisconnectAt !== undefined && Date.now() - this.ownDisconnectAt < OWN_DISCONNECT_MS;
          this.ownDisconnectAt = undefined;
          byItself = own && connection.code === DISCONNECTED_BY_ADMIN;
          this.reason = byItself
            ? "this console disconnected its own connection (Connections page), and does not reconnect by itself"
            : `the hub closed the connection for good with ${connection.code} (${closeMeaning(connection.code, this.operator)})`;
        } else if (connection.reason === "attempts_exhausted") {
          this.reason = `the hub did not answer ${connection.attempts} attempts in a row; the console stopped trying`;
        } else {
          this.reason = "disconnected";
        }
        return { connection, live: false, downSince, why: this.reason, canReconnect: true, byItself };
      }
    }
  }
}
