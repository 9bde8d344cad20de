/**
 * One run, live: the run document, the graph coloured by node status, and the selected
 * node's details (streamed text growing as it is written, output, error, attempts,
 * tokens, cost, timeline). Cancel calls the api with the user's ID token.
 *
 * What watching costs (Firestore document reads), whatever the size of the run:
 * - 1 listener on the run document: 1 read, then 1 per change of it;
 * - 1 listener on a window of at most WINDOW (200) node documents in creation order
 *   (`nodes order by seq limit 200`, moved with "Next/Previous nodes"): at most 200 reads,
 *   then 1 per change of a node in the window;
 * - for the selected node: at most 1 node document (when outside the window) and at most
 *   EVENTS (100) of its events; large outputs' chunks only when asked ("Load output");
 * - the graph itself comes from the run document (graph_json), or from its chunks once.
 * - while the run has no stored counts (it runs), its counts and usage: 5 aggregation
 *   queries over its nodes (counts.ts), billed 1 read per 1,000 nodes each (≤ 10 for 2,000),
 *   re-run when the window or the run document changes, at most once every 2 s.
 * Without groups or steps, watching a 2,000-node run reads at most 1 + 200 + 1 + 100 + 10 =
 * 312 documents when it opens, and then one read per change of a watched document plus the
 * recounts while it runs. Nothing else polls.
 * Nodes outside the window are drawn with status "unwatched" until the window moves there.
 * The window holds the graph's own nodes only; the instances of a run that grows (map
 * items, loop iterations, subgraph nodes) are counted and listed per group (groups.ts:
 * at most 6 groups counted, each at most 100 reads, and a page of 30 instances listed),
 * and the selected node's tool trace reads its latest 50 steps (steps.ts). With those,
 * opening a run of any size reads at most 1 + 200 + 1 + 100 + 50 + 6 × 100 + 30 = 982
 * documents (712 when no group has over 1,000 instances), plus its counts while it runs
 * (1 read per 1,000 nodes for each of the 5 queries).
 */

import * as F from "firebase/firestore";
import { type DocumentData, type Firestore, getDoc, onSnapshot } from "firebase/firestore";
import * as Q from "./queries.js";
import { api } from "./api";
import { RunCounts, countRun, needsCounting } from "./counts";
import { GraphView, type GraphNode, legend } from "./graph";
import { type Counts, type Group, Groups, describeCounts, groupOfSpec } from "./groups";
import type { Session } from "./session";
import { StepTrace } from "./steps";
import { Listeners, el, pretty, usd, when } from "./util";

export const WINDOW = Q.NODE_WINDOW;
export const EVENTS = Q.NODE_EVENTS;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const REDRIVABLE = new Set(["failed", "cancelled"]);

export interface NodeContext {
  session: Session;
  apiUrl: string;
  runId: string;
  run: DocumentData;
  spec: Record<string, unknown> | undefined;
}

/**
 * Extra sections of the node panel. Later features (map instances, loop iterations,
 * approvals, tool traces) register here; each returns null for nodes it has nothing for.
 */
export type NodeSection = (node: DocumentData, context: NodeContext) => HTMLElement | null;
export const nodeSections: NodeSection[] = [];

/** A value stored as chunks (backends/gcp/chunks.py): read each chunk document, join. */
export async function readChunks(
  db: Firestore,
  parent: string[],
  marker: { chunks: number; prefix: string },
): Promise<string> {
  const snaps = await Promise.all(Q.chunkDocs(F, db, parent, marker).map((ref) => getDoc(ref)));
  return snaps.map((snap) => String(snap.get("data") ?? "")).join("");
}

function graphNodes(graph: { nodes?: Record<string, unknown>[] }): GraphNode[] {
  return (graph.nodes ?? []).map((n) => ({
    id: String(n.id),
    after: (n.after as string[] | undefined) ?? [],
    kind: n.prompt != null ? "agent" : "tool",
    group: groupOfSpec(n)?.kind,
  }));
}

const SHORT: Record<string, string> = { succeeded: "✓", failed: "✗", running: "◐", waiting: "·" };

