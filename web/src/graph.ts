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
  /** A controller of a run that grows: one box for all its instances, with their counts. */
  group?: "map" | "loop" | "subgraph";
}

const NODE_W = 150;
const NODE_H = 40;
const GROUP_H = 54; // a group's box has a second line: its instances' counts

/** Every status a node can show, in the legend's order (colours in style.css). */
export const STATUSES = [
  "waiting", "ready", "running", "retrying", "expanded", "waiting_approval",
  "succeeded", "failed", "skipped", "cancelled", "unwatched",
];

/** The colour key of the graph: a swatch and the status's name (never colour alone). */
export function legend(): HTMLElement {
  const list = document.createElement("ul");
  list.className = "legend";
  list.setAttribute("aria-label", "Status colours");
  for (const status of STATUSES) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${status}`;
    item.append(swatch, status.replace("_", " "));
    list.append(item);
  }
  return list;
}
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
  private readonly counts = new Map<string, SVGTextElement>();
  private readonly countsText = new Map<string, string>();

  constructor(graphNodes: GraphNode[], onSelect: (id: string) => void) {
    const g = new Graph();
    g.setGraph({ rankdir: "TB", nodesep: 20, ranksep: 40, marginx: 10, marginy: 10 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of graphNodes) g.setNode(n.id, { width: NODE_W, height: n.group ? GROUP_H : NODE_H });
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
      const h = n.group ? GROUP_H : NODE_H;
      const group = svg("g", {
        class: `node ${n.kind}${n.group ? ` group ${n.group}` : ""}`,
        transform: `translate(${box.x - NODE_W / 2},${box.y - h / 2})`,
        tabindex: 0,
        role: "button",
        "data-node-id": n.id,
        "data-status": "unknown",
        "aria-label": `${n.id}: unknown`,
      });
      if (n.group === "map" || n.group === "loop") {
        // A stack of cards behind the box: it stands for many instances.
        group.append(svg("rect", { class: "stack", x: 4, y: -4, width: NODE_W, height: h, rx: 6 }));
      }
      const label = (n.group ? `${n.id} (${n.group})` : n.id);
      group.append(
        svg("rect", { width: NODE_W, height: h, rx: 6 }),
        Object.assign(svg("text", { x: NODE_W / 2, y: n.group ? 20 : NODE_H / 2 + 5, "text-anchor": "middle" }), {
          textContent: label.length > 20 ? `${label.slice(0, 19)}…` : label,
        }),
      );
      if (n.group) {
        const counts = svg("text", { class: "counts", x: NODE_W / 2, y: 40, "text-anchor": "middle" });
        group.append(counts);
        this.counts.set(n.id, counts);
      }
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
    const counts = this.countsText.get(id);
    group.setAttribute("aria-label", `${id}: ${status}${counts ? `; ${counts}` : ""}`);
  }

  /**
   * A group's counts: the short line on its box (`✓30 ◐2 ·8 /40`), the full text in its
   * accessible label and `data-counts` (e.g. "succeeded 30, running 2").
   */
  setCounts(id: string, short: string, full: string, byStatus: Record<string, number>): void {
    const text = this.counts.get(id);
    const group = this.nodes.get(id);
    if (!text || !group) return;
    text.textContent = short;
    const data = Object.entries(byStatus)
      .filter(([, n]) => n > 0)
      .map(([s, n]) => `${s} ${n}`)
      .join(", ");
    group.setAttribute("data-counts", data);
    this.countsText.set(id, full);
    group.setAttribute("aria-label", `${id}: ${group.getAttribute("data-status")}; ${full}`);
  }

  select(id: string | null): void {
    for (const [nodeId, group] of this.nodes) group.classList.toggle("selected", nodeId === id);
  }
}
