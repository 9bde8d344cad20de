"""How the store's records map to SQLite rows (the schema and its codec), and how a
decided `transitions.Change` is persisted: the SQL side of the state machine, without
any of its rules.

JSON values (graph, input, outputs, node outputs, errors, usage) are stored as JSON text.
Node counts per status and usage totals live as JSON on the run row (the layout mirrors
Firestore's run document); each transition moves them with one `json_set` UPDATE in SQL,
never a read-modify-write through Python.

The graph, which never changes after the run is created and may be hundreds of KB, has a
row of its own in `run_graphs`: SQLite rewrites a whole row on UPDATE and logs every
page of it in the WAL at COMMIT, so a graph kept on the run row made each transition cost
as much as the graph is large, and a run quadratic in its nodes (2.5 ms per COMMIT at
2,000 nodes against 0.4 ms at 200). `runs.graph` stays in the schema for files written
before: it is '' for new runs, and read when a run has no `run_graphs` row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agentgraph.backends.local.sqlite_batch import (
    INSERT_EVENT,
    count_terms,
    open_batch,
    usage_terms,
)
from agentgraph.core import transitions
from agentgraph.core.records import Event, NodeError, NodeRecord, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.core.transitions import Change, RunChange

# What each transition writes is kept small: `nodes` has no index on `status` (every
# transition would move an entry in it; the sweeper finds live nodes through the running
# runs' `nodes_order`), a child's arrivals are counted from its `arrivals` rows (one
# b-tree, WITHOUT ROWID) rather than kept on its row, and `events.seq` is a plain rowid
# (events are never deleted, so max + 1 never repeats; AUTOINCREMENT would write
# `sqlite_sequence` on every insert). Files made before keep their tables (the `arrivals`
# column of their `nodes` is left as it was); the old status index is dropped when they
# are opened.
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, graph_name TEXT NOT NULL, graph TEXT NOT NULL, input TEXT,
  status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
  node_count INTEGER NOT NULL, counts TEXT NOT NULL, usage TEXT NOT NULL, outputs TEXT,
  error TEXT, owner TEXT, idempotency_key TEXT, request_hash TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_idempotency ON runs(owner, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE TABLE IF NOT EXISTS run_graphs (run_id TEXT PRIMARY KEY, graph TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  run_id TEXT NOT NULL, node_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
  attempt INTEGER NOT NULL, parents TEXT NOT NULL, children TEXT NOT NULL, pool TEXT NOT NULL,
  output TEXT, error TEXT, started_at REAL,
  finished_at REAL, duration_ms INTEGER, usage TEXT NOT NULL, lease_until REAL,
  next_attempt_at REAL, updated_at REAL, model TEXT, skip_reason TEXT, partial TEXT,
  executions INTEGER NOT NULL DEFAULT 0, meta TEXT,
  PRIMARY KEY (run_id, node_id)
);
DROP INDEX IF EXISTS nodes_status;
CREATE INDEX IF NOT EXISTS nodes_order ON nodes(run_id, seq);
CREATE TABLE IF NOT EXISTS arrivals (
  run_id TEXT NOT NULL, child_id TEXT NOT NULL, parent_id TEXT NOT NULL,
  PRIMARY KEY (run_id, child_id, parent_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, at REAL NOT NULL,
  kind TEXT NOT NULL, node_id TEXT, status TEXT, attempt INTEGER, message TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL, node_id TEXT NOT NULL, idx INTEGER NOT NULL, step TEXT NOT NULL,
  PRIMARY KEY (run_id, node_id, idx)
);
"""

NODE_COLUMNS = (
    "run_id, node_id, status, attempt, parents, children, pool, output, error, "
    "started_at, finished_at, duration_ms, usage, lease_until, next_attempt_at, updated_at, "
    "model, skip_reason, partial, executions, meta"
)
# Files written before runs could grow have no `meta` column: added when opened.
MIGRATIONS = ("ALTER TABLE nodes ADD COLUMN meta TEXT",)


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# Every read of run records: the run row with its graph (older files: on the row itself).
SELECT_RUNS = (
    "SELECT runs.*, run_graphs.graph AS graph_text FROM runs "
    "LEFT JOIN run_graphs ON run_graphs.run_id = runs.run_id"
)


# Reads of run summaries: every column but the graph and the input.
SELECT_SUMMARIES = (
    "SELECT run_id, graph_name, status, created_at, started_at, finished_at, node_count, "
    "counts, usage, outputs, error, owner, idempotency_key, request_hash FROM runs"
)


