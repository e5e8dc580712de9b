// A run's DAG: laid out by dagre (left to right), drawn as SVG, each node
// coloured by its status; a list of the nodes beside it is what keyboards
// and screen readers get.

import { Graph, layout } from "@dagrejs/dagre";
import { useMemo } from "preact/hooks";
import type { DagNode } from "../run/model.js";

const NODE_WIDTH = 150;
const NODE_HEIGHT = 44;

interface Props {
  nodes: DagNode[];
  edges: Array<{ from: string; to: string }>;
}

interface Drawn {
  width: number;
  height: number;
  nodes: Array<DagNode & { x: number; y: number }>;
  edges: Array<{ from: string; to: string; points: Array<{ x: number; y: number }> }>;
}

function draw(nodes: DagNode[], edges: Props["edges"]): Drawn {
  const graph = new Graph();
  graph.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 46, marginx: 8, marginy: 8 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const node of nodes) graph.setNode(node.id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const edge of edges) graph.setEdge(edge.from, edge.to);
  layout(graph);
  const label = graph.graph();
  return {
    width: Math.ceil(label.width ?? 0),
    height: Math.ceil(label.height ?? 0),
    nodes: nodes.map((node) => {
      const placed = graph.node(node.id);
      return { ...node, x: placed?.x ?? 0, y: placed?.y ?? 0 };
    }),
    edges: graph.edges().map((e) => ({ from: e.v, to: e.w, points: graph.edge(e)?.points ?? [] })),
  };
}

export function Dag({ nodes, edges }: Props) {
  // Layout depends on the shape only; statuses change colours, not places.
  const shape = JSON.stringify([nodes.map((n) => n.id), edges]);
  const drawn = useMemo(() => draw(nodes, edges), [shape]);
  const status = new Map(nodes.map((n) => [n.id, n]));
  if (nodes.length === 0) return <p class="muted">No DAG yet (a <code>dag.created</code> event draws it).</p>;
  const summary = nodes.map((n) => `${n.label}: ${n.status}`).join(", ");
  return (
    <div class="dag">
      <div class="dag-scroll">
        <svg
          class="dag-svg"
          width={drawn.width}
          height={drawn.height}
          viewBox={`0 0 ${drawn.width} ${drawn.height}`}
          role="img"
          aria-label={`DAG: ${summary}`}
        >
          <defs>
            <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
              <path d="M0,0 L10,5 L0,10 z" class="dag-arrow" />
            </marker>
          </defs>
          {drawn.edges.map((edge) => (
            <path
              key={`${edge.from}>${edge.to}`}
              class="dag-edge"
              marker-end="url(#arrow)"
              d={edge.points.map((p, i) => `${i === 0 ? "M" : "L"}${p.x},${p.y}`).join(" ")}
            />
          ))}
          {drawn.nodes.map((node) => {
            const current = status.get(node.id) ?? node;
            return (
              <g
                key={node.id}
                class={`dag-node status-${current.status}`}
                data-node={node.id}
                data-status={current.status}
                transform={`translate(${node.x - NODE_WIDTH / 2},${node.y - NODE_HEIGHT / 2})`}
              >
                <title>{`${current.label}: ${current.status}${current.error ? ` (${current.error})` : ""}`}</title>
                <rect width={NODE_WIDTH} height={NODE_HEIGHT} rx="8" />
                <text x="12" y="19" class="dag-label">
                  {current.label.length > 18 ? `${current.label.slice(0, 17)}…` : current.label}
                </text>
                <text x="12" y="34" class="dag-status">
                  {current.status}
                </text>
              </g>
            );
          })}
        </svg>
      </div>
      <ul class="dag-list" aria-label="DAG nodes">
        {nodes.map((node) => (
          <li key={node.id} data-node={node.id} data-status={node.status}>
            <span class={`dot status-${node.status}`} aria-hidden="true" /> {node.label} — {node.status}
            {node.error ? <span class="error-text"> ({node.error})</span> : null}
          </li>
        ))}
      </ul>
    </div>
  );
}
