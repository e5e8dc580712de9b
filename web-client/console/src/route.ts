// The console's routes live in the URL's fragment (`/#/runs/run:r1`), so
// every panel and every topic or run has a URL of its own that the hub's
// `/` serves: bookmark it, link to it, reload it.

export type Route =
  | { panel: "overview" }
  | { panel: "topics" }
  | { panel: "topic"; topic: string }
  | { panel: "runs" }
  | { panel: "run"; topic: string }
  | { panel: "approvals"; view: "inbox" | "history" }
  | { panel: "connections" }
  | { panel: "publish"; topic?: string }
  /** An address the console cannot read (a malformed `%` escape): said so, not thrown. */
  | { panel: "malformed"; address: string };

export function parseRoute(hash: string): Route {
  const [path = "", query = ""] = hash.replace(/^#\/?/, "").split("?");
  const [first = "", ...rest] = path.split("/");
  let tail: string | undefined;
  try {
    tail = rest.length > 0 ? decodeURIComponent(rest.join("/")) : undefined;
  } catch {
    // `decodeURIComponent` throws on a bad escape (`#/runs/%`); a link must
    // not take the whole console down with it.
    return { panel: "malformed", address: hash };
  }
  switch (first) {
    case "topics":
      return tail ? { panel: "topic", topic: tail } : { panel: "topics" };
    case "runs":
      return tail ? { panel: "run", topic: tail } : { panel: "runs" };
    case "approvals":
      return { panel: "approvals", view: tail === "history" ? "history" : "inbox" };
    case "connections":
      return { panel: "connections" };
    case "publish":
      return { panel: "publish", topic: new URLSearchParams(query).get("topic") ?? undefined };
    default:
      return { panel: "overview" };
  }
}

export function href(route: Route): string {
  switch (route.panel) {
    case "overview":
      return "#/overview";
    case "topics":
    case "runs":
    case "connections":
      return `#/${route.panel}`;
    case "topic":
      return `#/topics/${encodeURIComponent(route.topic)}`;
    case "run":
      return `#/runs/${encodeURIComponent(route.topic)}`;
    case "approvals":
      return route.view === "history" ? "#/approvals/history" : "#/approvals";
    case "publish":
      return route.topic ? `#/publish?topic=${encodeURIComponent(route.topic)}` : "#/publish";
    case "malformed":
      return route.address;
  }
}

/** The kinds of topic whose events describe a run (the Runs panel). */
export const RUN_KINDS = ["run", "execution", "task", "crew"];

export function isRunTopic(topic: string): boolean {
  const kind = topic.split(":")[0] ?? "";
  return topic.includes(":") && RUN_KINDS.includes(kind);
}
