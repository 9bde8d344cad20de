/**
 * "My runs": the signed-in user's runs, newest first, live, a page at a time.
 *
 * One listener per page: `runs where owner == uid order by created_at desc limit PAGE`
 * (the only list query the rules admit: it filters on the caller's uid; its index is in
 * firestore.indexes.json). "Older" moves the listener to the next page (startAfter the
 * page's last document), so watching the list reads at most PAGE documents at once, then
 * one read per change on the page. A finished run's counts and cost are on its document;
 * a running one's are counted from its nodes (web/src/counts.ts: 5 aggregation queries)
 * when it appears and then every RECOUNT_MS while it is on the page and running.
 */

import * as F from "firebase/firestore";
import { type DocumentData, type QueryDocumentSnapshot, onSnapshot } from "firebase/firestore";
import { RUNS_PAGE, runsQuery as query } from "./queries.js";
import { RunCounts, countRun, needsCounting } from "./counts";
import type { Session } from "./session";
import { Listeners, el, usd, when } from "./util";

export const PAGE = RUNS_PAGE;
const RECOUNT_MS = 10_000;
const ENDED = new Set(["succeeded", "failed", "cancelled"]);

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
  // Each listed run that has no stored counts, counted from its nodes while on the page.
  const counters = new Map<string, RunCounts>();
  const row = (doc: QueryDocumentSnapshot<DocumentData>) => {
    const run = doc.data();
    const { done, usage } = countRun(run, counters.get(doc.id)?.current ?? null);
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
  const count = () => {
    const wanted = new Set(page.filter((d) => needsCounting(d.data())).map((d) => d.id));
    unwatch(wanted);
    for (const doc of page) {
      if (!wanted.has(doc.id)) continue;
      let counter = counters.get(doc.id);
      if (!counter) {
        counter = new RunCounts(session.db, doc.id, () => draw());
        counters.set(doc.id, counter);
        counter.refresh(); // once when it appears (an ended run without stored counts too)
      } else if (!ENDED.has(doc.data().status)) {
        counter.refresh();
      }
    }
  };
  const unwatch = (keep: Set<string>) => {
    for (const [runId, counter] of counters) {
      if (!keep.has(runId)) {
        counter.stop();
        counters.delete(runId);
      }
    }
  };
  const recount = setInterval(count, RECOUNT_MS);
  const show = () => {
    stop?.();
    const after = pages[pages.length - 1];
    stop = onSnapshot(
      runsQuery(session, after),
      (snap) => {
        page = snap.docs;
        count();
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
    clearInterval(recount);
    unwatch(new Set());
  });
  show();
}
