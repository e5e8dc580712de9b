// The hub's HTTP API as the console calls it: typed answers (from the
// generated bindings), the admin key in `Authorization`, errors as `ApiError`.

import type {
  ApprovalDecision,
  ApprovalList,
  ApprovalStatus,
  ConnectionList,
  ConsoleConfig,
  HubStatus,
  NodeList,
  PublishReceipt,
  PublishRequest,
  Snapshot,
  TopicHistory,
  TopicList,
} from "../../dist/index.js";
import type { Credentials } from "./credentials.js";

/** A refusal from the hub (`{code, message}`) or a network failure. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Topics one `GET /api/v1/topics` lists unless asked for more (the hub's default). */
export const TOPICS_DEFAULT = 1000;
/** The most topics the hub lists in one answer. */
export const TOPICS_MAX = 10_000;

/** How long one call may take. */
const TIMEOUT_MS = 10_000;

export class Api {
  /**
   * `onUnauthorized` is told when the hub answers 401 to a call (a key it
   * no longer accepts): the console goes back to sign-in.
   */
  constructor(
    private readonly credentials: Credentials,
    private readonly onUnauthorized?: (message: string) => void,
  ) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.credentials.apiKey) headers.authorization = `Bearer ${this.credentials.apiKey}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (error) {
      throw new ApiError(0, "network", `the hub did not answer (${(error as Error).message})`);
    }
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!response.ok) {
      const refusal = json as { code?: string; message?: string } | undefined;
      const error = new ApiError(response.status, refusal?.code ?? "http", refusal?.message ?? `HTTP ${response.status}`);
      if (response.status === 401) this.onUnauthorized?.(error.message);
      throw error;
    }
    return json as T;
  }

  config(): Promise<ConsoleConfig> {
    return this.call("GET", "/console/config");
  }

  /** `GET /health/ready`: refused (503) while the hub drains or its store is away. */
  ready(): Promise<unknown> {
    return this.call("GET", "/health/ready");
  }

  status(): Promise<HubStatus> {
    return this.call("GET", "/api/v1/status");
  }

  /**
   * `GET /api/v1/topics?limit=N&pattern=P&order=O`: the first `limit` topics
   * (under `pattern`, default all) in name order, or the most recently
   * published to first with `order: "recent"`; `truncated` when more exist.
   */
  topics(limit = TOPICS_DEFAULT, { pattern, order }: { pattern?: string; order?: "name" | "recent" } = {}): Promise<TopicList> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (pattern) query.set("pattern", pattern);
    if (order) query.set("order", order);
    return this.call("GET", `/api/v1/topics?${query}`);
  }

  history(topic: string, since: number, limit: number): Promise<TopicHistory> {
    const query = new URLSearchParams({ since: String(since), limit: String(limit) });
    return this.call("GET", `/api/v1/topics/${encodeURIComponent(topic)}/events?${query}`);
  }

  snapshot(topic: string): Promise<Snapshot> {
    return this.call("GET", `/api/v1/topics/${encodeURIComponent(topic)}/snapshot`);
  }

  connections(): Promise<ConnectionList> {
    return this.call("GET", "/api/v1/connections");
  }

  disconnect(id: string): Promise<unknown> {
    return this.call("DELETE", `/api/v1/connections/${encodeURIComponent(id)}`);
  }

  approvals(filter: { status?: ApprovalStatus; task_id?: string } = {}): Promise<ApprovalList> {
    const query = new URLSearchParams(Object.entries(filter).filter((e): e is [string, string] => e[1] !== undefined));
    return this.call("GET", `/api/v1/approvals?${query}`);
  }

  approval(id: string): Promise<ApprovalDecision> {
    return this.call("GET", `/api/v1/approvals/${encodeURIComponent(id)}`);
  }

  publish(request: PublishRequest): Promise<PublishReceipt> {
    return this.call("POST", "/api/v1/events", request);
  }

  /** `GET /api/v1/nodes`: the nodes sharing this hub's store. */
  nodes(): Promise<NodeList> {
    return this.call("GET", "/api/v1/nodes");
  }

}
