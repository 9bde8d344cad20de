/**
 * Runs that grow (shared/agentgraph/core/grow.py): a map, loop or subgraph node is a
 * *controller* whose instances (`review[17]`, `draft@3`, `research/summarize`) are node
 * documents of their own. The graph keeps one box per controller, with live counts per
 * status; its panel lists the instances a page at a time, and an instance opens like a node.
 *
 * What it costs, whatever the number of instances (a map may have 10,000 items):
 * - counts of a group: one listener on its *active* instances (ready, running, retrying,
 *   expanded, waiting approval; at most GROUP_ACTIVE = 50 documents, then one read per
 *   change; past 50 the active counts show as "50+"), and 5 aggregation counts (all,
 *   succeeded, failed, cancelled, skipped) re-run when that listener or the controller's
 *   document changes, at most once a second (REFRESH_MS). A count is billed one read per
 *   1,000 index entries, at least one: 5 reads for a group of up to 1,000 instances, 50
 *   for 10,000. Waiting = all − active − finished. So a group costs at most 100 reads
 *   when it opens (55 up to 1,000 instances), then at most 5–50 a second while it changes.
 * - at most GROUPS_COUNTED (5) groups of the graph are counted at once, plus the selected one;
 * - the list of a group's instances is read only while shown ("Show items"): one
 *   listener on a page of GROUP_PAGE (30) documents (an `in` query on the page's ids for a
 *   map's items and a loop's iterations; a range on the id for a subgraph's nodes).
 * Nothing polls: counts are re-read only after a watched document changed.
 */

import * as F from "firebase/firestore";
import { type DocumentData, type Firestore, getCountFromServer, onSnapshot } from "firebase/firestore";
import * as Q from "./queries.js";
import { Throttled, el } from "./util";

export type GroupKind = "map" | "loop" | "subgraph";
export interface Group {
  kind: GroupKind;
  /** What follows the controller's id in its instances' ids. */
  mark: "[" | "@" | "/";
}

const REFRESH_MS = 1000;
const ITEM_WORD: Record<GroupKind, [string, string]> = {
  map: ["item", "items"],
  loop: ["iteration", "iterations"],
  subgraph: ["node", "nodes"],
};

type Spec = Record<string, unknown>;

/** The group a node spec controls, if any (the same keys core/model.py reads). */
export function groupOfSpec(spec: Spec | undefined, unit = false): Group | null {
  if (!spec) return null;
  if (!unit && spec.map != null) return { kind: "map", mark: "[" };
  if (!unit && spec.loop != null) return { kind: "loop", mark: "@" };
  if (spec.nodes != null || spec.graph != null || spec.agent != null) return { kind: "subgraph", mark: "/" };
  return null;
}

/**
 * The group a node id controls, walking an instance id's path through inline subgraphs
 * (`research[2]/summarize` is node `summarize` of the body of `research`). An item or
 * iteration of a subgraph (`research[2]`) controls that subgraph's nodes.
 */