def run_summary(row: sqlite3.Row) -> RunRecord:
    """A row of SELECT_SUMMARIES: the run without its graph ({}) and input (None)."""
    return _run(row, {}, None)


def run_record(row: sqlite3.Row) -> RunRecord:
    graph_text = row["graph_text"]
    graph = json.loads(row["graph"] if graph_text is None else graph_text)
    return _run(row, graph, loads(row["input"]))


def _run(row: sqlite3.Row, graph: dict[str, Any], input: Any) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        graph_name=row["graph_name"],
        graph=graph,
        input=input,
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        node_count=row["node_count"],
        counts=json.loads(row["counts"]),
        usage=Usage.from_dict(json.loads(row["usage"])),
        outputs=loads(row["outputs"]),
        error=loads(row["error"]),
        owner=row["owner"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
    )


def insert_run(conn: sqlite3.Connection, run: RunRecord) -> None:
    """The run row, and its graph in a row of its own."""
    conn.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", run_row(run))
    conn.execute("INSERT INTO run_graphs VALUES (?, ?)", (run.run_id, json.dumps(run.graph)))


def run_row(run: RunRecord) -> tuple[Any, ...]:
    """The values of `INSERT INTO runs VALUES (…)`, in column order (the graph is '')."""
    return (
        run.run_id,
        run.graph_name,
        "",
        dumps(run.input),
        run.status.value,
        run.created_at,
        run.started_at,
        run.finished_at,
        run.node_count,
        json.dumps(run.counts),
        json.dumps(run.usage.to_dict()),
        dumps(run.outputs),
        dumps(run.error),
        run.owner,
        run.idempotency_key,
        run.request_hash,
    )


_STATUSES = {s.value: s for s in NodeStatus}
_NO_USAGE = json.dumps(Usage().to_dict())  # what a node that called no model holds
_LISTS: dict[str, list[str]] = {}  # parents/children texts decoded (bounded, see _ids)
_LISTS_KEPT = 8192


def _ids(text: str) -> list[str]:
    """A parents/children column as a list: these texts repeat on every transition of a
    node and never change, so each is decoded once (a fresh list every time: records are
    mutable)."""
    found = _LISTS.get(text)
    if found is None:
        if len(_LISTS) >= _LISTS_KEPT:
            _LISTS.clear()
        found = _LISTS[text] = json.loads(text)
    return list(found)


_TEXTS: dict[tuple[str, ...], str] = {}  # parents/children encoded (bounded like _LISTS)


def _ids_text(ids: list[str]) -> str:
    """`_ids` the other way, for the rows a run starts with: every run of a graph writes
    the same lists again (a lookup is 20 times cheaper than encoding them)."""
    key = tuple(ids)
    found = _TEXTS.get(key)
    if found is None:
        if len(_TEXTS) >= _LISTS_KEPT:
            _TEXTS.clear()
        found = _TEXTS[key] = json.dumps(ids)
    return found


_USAGES: dict[str, tuple[Any, ...]] = {}  # usage texts decoded (bounded like _LISTS)


def _usage(text: str) -> Usage:
    """A usage column as a Usage: a finished node's is read by every later look at it
    (its node-finished, its children's decisions), so each text is decoded once (a
    fresh Usage every time: records are mutable)."""
    fields = _USAGES.get(text)
    if fields is None:
        if len(_USAGES) >= _LISTS_KEPT:
            _USAGES.clear()
        u = Usage.from_dict(json.loads(text))
        fields = (u.input_tokens, u.output_tokens, u.cached_tokens, u.thinking_tokens)
        fields = _USAGES[text] = (*fields, u.cost_usd, u.calls)
    return Usage(*fields)


def node_record(row: sqlite3.Row | tuple[Any, ...]) -> NodeRecord:
    """A row whose first columns are NODE_COLUMNS, read by position (a transition reads
    one per node several times, so the decoding is on the hot path: columns that hold
    nothing, which is most of them most of the time, are not decoded)."""
    (
        run_id,
        node_id,
        status,
        attempt,
        parents,
        children,
        pool,
        output,
        error,
        started_at,
        finished_at,
        duration_ms,
        usage,
        lease_until,
        next_attempt_at,
        updated_at,
        model,
        skip_reason,
        partial,
        executions,
        meta,
    ) = row[:21]
    return NodeRecord(
        run_id,
        node_id,
        _STATUSES[status],
        _ids(parents),
        _ids(children),
        pool,
        attempt,
        None if output is None else json.loads(output),
        None if error is None else NodeError.from_dict(json.loads(error)),
        started_at,
        finished_at,
        duration_ms,
        Usage() if usage == _NO_USAGE else _usage(usage),
        lease_until,
        next_attempt_at,
        updated_at,
        model,
        skip_reason,
        partial,
        executions,
        None if meta is None else json.loads(meta),
    )


