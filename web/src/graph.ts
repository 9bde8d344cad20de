/**
 * The run's graph, laid out by dagre once per graph and drawn as SVG; live status only
 * changes a node's `data-status` (its colour), so a status change never re-lays out.
 * Every node is a focusable button (Tab, Enter/Space), for keyboard users.
 */

import { Graph, layout } from "@dagrejs/dagre";

export interface GraphNode {
  id: string;
  after: string[];
  kind: "agent" | "tool";
}

const NODE_W = 150;
const NODE_H = 40;
const SVG = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

export class GraphView {
  readonly element: SVGSVGElement;
  private readonly nodes = new Map<string, SVGGElement>();

  constructor(graphNodes: GraphNode[], onSelect: (id: string) => void) {
    const g = new Graph();
    g.setGraph({ rankdir: "TB", nodesep: 20, ranksep: 40, marginx: 10, marginy: 10 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of graphNodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
    for (const n of graphNodes) for (const p of n.after) if (g.hasNode(p)) g.setEdge(p, n.id);
    layout(g);
    const { width = 0, height = 0 } = g.graph();
    this.element = svg("svg", {
      class: "graph",
      viewBox: `0 0 ${Math.max(width, 1)} ${Math.max(height, 1)}`,
      width: Math.max(width, 1),
      height: Math.max(height, 1),
      role: "group",
      "aria-label": "Graph of the run; each node is a button",
    });
    const edges = svg("g", { class: "edges" });
    for (const e of g.edges()) {
      const points = g.edge(e).points ?? [];
      const d = points.map((p: { x: number; y: number }, i: number) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
      edges.append(svg("path", { d, class: "edge" }));
    }
    this.element.append(edges);
    for (const n of graphNodes) {
      const box = g.node(n.id);
      const group = svg("g", {
        class: `node ${n.kind}`,
        transform: `translate(${box.x - NODE_W / 2},${box.y - NODE_H / 2})`,
        tabindex: 0,
        role: "button",
        "data-node-id": n.id,
        "data-status": "unknown",
        "aria-label": `${n.id}: unknown`,
      });
      group.append(
        svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
        Object.assign(svg("text", { x: NODE_W / 2, y: NODE_H / 2 + 5, "text-anchor": "middle" }), {
          textContent: n.id.length > 18 ? `${n.id.slice(0, 17)}…` : n.id,
        }),
      );
      group.addEventListener("click", () => onSelect(n.id));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onSelect(n.id);
        }
      });
      this.nodes.set(n.id, group);
      this.element.append(group);
    }
  }

  setStatus(id: string, status: string): void {
    const group = this.nodes.get(id);
    if (!group || group.getAttribute("data-status") === status) return;
    group.setAttribute("data-status", status);
    group.setAttribute("aria-label", `${id}: ${status}`);
  }

  select(id: string | null): void {
    for (const [nodeId, group] of this.nodes) group.classList.toggle("selected", nodeId === id);
  }
}
