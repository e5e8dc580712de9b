// A run as its events describe it. Producers put these on the run's topic
// (`run:ID`, `execution:ID`, `task:ID`, `crew:ID`); fields are read leniently
// (the seeds' names and Herald's), and anything else is ignored:
//
// - `dag.created`, `dag.updated`: `{nodes: [{id, label?, status?}], edges: [{from, to}]}`
//   (`source`/`target` work too); an update merges nodes and replaces edges.
// - `dag.node_status_changed`: `{node_id, new_status, old_status?, error?}`.
// - `step.started|progress|completed|failed`: `{step, message?, progress?, error?}`.
// - `workflow.*`, `execution.*`, `task.*`, `crew.*` lifecycle types: the run's status.
// - `agent.message|thinking|tool_call`: `{agent, content | message, tool?, arguments?, result?}`.
// - `cost.updated`: `{metrics: {name: number}}` (Herald's `Metrics` payload).
// - `file.created|updated`: `{path, size?, url?}`.

import type { HeraldEvent } from "../../../dist/index.js";

export type NodeStatus = string;

export interface DagNode {
  id: string;
  label: string;
  status: NodeStatus;
  error?: string;
}

export interface Step {
  name: string;
  status: "running" | "completed" | "failed";
  started: number;
  ended?: number;
  progress?: number;
  message?: string;
}

export interface AgentEntry {
  seq: number;
  at: number;
  kind: "message" | "thinking" | "tool_call";
  agent: string;
  text: string;
  tool?: string;
  detail?: string;
}

export interface FileEntry {
  path: string;
  at: number;
  size?: number;
  url?: string;
  updates: number;
}

export interface Run {
  topic: string;
  status: string;
  started?: number;
  updated?: number;
  nodes: Map<string, DagNode>;
  edges: Array<{ from: string; to: string }>;
  steps: Map<string, Step>;
  agents: AgentEntry[];
  cost: Record<string, number>;
  files: Map<string, FileEntry>;
  /** Control requests seen on the topic (pause, resume, cancel). */
  controls: Array<{ at: number; action: string; reason?: string }>;
  lastSeq: number;
}

/** At most this many agent entries are kept (the newest). */
const AGENT_ENTRIES = 500;

export function emptyRun(topic: string): Run {
  return {
    topic,
    status: "unknown",
    nodes: new Map(),
    edges: [],
    steps: new Map(),
    agents: [],
    cost: {},
    files: new Map(),
    controls: [],
    lastSeq: 0,
  };
}

type Data = Record<string, unknown>;

function text(data: Data, ...names: string[]): string | undefined {
  for (const name of names) {
    const value = data[name];
    if (typeof value === "string") return value;
    if (typeof value === "number") return String(value);
  }
  return undefined;
}

function num(data: Data, name: string): number | undefined {
  const value = data[name];
  return typeof value === "number" ? value : undefined;
}

const LIFECYCLE: Record<string, string> = {
  started: "running",
  resumed: "running",
  paused: "paused",
  completed: "completed",
  failed: "failed",
  cancelled: "cancelled",
};