def node_rows(
    run: RunRecord, nodes: Iterable[NodeRecord], first_seq: int = 0
) -> list[tuple[Any, ...]]:
    """The values of `INSERT_NODE`, one tuple per node in creation order."""
    return [
        (
            run.run_id,
            n.node_id,
            seq,
            n.status.value,
            n.attempt,
            _ids_text(n.parents),
            _ids_text(n.children),
            n.pool,
            _usage_text(n.usage),
            n.updated_at if n.updated_at is not None else run.created_at,
            n.skip_reason,
            n.finished_at,
            dumps(n.meta),
        )
        for seq, n in enumerate(nodes, first_seq)
    ]


INSERT_NODE = (
    "INSERT INTO nodes (run_id, node_id, seq, status, attempt, parents, children, pool, "
    "usage, updated_at, skip_reason, finished_at, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


_SELECT_NODE = f"SELECT {NODE_COLUMNS} FROM nodes WHERE run_id=? AND node_id=?"


def select_node(conn: sqlite3.Connection, run_id: str, node_id: str) -> NodeRecord | None:
    row = conn.execute(_SELECT_NODE, (run_id, node_id)).fetchone()
    return node_record(row) if row else None


# The columns of transitions.READS, in the order `select_for_decision` unpacks them.
_DECISION_COLUMNS = sorted(transitions.READS)
_SELECT_DECISION = f"SELECT {', '.join(_DECISION_COLUMNS)} FROM nodes WHERE run_id=? AND node_id=?"


def select_for_decision(conn: sqlite3.Connection, run_id: str, node_id: str) -> NodeRecord | None:
    """The node as far as a decision reads it (`transitions.READS`); its other fields are
    left empty. For transitions that return no record: the SELECT of every column cost
    twice as much (each column read is a Python object made)."""
    row = conn.execute(_SELECT_DECISION, (run_id, node_id)).fetchone()
    if row is None:
        return None
    attempt, executions, lease_until, meta, node_id, run_id, skip, started_at, status, usage = row
    return NodeRecord(
        run_id,
        node_id,
        _STATUSES[status],
        [],
        [],
        attempt=attempt,
        started_at=started_at,
        usage=Usage() if usage == _NO_USAGE else _usage(usage),
        lease_until=lease_until,
        skip_reason=skip,
        executions=executions,
        meta=None if meta is None else json.loads(meta),
    )


def count_arrivals(conn: sqlite3.Connection, run_id: str, child_id: str) -> int:
    """A child's arrivals: a range of the arrivals table's primary key."""
    found = conn.execute(
        "SELECT count(*) FROM arrivals WHERE run_id=? AND child_id=?", (run_id, child_id)
    ).fetchone()
    return int(found[0])


def insert_event(conn: sqlite3.Connection, event: Event) -> None:
    values = (
        event.run_id,
        event.at,
        event.kind,
        event.node_id,
        event.status,
        event.attempt,
        event.message,
    )
    batch = open_batch()
    if batch is not None:
        batch.events.append(values)
    else:
        conn.execute(INSERT_EVENT, values)


def event_record(row: sqlite3.Row) -> Event:
    return Event(
        row["run_id"],
        row["at"],
        row["kind"],
        row["node_id"],
        row["status"],
        row["attempt"],
        row["message"],
        row["seq"],
    )


def _usage_text(usage: Usage) -> str:
    if not (
        usage.calls
        or usage.input_tokens
        or usage.output_tokens
        or usage.cached_tokens
        or usage.thinking_tokens
        or usage.cost_usd
    ):
        return _NO_USAGE
    return json.dumps(usage.to_dict())


_STATUS_TEXT: dict[str, str] = {s.value: s.value for s in NodeStatus}  # a member hashes as its text


def _status_text(value: Any) -> str:
    text = _STATUS_TEXT.get(value)
    return NodeStatus(value).value if text is None else text


# A NodeRecord field's value as its column holds it (the other fields: as they are).
_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "status": _status_text,
    "error": lambda value: None if value is None else json.dumps(value.to_dict()),
    "usage": _usage_text,
    "output": dumps,
    "meta": dumps,
}


