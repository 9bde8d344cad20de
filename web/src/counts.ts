/**
 * A run's node counts and usage, as every view of the console shows them.
 *
 * No node transition writes the run document or any counter (issue 14: it would be the
 * hottest document of a busy run); each node document holds its own status and usage.
 * So a running run is counted with aggregation queries over its nodes (`countNodes`: 4
 * `count()`s of the final statuses and one query of the usage `sum()`s, each billed one
 * read per 1,000 nodes), re-run on a change at most once every REFRESH_MS (`RunCounts`);
 * the unfinished ones are the run document's node_count minus the ended ones.
 * When the run ends with every node final, its end stores the counts and usage on the run
 * document (backends/gcp/firestore_docs.py `final_fields`): a finished run reads as that
 * one document. Unfinished nodes show as "active" (their split by status is the api's
 * `GET /runs/{id}`).
 */

import * as F from "firebase/firestore";
import { type DocumentData, type Firestore, getAggregateFromServer, getCountFromServer, sum } from "firebase/firestore";
import * as Q from "./queries.js";
import { Throttled } from "./util";

export const FINAL = ["succeeded", "failed", "skipped", "cancelled"] as const;
const REFRESH_MS = 2000;
const ENDED = new Set(["succeeded", "failed", "cancelled"]);

/** The counts its end stored on the run document, if any (null while it runs). */
function stored(run: DocumentData): Record<string, unknown> | null {
  return run.counts != null && ENDED.has(run.status) ? run.counts : null;
}

export interface Counted {
  /** Nodes per final status (only non-zero), plus `active` for the unfinished ones. */
  counts: Record<string, number>;
  /** Token and cost totals. */
  usage: Record<string, number>;
  /** Nodes that ended (any final status). */
  done: number;
}

function counted(final: Record<string, unknown>, usage: Record<string, number>, total: number): Counted {
  const counts: Record<string, number> = {};
  for (const status of FINAL) {
    const n = Number(final[status] ?? 0);
    if (n) counts[status] = n;
  }
  const done = FINAL.reduce((all, s) => all + (counts[s] ?? 0), 0);
  if (total > done) counts.active = total - done;
  return { counts, usage, done };
}

/** What the nodes add up to (`countNodes`): ended nodes per final status, and usage. */
export interface Derived {
  final: Record<string, number>;
  usage: Record<string, number>;
}

/** The run's counts: those its end stored on it, else `derived` from its nodes (none
 * ended yet, before the first count). */
export function countRun(run: DocumentData, derived: Derived | null): Counted {
  const total = Number(run.node_count ?? 0);
  const final = stored(run);
  if (final) return counted(final, run.usage ?? {}, total);
  return counted(derived?.final ?? {}, derived?.usage ?? {}, total);
}

/** Whether `run` needs counting from its nodes (its end stored no counts yet). */
export function needsCounting(run: DocumentData): boolean {
  return stored(run) == null;
}

/** The run's ended nodes and usage from its node documents: 5 aggregation queries. (The
 * usage sums share one query: it covers the nodes holding every summed field, which every
 * node document does.) */
export async function countNodes(db: Firestore, runId: string): Promise<Derived> {
  const [ends, all] = await Promise.all([
    Promise.all(FINAL.map((s) => getCountFromServer(Q.runNodesQuery(F, db, runId, s)))),
    getAggregateFromServer(Q.runNodesQuery(F, db, runId, null), {
      cost_usd: sum("usage.cost_usd"),
      input_tokens: sum("usage.input_tokens"),
      output_tokens: sum("usage.output_tokens"),
    }),
  ]);
  const final = Object.fromEntries(FINAL.map((s, i) => [s, ends[i].data().count]));
  const d = all.data();
  const usage = {
    cost_usd: Number(d.cost_usd ?? 0),
    input_tokens: Number(d.input_tokens ?? 0),
    output_tokens: Number(d.output_tokens ?? 0),
  };
  return { final, usage };
}

/**
 * A running run's counts, counted again on `refresh()` (a change seen, a timer) at most
 * once every REFRESH_MS: calls in between are coalesced into one later count.
 */
export class RunCounts {
  current: Derived | null = null;
  private stopped = false;
  private readonly counting = new Throttled(REFRESH_MS, () =>
    countNodes(this.db, this.runId).then((found) => {
      if (this.stopped) return;
      this.current = found;
      this.onChange(found);
    }),
  );

  constructor(
    private readonly db: Firestore,
    private readonly runId: string,
    private readonly onChange: (derived: Derived) => void,
  ) {}

  refresh(): void {
    this.counting.request();
  }

  stop(): void {
    this.stopped = true;
    this.counting.stop();
  }
}