export function groupOf(specs: Map<string, Spec>, nodeId: string): Group | null {
  let scope = specs;
  const segments = nodeId.split("/");
  for (const [position, segment] of segments.entries()) {
    const name = segment.replace(/[[@].*$/, "");
    const spec = scope.get(name);
    if (!spec) return null;
    if (position === segments.length - 1) return groupOfSpec(spec, segment !== name);
    const body = (spec.nodes as Spec[] | undefined) ?? [];
    scope = new Map(body.map((n) => [String(n.id), n]));
  }
  return null;
}

export interface Counts {
  total: number;
  byStatus: Record<string, number>;
  /** The active listener hit its limit: active counts are at least these. */
  capped: boolean;
}

function parseMeta(node: DocumentData | undefined): Record<string, unknown> {
  try {
    return JSON.parse(String(node?.meta_json ?? "null")) ?? {};
  } catch {
    return {};
  }
}

/** "30 items: 12 succeeded, 3 running, 15 waiting" (statuses in a stable order). */
export function describeCounts(kind: GroupKind, counts: Counts): string {
  const order = ["waiting", ...Q.ACTIVE_STATUSES, ...Q.ENDED_STATUSES];
  const parts = order
    .filter((s) => (counts.byStatus[s] ?? 0) > 0)
    .map((s) => `${counts.byStatus[s]}${counts.capped && Q.ACTIVE_STATUSES.includes(s) ? "+" : ""} ${s}`);
  const [one, many] = ITEM_WORD[kind];
  return `${counts.total} ${counts.total === 1 ? one : many}${parts.length ? `: ${parts.join(", ")}` : ""}`;
}

/** Live counts per status of one group's instances (see the module's costs). */
class Counter {
  counts: Counts | null = null;
  private active = new Map<string, string>();
  private capped = false;
  private ended: Record<string, number> = {};
  private total = 0;
  private stopActive: () => void;
  private stopped = false;
  private readonly counting = new Throttled(REFRESH_MS, () => this.count());

  constructor(
    private readonly db: Firestore,
    private readonly runId: string,
    private readonly id: string,
    private readonly group: Group,
    private readonly onCounts: () => void,
  ) {
    this.stopActive = onSnapshot(
      Q.groupActiveQuery(F, db, runId, id, group.mark),
      (snap) => {
        // A map's or loop's units only (not the nodes of a mapped subgraph's bodies).
        const units = snap.docs.filter((d) => group.mark === "/" || !String(d.get("node_id")).includes("/", id.length));
        this.active = new Map(units.map((d) => [d.id, String(d.get("status"))]));
        this.capped = snap.size >= Q.GROUP_ACTIVE;
        this.refresh();
      },
      () => this.refresh(), // without the active ones, the counts still show what ended
    );
  }

  /** Re-count soon: now if the last count is over REFRESH_MS old, else when it is. */
  refresh(): void {
    this.counting.request();
  }

  private count(): Promise<void> {
    const statuses: (string | null)[] = [null, ...Q.ENDED_STATUSES];
    return Promise.all(
      statuses.map((status) =>
        getCountFromServer(Q.groupCountQuery(F, this.db, this.runId, this.id, this.group.mark, status)),
      ),
    )
      .then((snaps) => {
        this.total = snaps[0].data().count;
        this.ended = Object.fromEntries(Q.ENDED_STATUSES.map((s, i) => [s, snaps[i + 1].data().count]));
      })
      .catch(() => undefined)
      .finally(() => this.publish());
  }

  private publish(): void {
    if (this.stopped) return;
    const byStatus: Record<string, number> = { ...this.ended };
    for (const status of this.active.values()) byStatus[status] = (byStatus[status] ?? 0) + 1;
    const seen = Object.values(byStatus).reduce((a, b) => a + b, 0);
    byStatus.waiting = Math.max(0, this.total - seen);
    this.counts = { total: Math.max(this.total, seen), byStatus, capped: this.capped };
    this.onCounts();
  }

  stop(): void {
    this.stopped = true;
    this.stopActive();
    this.counting.stop();
  }
}

/** The paged list of one group's instances, watched only while shown. */
class InstanceList {
  readonly element = el("div", { class: "group-items" });
  private page = 0;
  private starts: (string | undefined)[] = [undefined]; // a subgraph's page starts
  private docs: DocumentData[] = [];
  private stopPage: (() => void) | null = null;

  constructor(
    private readonly db: Firestore,
    private readonly runId: string,
    private readonly id: string,
    private readonly group: Group,
    private readonly size: () => number | null,
    private readonly open: (id: string) => void,
  ) {
    this.watch(0);
  }

  private ids(): string[] | null {
    const { kind } = this.group;
    if (kind === "subgraph") return null;
    const from = this.page * Q.GROUP_PAGE;
    const size = this.size();
    const count = size == null ? Q.GROUP_PAGE : Math.max(0, Math.min(Q.GROUP_PAGE, size - from));
    return Array.from({ length: count }, (_, i) =>
      kind === "map" ? `${this.id}[${from + i}]` : `${this.id}@${from + i + 1}`,
    );
  }

  private watch(page: number): void {
    this.stopPage?.();
    this.stopPage = null;
    this.page = page;
    this.docs = [];
    const ids = this.ids();
    if (ids && ids.length === 0) {
      this.draw();
      return;
    }
    const query = ids
      ? Q.instancesByIdQuery(F, this.db, this.runId, ids)
      : Q.instancesPageQuery(F, this.db, this.runId, this.id, this.group.mark, this.starts[page]);
    this.stopPage = onSnapshot(
      query,
      (snap) => {
        const byId = new Map(snap.docs.map((d) => [String(d.get("node_id")), d.data()]));
        this.docs = ids ? ids.filter((i) => byId.has(i)).map((i) => byId.get(i)!) : snap.docs.map((d) => d.data());
        if (!ids && snap.size === Q.GROUP_PAGE) this.starts[page + 1] = String(snap.docs[snap.size - 1].get("node_id"));
        this.draw();
      },
      (error) => {
        this.element.replaceChildren(el("p", { class: "error", text: `Cannot list (${error.code}): ${error.message}` }));
      },
    );
  }

  private draw(): void {
    const [, many] = ITEM_WORD[this.group.kind];
    const list = el("ol", { class: "instances", id: "group-items" });
    for (const doc of this.docs) {
      const nodeId = String(doc.node_id);
      const label = this.group.kind === "loop" ? `iteration ${nodeId.slice(this.id.length + 1)}` : nodeId;
      const link = el("button", { type: "button", class: "link", "data-instance-id": nodeId, text: label });
      link.addEventListener("click", () => this.open(nodeId));
      const status = String(doc.status);
      list.append(el("li", { "data-status": status }, link, " ", el("span", { class: `badge ${status}`, text: status })));
    }
    const size = this.size();
    const from = this.page * Q.GROUP_PAGE;
    const prev = el("button", { type: "button", id: "group-prev", text: `Previous ${many}` });
    const next = el("button", { type: "button", id: "group-next", text: `Next ${many}` });
    prev.disabled = this.page === 0;
    next.disabled = size != null ? from + Q.GROUP_PAGE >= size : this.docs.length < Q.GROUP_PAGE;
    prev.addEventListener("click", () => this.watch(this.page - 1));
    next.addEventListener("click", () => this.watch(this.page + 1));
    const shown = this.docs.length ? `${from + 1}–${from + this.docs.length}` : "none yet";
    this.element.replaceChildren(
      list,
      el("div", { class: "pager" }, el("span", { class: "muted", text: `${many} ${shown}${size != null ? ` of ${size}` : ""}` }), prev, next),
    );
  }

  stop(): void {
    this.stopPage?.();
  }
}

/** The groups of one run view: counts on the graph's boxes and the selected group's panel. */
export class Groups {
  private counters = new Map<string, Counter>();
  private fixed = new Set<string>();
  private selected: string | null = null;
  private list: InstanceList | null = null;
  private panel: HTMLElement | null = null;
  private controllers = new Map<string, DocumentData>();

  constructor(
    private readonly db: Firestore,
    private readonly runId: string,
    private readonly specs: Map<string, Spec>,
    private readonly onCounts: (id: string, group: Group, counts: Counts) => void,
    private readonly open: (id: string) => void,
  ) {
    for (const id of specs.keys()) {
      const group = groupOf(specs, id);
      if (group && this.fixed.size < Q.GROUPS_COUNTED) {
        this.fixed.add(id);
        this.count(id, group);
      }
    }
  }

  private count(id: string, group: Group): void {
    if (this.counters.has(id)) return;
    const counter: Counter = new Counter(this.db, this.runId, id, group, () => {
      if (counter.counts) this.onCounts(id, group, counter.counts);
      if (id === this.selected) this.drawPanel();
    });
    this.counters.set(id, counter);
  }

  /** A watched controller document changed (an instance arrived at it, or it settled). */
  nodeChanged(id: string, data: DocumentData): void {
    this.controllers.set(id, data);
    this.counters.get(id)?.refresh();
  }

  select(id: string | null): void {
    if (id === this.selected) return;
    const previous = this.selected;
    if (previous && !this.fixed.has(previous)) {
      this.counters.get(previous)?.stop();
      this.counters.delete(previous);
    }
    this.list?.stop();
    this.list = null;
    this.panel = null;
    this.selected = id;
    const group = id ? groupOf(this.specs, id) : null;
    if (id && group) this.count(id, group);
  }

  /** The node panel's section for the selected node, when it controls a group. */
  section(id: string, node: DocumentData): HTMLElement | null {
    if (id !== this.selected) this.select(id);
    const group = groupOf(this.specs, id);
    if (!group) return null;
    this.controllers.set(id, node);
    if (!this.panel) {
      this.panel = el("div", { class: "group", id: "group" });
      if (group.kind === "loop") {
        // Iterations are few and read in order: shown stacked at once, a page at a time.
        this.list = new InstanceList(this.db, this.runId, id, group, () => null, this.open);
      }
      this.drawPanel();
    }
    return this.panel;
  }

  private size(id: string, group: Group): number | null {
    if (group.kind !== "map") return null;
    const expect = parseMeta(this.controllers.get(id)).expect;
    return typeof expect === "number" ? expect : null;
  }

  private drawPanel(): void {
    const id = this.selected;
    if (!id || !this.panel) return;
    const group = groupOf(this.specs, id);
    if (!group) return;
    const counts = this.counters.get(id)?.counts;
    const [, many] = ITEM_WORD[group.kind];
    const toggle = el("button", { type: "button", id: "group-toggle" });
    toggle.setAttribute("aria-expanded", String(this.list != null));
    toggle.textContent = this.list ? `Hide ${many}` : `Show ${many}`;
    toggle.addEventListener("click", () => {
      if (this.list) {
        this.list.stop();
        this.list = null;
      } else {
        this.list = new InstanceList(this.db, this.runId, id, group, () => this.size(id, group), this.open);
      }
      this.drawPanel();
    });
    const title = group.kind === "map" ? "Items" : group.kind === "loop" ? "Iterations" : "Subgraph";
    this.panel.replaceChildren(
      el("h3", { text: title }),
      el("p", { id: "group-counts", text: counts ? describeCounts(group.kind, counts) : "Counting…" }),
      toggle,
      this.list?.element ?? "",
    );
  }

  stop(): void {
    for (const counter of this.counters.values()) counter.stop();
    this.counters.clear();
    this.list?.stop();
  }
}