/** The line on a group's box: the main statuses by icon, then the total. */
function shortCounts(counts: Counts): string {
  const s = counts.byStatus;
  const active = ["ready", "running", "retrying", "expanded", "waiting_approval"].reduce((a, k) => a + (s[k] ?? 0), 0);
  const parts = [
    s.succeeded ? `${SHORT.succeeded}${s.succeeded}` : "",
    active ? `${SHORT.running}${active}` : "",
    s.failed ? `${SHORT.failed}${s.failed}` : "",
    s.waiting ? `${SHORT.waiting}${s.waiting}` : "",
  ].filter(Boolean);
  return `${parts.join(" ")} /${counts.total}`;
}

function field(label: string, value: Node | string, id?: string): HTMLElement {
  const dd = el("dd", id ? { id } : {}, value);
  return el("div", { class: "field" }, el("dt", { text: label }), dd);
}

export function renderRun(
  session: Session,
  apiUrl: string,
  runId: string,
  root: HTMLElement,
  listeners: Listeners,
): void {
  const db = session.db;
  const header = el("div", { class: "run-head" });
  const message = el("p", { class: "muted", role: "status", id: "run-message" });
  const graphBox = el("div", { class: "graph-box", "aria-label": "Graph" });
  const windowBar = el("div", { class: "pager" });
  const trace = new StepTrace(db, runId);
  let groups: Groups | null = null;
  const panel = el("section", { id: "node-panel", class: "card", "aria-live": "polite" });
  panel.append(el("p", { class: "muted", text: "Select a node to see its details." }));
  root.replaceChildren(
    el("h1", {}, "Run ", el("code", { text: runId })),
    header,
    message,
    el("div", { class: "run-body" }, el("div", {}, graphBox, legend(), windowBar), panel),
  );

  let run: DocumentData | null = null;
  // A running run's counts, from its nodes (counts.ts), re-counted as the window changes.
  const counter = new RunCounts(db, runId, () => drawHeader());
  let specs = new Map<string, Record<string, unknown>>();
  let view: GraphView | null = null;
  const nodes = new Map<string, DocumentData>();
  let selected: string | null = null;
  let first = 0;
  let stopWindow: (() => void) | null = null;
  let stopSelected: (() => void) | null = null;
  let stopEvents: (() => void) | null = null;
  let events: DocumentData[] = [];
  let graphLoaded = false;
  listeners.add(() => {
    stopWindow?.();
    stopSelected?.();
    stopEvents?.();
    trace.stop();
    groups?.stop();
    counter.stop();
  });

  const cancel = el("button", { type: "button", id: "cancel", class: "danger", text: "Cancel run" });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api(session, apiUrl, "POST", `/runs/${runId}/cancel`);
      message.textContent = "Cancel requested.";
    } catch (error) {
      message.textContent = `Cancel failed: ${(error as Error).message}`;
      cancel.disabled = false;
    }
  });

  const redrive = el("button", { type: "button", id: "redrive", text: "Redrive" });
  redrive.title = "Run what failed or was cancelled again; succeeded nodes keep their outputs";
  redrive.addEventListener("click", async () => {
    redrive.disabled = true;
    try {
      await api(session, apiUrl, "POST", `/runs/${runId}/redrive`);
      message.textContent = "Redrive requested.";
    } catch (error) {
      message.textContent = `Redrive failed: ${(error as Error).message}`;
      redrive.disabled = false;
    }
  });

  const drawHeader = () => {
    if (!run) return;
    const { counts: counted, usage } = countRun(run, counter.current);
    const counts = Object.entries(counted)
      .filter(([, n]) => n > 0)
      .map(([s, n]) => `${s} ${n}`)
      .join(", ");
    cancel.disabled = TERMINAL.has(run.status);
    redrive.hidden = !REDRIVABLE.has(run.status);
    redrive.disabled = !REDRIVABLE.has(run.status);
    header.replaceChildren(
      el(
        "dl",
        { class: "facts" },
        field("Graph", run.graph_name),
        field("Status", el("span", { class: `badge ${run.status}`, text: run.status }), "run-status"),
        field("Nodes", `${run.node_count} (${counts})`, "run-nodes"),
        field("Cost", usd(usage.cost_usd), "run-cost"),
        field("Tokens", `${usage.input_tokens ?? 0} in / ${usage.output_tokens ?? 0} out`),
        field("Created", when(run.created_at)),
        field("Finished", when(run.finished_at)),
      ),
      run.error ? el("pre", { class: "error", text: JSON.stringify(run.error, null, 2) }) : "",
      el("div", { class: "actions" }, cancel, redrive),
    );
  };

  const drawWindowBar = () => {
    const count = specs.size; // the graph's own nodes (instances are listed per group)
    if (count <= WINDOW) {
      windowBar.replaceChildren();
      return;
    }
    const prev = el("button", { type: "button", text: "Previous nodes" });
    const next = el("button", { type: "button", text: "Next nodes" });
    prev.disabled = first === 0;
    next.disabled = first + WINDOW >= count;
    prev.addEventListener("click", () => watchWindow(Math.max(0, first - WINDOW)));
    next.addEventListener("click", () => watchWindow(first + WINDOW));
    windowBar.replaceChildren(
      el("span", { text: `Live status of nodes ${first + 1}–${Math.min(first + WINDOW, count)} of ${count}` }),
      prev,
      next,
    );
  };

  const watchWindow = (start: number) => {
    stopWindow?.();
    first = start;
    nodes.clear();
    for (const id of specs.keys()) view?.setStatus(id, "unwatched");
    drawWindowBar();
    stopWindow = onSnapshot(
      Q.nodesWindowQuery(F, db, runId, first, specs.size),
      (snap) => {
        for (const change of snap.docChanges()) {
          const data = change.doc.data();
          if (change.type === "removed") {
            nodes.delete(change.doc.id);
            view?.setStatus(change.doc.id, "unwatched");
          } else {
            nodes.set(change.doc.id, data);
            view?.setStatus(change.doc.id, String(data.status));
            groups?.nodeChanged(change.doc.id, data);
          }
          if (change.doc.id === selected) drawPanel();
        }
        if (run && needsCounting(run)) counter.refresh();
      },
      (error) => {
        message.textContent = `Cannot watch the nodes (${error.code}): ${error.message}`;
      },
    );
  };

  const loadGraph = async (data: DocumentData) => {
    graphLoaded = true;
    let text: string | null = data.graph_json ?? null;
    if (text == null && data.graph_ref) text = await readChunks(db, ["runs", runId], data.graph_ref);
    const graph = text ? JSON.parse(text) : { nodes: [] };
    specs = new Map((graph.nodes ?? []).map((n: Record<string, unknown>) => [String(n.id), n]));
    view = new GraphView(graphNodes(graph), select);
    // Small graphs shrink to fit the box; large ones keep their size and scroll.
    view.element.classList.toggle("fit", specs.size <= 60);
    graphBox.replaceChildren(view.element);
    const onCounts = (id: string, group: Group, counts: Counts) =>
      view?.setCounts(id, shortCounts(counts), describeCounts(group.kind, counts), counts.byStatus);
    groups = new Groups(db, runId, specs, onCounts, select);
    watchWindow(0);
  };

  const select = (id: string) => {
    selected = id;
    view?.select(id);
    groups?.select(id);
    stopSelected?.();
    stopSelected = null;
    if (!specs.has(id)) nodes.delete(id); // an instance: never in the window, read afresh
    if (!nodes.has(id)) {
      // Outside the watched window: watch this one document while it is selected.
      stopSelected = onSnapshot(Q.nodeDoc(F, db, runId, id), (snap) => {
        if (snap.exists()) {
          nodes.set(id, snap.data());
          drawPanel();
        }
      });
    }
    stopEvents?.();
    events = [];
    stopEvents = onSnapshot(
      Q.nodeEventsQuery(F, db, runId, id),
      (snap) => {
        events = snap.docs.map((d) => d.data()).sort((a, b) => (a.at ?? 0) - (b.at ?? 0));
        drawPanel();
      },
      (error) => {
        message.textContent = `Cannot read the node's timeline (${error.code}): ${error.message}`;
      },
    );
    drawPanel();
    panel.focus({ preventScroll: true });
  };

  const drawPanel = () => {
    if (!selected) return;
    const node = nodes.get(selected);
    const spec = specs.get(selected);
    const title = el("h2", { text: selected });
    if (!node) {
      panel.replaceChildren(title, el("p", { class: "muted", text: "Loading…" }));
      return;
    }
    const usage = node.usage ?? {};
    const attempts = Number(node.attempt ?? 1);
    const input = spec
      ? JSON.stringify(
          Object.fromEntries(
            Object.entries(spec).filter(([k]) => ["tool", "args", "prompt", "system", "model", "tools", "map", "loop"].includes(k)),
          ),
          null,
          2,
        )
      : "–";
    const output = el("div", { id: "node-output" });
    if (node.output_ref) {
      const ref = node.output_ref as { chunks: number; prefix: string; bytes: number };
      const load = el("button", { type: "button", text: `Load output (${ref.bytes.toLocaleString()} bytes)` });
      load.addEventListener("click", async () => {
        load.disabled = true;
        const text = await readChunks(db, ["runs", runId, "nodes", Q.nodeDocId(selected!)], ref);
        output.replaceChildren(el("pre", { text: pretty(text) }));
      });
      output.append(load);
    } else {
      output.append(el("pre", { text: pretty(node.output_json) }));
    }
    const sections: HTMLElement[] = [];
    const context: NodeContext = { session, apiUrl, runId, run: run ?? {}, spec };
    const group = groups?.section(selected, node);
    if (group) sections.push(group);
    sections.push(trace.section(selected));
    for (const section of nodeSections) {
      const part = section(node, context);
      if (part) sections.push(part);
    }
    panel.replaceChildren(
      title,
      el(
        "dl",
        { class: "facts" },
        field("Status", el("span", { class: `badge ${node.status}`, text: node.status }), "node-status"),
        field("Attempts", `${attempts} (${attempts - 1} retries, ${node.executions ?? 0} executions)`),
        field("Model", node.model ?? "–"),
        field("Tokens", `${usage.input_tokens ?? 0} in / ${usage.output_tokens ?? 0} out`),
        field("Cost", usd(usage.cost_usd)),
        field("Started", when(node.started_at)),
        field("Finished", when(node.finished_at)),
        field("Duration", node.duration_ms != null ? `${node.duration_ms} ms` : "–"),
      ),
      node.partial != null && node.status === "running"
        ? el("div", {}, el("h3", { text: "Streaming" }), el("pre", { id: "node-partial", class: "partial", text: node.partial }))
        : "",
      node.error
        ? el("div", {}, el("h3", { text: "Error" }), el("pre", { id: "node-error", class: "error", text: `${node.error.type ?? "error"}: ${node.error.message ?? ""}` }))
        : "",
      el("h3", { text: "Input" }),
      el("pre", { id: "node-input", text: input }),
      el("h3", { text: "Output" }),
      output,
      ...sections,
      el("h3", { text: "Timeline" }),
      el(
        "ol",
        { class: "timeline", id: "node-timeline" },
        // A node made ready, started or succeeded is kept on the node (`quiet`), not as
        // an event document (backends/gcp/firestore_docs.py): merge the two by time.
        ...[...events, ...Object.values((node.quiet ?? {}) as Record<string, DocumentData>)]
          .sort((a, b) => (a.at ?? 0) - (b.at ?? 0))
          .map((e) =>
          el("li", { text: `${when(e.at)} ${e.kind}${e.status ? ` → ${e.status}` : ""}${e.attempt ? ` (attempt ${e.attempt})` : ""}${e.message ? `: ${e.message}` : ""}` }),
        ),
      ),
    );
  };

  listeners.add(
    onSnapshot(
      Q.runDoc(F, db, runId),
      (snap) => {
        if (!snap.exists()) {
          message.textContent = "No such run.";
          return;
        }
        run = snap.data();
        if (needsCounting(run)) counter.refresh();
        drawHeader();
        drawWindowBar();
        if (!graphLoaded) void loadGraph(run);
      },
      (error) => {
        message.textContent = `Cannot read this run (${error.code}): ${error.message}`;
      },
    ),
  );
  panel.tabIndex = -1;
}
