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

/**
 * The run's nodes, or those in `status`: for the aggregation queries that count a running
 * run and sum its usage (web/src/counts.ts); never listened to.
 */
export function runNodesQuery(F, db, runId, status) {
  const nodes = F.collection(db, 'runs', runId, 'nodes');
  return status == null ? nodes : F.query(nodes, F.where('status', '==', status));
}

/**
 * At most NODE_WINDOW nodes in creation order, from the `first`-th (seq starts at 0).
 * With `end` (the graph's node count), only the graph's own nodes: instances a growing
 * run adds have seq values far above it and are read per group (below).
 */
export function nodesWindowQuery(F, db, runId, first, end) {
  const parts = [F.orderBy('seq'), F.startAt(first)];
  if (end != null) parts.push(F.endBefore(end));
  parts.push(F.limit(NODE_WINDOW));
  return F.query(F.collection(db, 'runs', runId, 'nodes'), ...parts);
}

/**
 * A node's document id: its id with `/` as `|` (a subgraph's nodes, `research/summarize`,
 * would otherwise be a path; backends/gcp/firestore_io.doc_id). Its `node_id` field keeps `/`.
 */
export function nodeDocId(nodeId) {
  return nodeId.replaceAll('/', '|');
}

export function nodeDoc(F, db, runId, nodeId) {
  return F.doc(db, 'runs', runId, 'nodes', nodeDocId(nodeId));
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

// ---- runs that grow: the instances of a map, loop or subgraph node (core/grow.py) ----------

/** Instances listed per page of an expanded group (one `in` query takes at most 30). */
export const GROUP_PAGE = 30;
/** Active (not yet finished) instances of a group watched at once. */
export const GROUP_ACTIVE = 50;
/** Groups of a run view that show live counts at once (the selected one always does). */
export const GROUPS_COUNTED = 5;
/** Statuses of an instance that is neither waiting nor finished. */
export const ACTIVE_STATUSES = ['ready', 'running', 'retrying', 'expanded', 'waiting_approval'];
/** Finished statuses, each counted by an aggregation query. */
export const ENDED_STATUSES = ['succeeded', 'failed', 'cancelled', 'skipped'];

/**
 * The node ids under a controller: `C[` (its map's items), `C@` (its loop's iterations) or
 * `C/` (its subgraph's nodes), as the range [C + mark, C + the next character). Ids are
 * plain ASCII (model.NODE_ID_PATTERN), so the range holds exactly the ids with that prefix.
 */
function instances(F, db, runId, controllerId, mark, ...more) {
  const low = controllerId + mark;
  const high = controllerId + String.fromCharCode(mark.charCodeAt(0) + 1);
  return F.query(
    F.collection(db, 'runs', runId, 'nodes'),
    F.where('node_id', '>=', low),
    F.where('node_id', '<', high),
    ...more,
  );
}

/**
 * For an aggregation count (getCountFromServer): the group's instances, or those in
 * `status`. Billed one read per 1,000 index entries counted (at least one per query).
 * A map's items and a loop's iterations are exactly the ids in the range whose `children`
 * hold the controller (core/grow.instance_node): so a map of subgraphs counts its items,
 * not their bodies' nodes. Needs the (children, [status,] node_id) indexes of
 * firestore.indexes.json.
 */
export function groupCountQuery(F, db, runId, controllerId, mark, status) {
  const parts = [];
  if (mark !== '/') parts.push(F.where('children', 'array-contains', controllerId));
  if (status != null) parts.push(F.where('status', '==', status));
  return instances(F, db, runId, controllerId, mark, ...parts);
}

/** The group's active instances (at most GROUP_ACTIVE), watched: their changes refresh the counts. */
export function groupActiveQuery(F, db, runId, controllerId, mark) {
  return instances(
    F, db, runId, controllerId, mark,
    F.where('status', 'in', ACTIVE_STATUSES),
    F.limit(GROUP_ACTIVE),
  );
}

/** Instances by id (a page of a map's items or a loop's iterations, at most GROUP_PAGE). */
export function instancesByIdQuery(F, db, runId, ids) {
  return F.query(
    F.collection(db, 'runs', runId, 'nodes'),
    F.where('node_id', 'in', ids.slice(0, GROUP_PAGE)),
  );
}

/** A page of a subgraph's nodes (ids not known in advance), by id, after `afterId`. */
export function instancesPageQuery(F, db, runId, controllerId, mark, afterId) {
  const parts = [F.orderBy('node_id')];
  if (afterId) parts.push(F.startAfter(afterId));
  parts.push(F.limit(GROUP_PAGE));
  return instances(F, db, runId, controllerId, mark, ...parts);
}

// ---- the tool trace of an acting agent (backends/gcp/firestore_steps.py) -----------------

/** Steps of the selected node watched at once: its latest ones. */
export const NODE_STEPS = 50;

/** The node's latest NODE_STEPS steps (model turns and tool calls), newest first. */
export function nodeStepsQuery(F, db, runId, nodeId) {
  return F.query(
    F.collection(db, 'runs', runId, 'nodes', nodeDocId(nodeId), 'steps'),
    F.orderBy('index', 'desc'),
    F.limit(NODE_STEPS),
  );
}
