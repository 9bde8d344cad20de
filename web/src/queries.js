// Every Firestore read the console makes, in one place, as plain ESM JavaScript so that
// tests/rules/rules.test.mjs runs these very queries against firestore.rules (a query the
// rules would refuse in production fails those tests). `F` is the caller's
// `firebase/firestore` module (the console's v12, the rules tests' v11): same API.

/** Runs per page of "My runs". */
export const RUNS_PAGE = 20;
/** Node documents watched at once in a run view (see run.ts for what watching costs). */
export const NODE_WINDOW = 200;
/** Events of the selected node watched at once. */
export const NODE_EVENTS = 100;

/** The caller's runs, newest first; `after`: the last document of the previous page. */
export function runsQuery(F, db, uid, after) {
  const parts = [F.where('owner', '==', uid), F.orderBy('created_at', 'desc')];
  if (after) parts.push(F.startAfter(after));
  parts.push(F.limit(RUNS_PAGE));
  return F.query(F.collection(db, 'runs'), ...parts);
}

export function runDoc(F, db, runId) {
  return F.doc(db, 'runs', runId);
}

/** The run's counter shards: final node counts and usage (web/src/counts.ts). */
export function shardsQuery(F, db, runId) {
  return F.collection(db, 'runs', runId, 'shards');
}

/** At most NODE_WINDOW nodes in creation order, from the `first`-th (seq starts at 0). */
export function nodesWindowQuery(F, db, runId, first) {
  return F.query(
    F.collection(db, 'runs', runId, 'nodes'),
    F.orderBy('seq'),
    F.startAt(first),
    F.limit(NODE_WINDOW),
  );
}

export function nodeDoc(F, db, runId, nodeId) {
  return F.doc(db, 'runs', runId, 'nodes', nodeId);
}

/** A node's timeline (an equality filter only: no composite index needed). */
export function nodeEventsQuery(F, db, runId, nodeId) {
  return F.query(
    F.collection(db, 'runs', runId, 'events'),
    F.where('node_id', '==', nodeId),
    F.limit(NODE_EVENTS),
  );
}

/** The chunk documents of a value stored in chunks (backends/gcp/chunks.py). */
export function chunkDocs(F, db, parent, marker) {
  return Array.from({ length: marker.chunks }, (_, i) =>
    F.doc(db, [...parent, 'chunks', `${marker.prefix}-${String(i).padStart(4, '0')}`].join('/')),
  );
}