def applied(node: NodeRecord, change: Change) -> NodeRecord:
    """`change.applied(node)` without `dataclasses.replace`'s per-call introspection (a
    NodeRecord has no __post_init__ to run): a copy with the changed fields."""
    record = object.__new__(type(node))
    record.__dict__.update(node.__dict__, **change.fields)
    return record


_UPDATES: dict[tuple[str, ...], str] = {}  # the UPDATE of each set of fields (a few kinds)


def persist(conn: sqlite3.Connection, run_id: str, node_id: str, change: Change) -> bool:
    """Write a decided change, only if the node is still in the status and attempt it was
    decided on; with it, move the run's counts and usage and append its event."""
    fields = change.fields
    names = tuple(fields)
    update = _UPDATES.get(names)
    if update is None:
        sets = ", ".join(f"{name}=?" for name in names)
        update = f"UPDATE nodes SET {sets} WHERE run_id=? AND node_id=? AND status=? AND attempt=?"
        if len(_UPDATES) < 256:  # field names come from transitions.py: a bounded few
            _UPDATES[names] = update
    values = [
        fields[name] if name not in _ENCODERS else _ENCODERS[name](fields[name]) for name in names
    ]
    values += (run_id, node_id, _status_text(change.status), change.attempt)
    changed = conn.execute(update, values).rowcount
    if not changed:
        return False
    move_counts(conn, run_id, change.moves, change.usage)
    if change.event is not None:
        insert_event(conn, change.event)
    return True


def persist_run(
    conn: sqlite3.Connection, run_id: str, current: RunStatus, change: RunChange
) -> bool:
    """Write a decided run status change, only if the run is still in `current`."""
    fields: Mapping[str, Any] = change.fields
    sets = ", ".join(f"{name}=?" for name in fields)
    values = [
        dumps(v) if k in ("outputs", "error") else RunStatus(v).value if k == "status" else v
        for k, v in fields.items()
    ]
    changed = conn.execute(
        f"UPDATE runs SET {sets} WHERE run_id=? AND status=?", (*values, run_id, current.value)
    ).rowcount
    if changed:
        insert_event(conn, change.event)
    return bool(changed)


def move_counts(
    conn: sqlite3.Connection,
    run_id: str,
    moves: Iterable[tuple[NodeStatus, NodeStatus]],
    usage: Usage | None = None,
) -> None:
    """Move node counts between statuses (and add usage) on the run row, in SQL: `json_set`,
    the run row is never decoded for it. Inside a `Batch` the counts and the usage are
    summed and written once per run just before the COMMIT (every model call has usage,
    so that is one UPDATE a transaction, not one a finished agent)."""
    batch = open_batch()
    if batch is not None:
        delta = batch.counts.setdefault(run_id, {})
        for old, new in moves:
            before, after = _STATUS_TEXT[old], _STATUS_TEXT[new]
            delta[before] = delta.get(before, 0) - 1
            delta[after] = delta.get(after, 0) + 1
        if usage is not None and _usage_text(usage) is not _NO_USAGE:
            batch.add_usage(run_id, usage)
        return
    delta_now: dict[str, int] = {}
    for old, new in moves:
        delta_now[old.value] = delta_now.get(old.value, 0) - 1
        delta_now[new.value] = delta_now.get(new.value, 0) + 1
    pairs, params = count_terms({k: v for k, v in delta_now.items() if v})
    sets = [f"counts=json_set(counts, {', '.join(pairs)})"] if pairs else []
    spent = {k: v for k, v in usage.to_dict().items() if v} if usage is not None else {}
    if spent:
        terms, usage_params = usage_terms(
            {k: v for k, v in spent.items() if k != "cost_usd"}, [spent.get("cost_usd", 0)]
        )
        sets.append(f"usage=json_set(usage, {', '.join(terms)})")
        params += usage_params
    if sets:
        conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id=?", (*params, run_id))


def add_counts(
    conn: sqlite3.Connection, run_id: str, created: Mapping[str, int], total: int
) -> None:
    """Nodes added to a running run (instances): node_count and counts, in one UPDATE."""
    pairs: list[str] = []
    params: list[Any] = []
    for status, count in created.items():
        path = f'$."{status}"'
        pairs.append("?, COALESCE(json_extract(counts, ?), 0) + ?")
        params += [path, path, count]
    conn.execute(
        f"UPDATE runs SET node_count=node_count+?, counts=json_set(counts, {', '.join(pairs)}) "
        "WHERE run_id=?",
        (total, *params, run_id),
    )
