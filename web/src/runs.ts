/**
 * "My runs": the signed-in user's runs, newest first, live, a page at a time.
 *
 * One listener per page: `runs where owner == uid order by created_at desc limit PAGE`
 * (the only list query the rules admit: it filters on the caller's uid; its index is in
 * firestore.indexes.json). "Older" moves the listener to the next page (startAfter the
 * page's last document), so watching the list reads at most PAGE documents at once, then
 * one read per change on the page.
 */

import * as F from "firebase/firestore";
import { type DocumentData, type QueryDocumentSnapshot, onSnapshot } from "firebase/firestore";
import { RUNS_PAGE, runsQuery as query } from "./queries.js";
import { countRun, watchShards } from "./counts";
import type { Session } from "./session";
import { Listeners, el, usd, when } from "./util";

export const PAGE = RUNS_PAGE;

export function runsQuery(session: Session, after?: QueryDocumentSnapshot<DocumentData>) {
  return query(F, session.db, session.uid, after);
}

export function renderRuns(session: Session, root: HTMLElement, listeners: Listeners): void {
  const pages: QueryDocumentSnapshot<DocumentData>[] = []; // last doc of each earlier page
  const body = el("tbody");
  const status = el("p", { class: "muted", role: "status" });
  const newer = el("button", { type: "button", text: "Newer" });
  const older = el("button", { type: "button", text: "Older" });
  root.replaceChildren(
    el("h1", { text: "My runs" }),
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "runs", "aria-label": "My runs, newest first" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ...["Run", "Graph", "Status", "Nodes", "Cost", "Created"].map((h) =>
              el("th", { scope: "col", text: h }),
            ),
          ),
        ),
        body,
      ),
    ),
    el("div", { class: "pager" }, newer, older),
    status,
  );
  let stop: (() => void) | null = null;
  let last: QueryDocumentSnapshot<DocumentData> | undefined;
  let page: QueryDocumentSnapshot<DocumentData>[] = [];
  // Each listed run's counter shards (web/src/counts.ts), watched while it is on the page.
  const shards = new Map<string, { docs: DocumentData[]; stop: () => void }>();
  const row = (doc: QueryDocumentSnapshot<DocumentData>) => {
    const run = doc.data();
    const { done, usage } = countRun(run, shards.get(doc.id)?.docs ?? []);
    watch(doc.id);
    return el(
      "tr",
      { "data-run-id": doc.id, "data-status": run.status },
      el("td", {}, el("a", { href: `#/runs/${doc.id}`, text: doc.id })),
      el("td", { text: run.graph_name }),
      el("td", {}, el("span", { class: `badge ${run.status}`, text: run.status })),
      el("td", { text: `${done}/${run.node_count}` }),
      el("td", { text: usd(usage.cost_usd) }),
      el("td", { text: when(run.created_at) }),
    );
  };
  const draw = () => {
    body.replaceChildren(...page.map(row));
  };
  const watch = (runId: string) => {
    if (shards.has(runId)) return;
    const entry = { docs: [] as DocumentData[], stop: () => {} };
    shards.set(runId, entry);
    let first = true;
    entry.stop = watchShards(session.db, runId, (docs) => {
      entry.docs = docs;
      if (!first || docs.length) draw();
      first = false;
    });
  };
  const unwatch = (keep: Set<string>) => {
    for (const [runId, entry] of shards) {
      if (!keep.has(runId)) {
        entry.stop();
        shards.delete(runId);
      }
    }
  };
  const show = () => {
    stop?.();
    const after = pages[pages.length - 1];
    stop = onSnapshot(
      runsQuery(session, after),
      (snap) => {
        page = snap.docs;
        unwatch(new Set(page.map((d) => d.id)));
        draw();
        last = snap.docs[snap.docs.length - 1];
        older.disabled = snap.docs.length < PAGE;
        newer.disabled = pages.length === 0;
        status.textContent = snap.empty ? "No runs yet." : "";
      },
      (error) => {
        status.textContent = `Cannot list runs (${error.code}): ${error.message}`;
      },
    );
  };
  older.addEventListener("click", () => {
    if (last) pages.push(last);
    show();
  });
  newer.addEventListener("click", () => {
    pages.pop();
    show();
  });
  listeners.add(() => {
    stop?.();
    unwatch(new Set());
  });
  show();
}
