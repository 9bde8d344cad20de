/**
 * A run's node counts and usage, as every view of the console shows them.
 *
 * No node transition writes the run document (issue 14: it would be the hottest document
 * of a busy run). The run document keeps what existed at creation; each node's end and the
 * usage it adds are incremented in one of the run's counter shards,
 * `runs/{id}/shards/{k}` (backends/gcp/firestore_docs.py). So: final counts and usage =
 * run document + every shard; nodes not yet finished = node_count − the final ones (their
 * split by status is the api's `GET /runs/{id}`; here they show as "active").
 * Watching a run's shards costs at most 16 reads, then one per changed shard.
 */

import * as F from "firebase/firestore";
import { type DocumentData, type Firestore, onSnapshot } from "firebase/firestore";
import * as Q from "./queries.js";

export const FINAL = ["succeeded", "failed", "skipped", "cancelled"] as const;

export interface Counted {
  /** Nodes per final status (only non-zero), plus `active` for the unfinished ones. */
  counts: Record<string, number>;
  /** Token and cost totals. */
  usage: Record<string, number>;
  /** Nodes that ended (any final status). */
  done: number;
}

export function countRun(run: DocumentData, shards: DocumentData[]): Counted {
  const counts: Record<string, number> = {};
  const usage: Record<string, number> = {};
  for (const part of [run, ...shards]) {
    for (const status of FINAL) {
      const n = Number((part.counts ?? {})[status] ?? 0);
      if (n) counts[status] = (counts[status] ?? 0) + n;
    }
    for (const [key, value] of Object.entries((part.usage ?? {}) as Record<string, number>)) {
      usage[key] = (usage[key] ?? 0) + Number(value);
    }
  }
  const done = FINAL.reduce((sum, s) => sum + (counts[s] ?? 0), 0);
  for (const s of FINAL) if (!counts[s]) delete counts[s];
  const active = Number(run.node_count ?? 0) - done;
  if (active > 0) counts.active = active;
  return { counts, usage, done };
}

/** Calls `onChange` with the run's shard documents now and after each change; the stop. */
export function watchShards(
  db: Firestore,
  runId: string,
  onChange: (shards: DocumentData[]) => void,
): () => void {
  return onSnapshot(
    Q.shardsQuery(F, db, runId),
    (snap) => onChange(snap.docs.map((d) => d.data())),
    () => onChange([]),
  );
}