/** Applies one event of the run's topic (in seq order) to `run`. */
export function apply(run: Run, event: HeraldEvent<string>): void {
  if (event.seq <= run.lastSeq) return;
  run.lastSeq = event.seq;
  run.updated = event.timestamp;
  const data: Data = event.data !== null && typeof event.data === "object" ? (event.data as Data) : {};
  const [domain = "", action = ""] = event.event_type.split(".");
  if (["workflow", "execution", "task", "crew"].includes(domain) && LIFECYCLE[action]) {
    run.status = LIFECYCLE[action] ?? run.status;
    if (action === "started") run.started ??= event.timestamp;
    return;
  }
  switch (event.event_type) {
    case "dag.created":
    case "dag.updated":
      return applyDag(run, data, event.event_type === "dag.created");
    case "dag.node_status_changed": {
      const id = text(data, "node_id", "id", "node");
      if (!id) return;
      const node = run.nodes.get(id) ?? { id, label: id, status: "pending" };
      node.status = text(data, "new_status", "status") ?? node.status;
      node.error = text(data, "error") ?? (node.status === "failed" ? node.error : undefined);
      run.nodes.set(id, node);
      return;
    }
    case "step.started":
    case "step.progress":
    case "step.completed":
    case "step.failed":
      return applyStep(run, action, data, event.timestamp);
    case "agent.message":
    case "agent.thinking":
    case "agent.tool_call":
      return applyAgent(run, action as AgentEntry["kind"], data, event);
    case "cost.updated": {
      const metrics = data.metrics;
      if (metrics && typeof metrics === "object") {
        for (const [name, value] of Object.entries(metrics as Data)) {
          if (typeof value === "number") run.cost[name] = value;
        }
      }
      return;
    }
    case "file.created":
    case "file.updated": {
      const path = text(data, "path", "name", "file", "filename");
      if (!path) return;
      const known = run.files.get(path);
      run.files.set(path, {
        path,
        at: event.timestamp,
        size: num(data, "size") ?? known?.size,
        url: text(data, "url") ?? known?.url,
        updates: (known?.updates ?? 0) + 1,
      });
      return;
    }
    case "control.pause":
    case "control.resume":
    case "control.cancel":
      run.controls.push({ at: event.timestamp, action, reason: text(data, "reason") });
      return;
    default:
  }
}

function applyDag(run: Run, data: Data, created: boolean): void {
  if (created) run.nodes = new Map();
  const nodes = Array.isArray(data.nodes) ? (data.nodes as Data[]) : [];
  for (const raw of nodes) {
    if (!raw || typeof raw !== "object") continue;
    const id = text(raw, "id", "node_id", "name");
    if (!id) continue;
    const known = run.nodes.get(id);
    run.nodes.set(id, {
      id,
      label: text(raw, "label", "name", "agent") ?? known?.label ?? id,
      status: text(raw, "status") ?? known?.status ?? "pending",
      error: known?.error,
    });
  }
  if (Array.isArray(data.edges)) {
    run.edges = (data.edges as Data[])
      .map((edge) => ({ from: text(edge ?? {}, "from", "source") ?? "", to: text(edge ?? {}, "to", "target") ?? "" }))
      .filter((edge) => run.nodes.has(edge.from) && run.nodes.has(edge.to));
  }
}

function applyStep(run: Run, action: string, data: Data, at: number): void {
  const name = text(data, "step", "step_id", "name", "node_id") ?? "step";
  const step = run.steps.get(name) ?? { name, status: "running" as const, started: at };
  if (action === "started") {
    step.started = at;
    step.status = "running";
    step.ended = undefined;
  } else if (action === "progress") {
    step.progress = num(data, "progress") ?? step.progress;
  } else {
    step.status = action === "completed" ? "completed" : "failed";
    step.ended = at;
    if (action === "completed") step.progress = 100;
  }
  step.message = text(data, "message", "error") ?? step.message;
  run.steps.set(name, step);
}

function applyAgent(run: Run, kind: AgentEntry["kind"], data: Data, event: HeraldEvent<string>): void {
  const tool = kind === "tool_call" ? text(data, "tool", "tool_name", "name") : undefined;
  const args = data.arguments ?? data.args ?? data.input;
  const result = data.result ?? data.output;
  run.agents.push({
    seq: event.seq,
    at: event.timestamp,
    kind,
    agent: text(data, "agent", "agent_name", "agent_id", "role") ?? "agent",
    text: text(data, "content", "message", "thought", "text") ?? (tool ? `called ${tool}` : ""),
    tool,
    detail:
      kind === "tool_call"
        ? [args === undefined ? "" : `args ${JSON.stringify(args)}`, result === undefined ? "" : `→ ${JSON.stringify(result)}`]
            .filter(Boolean)
            .join(" ")
        : undefined,
  });
  if (run.agents.length > AGENT_ENTRIES) run.agents.splice(0, run.agents.length - AGENT_ENTRIES);
}
