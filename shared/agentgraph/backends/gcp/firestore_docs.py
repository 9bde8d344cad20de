"""How the store's records map to Firestore documents (pure: no I/O).

Layout (collection names from `agentgraph.core.names`):
- `runs/{run_id}`: graph_name, status, created/started/finished_at (epoch floats),
  node_count, `counts` {final node status: n} and `usage` {token and cost totals} (stored
  when the run ends, else null), error, owner,
  idempotency_key, request_hash, and the JSON values graph / input / outputs as the text
  fields `graph_json`, `input_json`, `outputs_json` (or `<field>_ref` chunk markers).
- `runs/{run_id}/nodes/{node_id}`: every NodeRecord field, plus run_id and owner (for
  collection-group queries and security rules), seq (creation order), op (the token of
  the last transition); the output as text in `output_json` or a marker in `output_ref`;
  `quiet` {key: timeline line} and `quiet_at`: the lines kept on the node (`quiet`).
- `runs/{run_id}/nodes/{child}/arrivals/{parent}`: one document per fan-in edge (for
  children with two or more parents; a one-parent child needs none). The child's count
  is no field: it is counted (`count()`), so no document is written by every arrival.
- No counter document: a running run's node counts and usage are derived from its node
  documents (each holds its status and usage) by aggregation queries (`count()` per
  status, `sum()` of usage: `firestore_io.FirestoreIO._aggregate`), billed one read per
  1,000 index entries each. When the run ends with every node final, `set_run_status`
  stores the counts and usage on the run document in the same write (`final_fields`), so a
  finished run reads as one document; a run that ends with nodes still running (failed,
  cancelled) stores none and keeps being counted. Redrive clears them (`run_change_fields`).
  So no document is written by every transition of a busy run: the run document changes
  at creation, start, end (and when a run grows); a node's end writes only the node.
- `runs/{run_id}/events/{id}`: the append-only timeline (but for the `quiet` lines).
- `runs/{run_id}/chunks/…`, `runs/{run_id}/nodes/{node_id}/chunks/…`: see chunks.py.
- `idempotency/{sha256(owner NUL key)}`: owner, key, run_id, request_hash, created_at.

JSON values are stored as JSON text, not as Firestore maps: maps cannot hold every JSON
value (arrays of arrays, integers past 64 bits, nesting past 20 levels) and do not keep key
order, and a value must come back exactly as the SQLite backend returns it. Error messages
and streamed partial text are cut at `TEXT_CAP` and `PARTIAL_CAP` bytes so no document
outgrows Firestore's 1 MiB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from agentgraph.backends.gcp import chunks
from agentgraph.core import names
from agentgraph.core.records import Event, NodeError, NodeRecord, RunRecord, Usage
from agentgraph.core.status import TERMINAL_NODE, NodeStatus, RunStatus
from agentgraph.core.transitions import Change, RunChange

NODE_BUDGET = 950_000  # bytes of a node document (1 MiB cap, with room for field names)
RUN_INPUTS_BUDGET = 600_000  # graph + input inline on the run document
RUN_OUTPUTS_BUDGET = 300_000  # outputs inline on the run document
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TEXT_CAP = 64 * 1024
PARTIAL_CAP = 256 * 1024


def value_fields(
    inline: Mapping[str, str | None], chunked: Sequence[chunks.Chunked]
) -> dict[str, Any]:
    """`<field>_json` / `<field>_ref`, both always written so no stale one is left."""
    fields: dict[str, Any] = {}
    for field, text in inline.items():
        fields[f"{field}_json"], fields[f"{field}_ref"] = text, None
    for value in chunked:
        fields[f"{value.field}_json"], fields[f"{value.field}_ref"] = None, value.marker()
    return fields


def node_doc(node: NodeRecord, run: RunRecord, seq: int) -> dict[str, Any]:
    """A node as create_run writes it (outputs and timings come later)."""
    return {
        "run_id": run.run_id,
        "node_id": node.node_id,
        "owner": run.owner,
        "run_created_at": run.created_at,  # the owner's spend today sums nodes by it
        "seq": seq,
        "status": node.status.value,
        "attempt": node.attempt,
        "parents": list(node.parents),
        "children": list(node.children),
        "pool": node.pool,
        "output_json": None,
        "output_ref": None,
        "error": error_doc(node.error),
        "started_at": None,
        "finished_at": node.finished_at,
        "duration_ms": None,
        "usage": node.usage.to_dict(),
        "lease_until": None,
        "next_attempt_at": None,
        "updated_at": run.created_at,
        "model": None,
        "skip_reason": node.skip_reason,
        "partial": None,
        "executions": 0,
        "meta_json": chunks.dumps(node.meta),
    }


def node_record(data: Mapping[str, Any], output: Any = None) -> NodeRecord:
    return NodeRecord(
        run_id=data["run_id"],
        node_id=data["node_id"],
        status=NodeStatus(data["status"]),
        parents=list(data.get("parents") or []),
        children=list(data.get("children") or []),
        pool=data.get("pool") or names.DEFAULT_POOL,
        attempt=int(data.get("attempt", 1)),
        output=output,
        error=NodeError.from_dict(data.get("error")),
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        duration_ms=data.get("duration_ms"),
        usage=usage(data.get("usage")),
        lease_until=data.get("lease_until"),
        next_attempt_at=data.get("next_attempt_at"),
        updated_at=data.get("updated_at"),
        model=data.get("model"),
        skip_reason=data.get("skip_reason"),
        partial=data.get("partial"),
        executions=int(data.get("executions", 0)),
        meta=chunks.loads(data.get("meta_json")),
    )


def change_fields(node: NodeRecord, change: Change) -> tuple[dict[str, Any], list[chunks.Chunked]]:
    """A decided node change as document fields, and the chunks its output needs (written
    before the commit that names them). `node` is the record it was decided on: the
    output's inline budget is what the rest of the node document leaves."""
    fields: dict[str, Any] = {}
    chunked: list[chunks.Chunked] = []
    for name, value in change.fields.items():
        if name == "status":
            fields[name] = NodeStatus(value).value
        elif name == "error":
            fields[name] = error_doc(value)
        elif name == "usage":
            fields[name] = value.to_dict()
        elif name == "partial":
            fields[name] = cap(value, PARTIAL_CAP)
        elif name == "meta":
            fields["meta_json"] = chunks.dumps(value)
        elif name != "output":
            fields[name] = value
    if "output" in change.fields:
        after = change.applied(node)
        rest = chunks.dumps([after.parents, after.children, error_doc(after.error), after.model])
        texts = {"output": chunks.dumps(change.fields["output"])}
        inline, chunked = chunks.plan(texts, NODE_BUDGET - chunks.size(rest))
        fields.update(value_fields(inline, chunked))
    return fields, list(chunked)


def run_change_fields(change: RunChange, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """A decided run change as document fields; `outputs` are the outputs' `value_fields`
    (their chunks are written before the change is decided)."""
    fields: dict[str, Any] = {}
    for name, value in change.fields.items():
        if name == "status":
            fields[name] = RunStatus(value).value
        elif name == "error":
            fields[name] = None if value is None else capped_error(value)  # None: redriven
        elif name == "outputs":
            fields.update(outputs)
        else:
            fields[name] = value
    if "status" in fields and not RunStatus(fields["status"]).terminal:
        fields["counts"] = fields["usage"] = None  # running again (redriven): counted anew
    return fields


def final_fields(counts: Mapping[str, int], spent: Usage) -> dict[str, Any]:
    """What a run's end stores beside its status, in the same write: the counts and usage
    its nodes add up to, read by aggregation just before (every node final, so they can no
    longer change while the run stays ended)."""
    return {"counts": final_counts(counts), "usage": spent.to_dict()}


def run_doc(run: RunRecord, values: dict[str, Any]) -> dict[str, Any]:
    """The run document; `values` are its graph/input/outputs `value_fields`."""
    return {
        "graph_name": run.graph_name,
        "status": run.status.value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "node_count": run.node_count,
        "counts": None,  # derived from the nodes while the run runs (`final_fields`)
        "usage": None,
        "error": run.error,
        "owner": run.owner,
        "idempotency_key": run.idempotency_key,
        "request_hash": run.request_hash,
        **values,
    }


# The run document's fields a summary reads (a projection: never graph_* or input_*).
RUN_SUMMARY_FIELDS = [
    "graph_name",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "node_count",
    "counts",
    "usage",
    "error",
    "owner",
    "idempotency_key",
    "request_hash",
    "outputs_json",
    "outputs_ref",
]


def run_record(run_id: str, data: Mapping[str, Any], texts: Mapping[str, str | None]) -> RunRecord:
    """`texts`: the graph / input / outputs JSON text, already reassembled."""
    return RunRecord(
        run_id=run_id,
        graph_name=data["graph_name"],
        graph=chunks.loads(texts["graph"]),
        input=chunks.loads(texts["input"]),
        status=RunStatus(data["status"]),
        created_at=data["created_at"],
        node_count=int(data["node_count"]),
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        counts={k: int(v) for k, v in (data.get("counts") or {}).items()},
        usage=usage(data.get("usage")),
        outputs=chunks.loads(texts["outputs"]),
        error=data.get("error"),
        owner=data.get("owner"),
        idempotency_key=data.get("idempotency_key"),
        request_hash=data.get("request_hash"),
    )


def event_doc(event: Event) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "at": event.at,
        "kind": event.kind,
        "node_id": event.node_id,
        "status": event.status,
        "attempt": event.attempt,
        "message": cap(event.message, TEXT_CAP),
    }


def quiet(event: Event) -> bool:
    """An event kept on its node instead of as an event document: a node made ready,
    started without a takeover, or succeeded without a message: the three lines of every
    node's success path (the timeline shows them, `quiet_events`), which as documents
    would be three of its writes. Errors, retries, takeovers and run status lines stay
    event documents."""
    return event.kind == "node_status" and event.status in _QUIET and event.message is None


_QUIET = (NodeStatus.READY.value, NodeStatus.RUNNING.value, NodeStatus.SUCCEEDED.value)


def quiet_fields(event: Event, token: str) -> dict[str, Any]:
    """The node fields that keep a quiet event, in the transition's own node write: an
    entry of the map `quiet` (keyed by the transition's token, so a repeated commit of it
    adds nothing) stamped with the commit time, as an event document's create_time is,
    and `quiet_at`, the latest one's commit time, which `list_events(after)` queries on."""
    entry = {k: v for k, v in event_doc(event).items() if k != "run_id"}
    entry["committed"] = firestore.SERVER_TIMESTAMP
    key = f"{event.status}_{event.attempt}_{token}"
    return {f"quiet.{key}": entry, "quiet_at": firestore.SERVER_TIMESTAMP}


def quiet_events(run_id: str, data: Mapping[str, Any]) -> list[tuple[int, str, Event]]:
    """A node document's quiet events: (seq, key, event), seq the commit time in
    microseconds, the same order as an event document's."""
    found = []
    for key, entry in (data.get("quiet") or {}).items():
        seq = (entry["committed"] - _EPOCH) // timedelta(microseconds=1)
        found.append((seq, key, event_record(run_id, entry, seq)))
    return found


def event_record(run_id: str, data: Mapping[str, Any], seq: int) -> Event:
    return Event(
        run_id,
        data["at"],
        data["kind"],
        data.get("node_id"),
        data.get("status"),
        data.get("attempt"),
        data.get("message"),
        seq,
    )


def instance_increments(created: Mapping[str, int]) -> dict[str, Any]:
    """Instances added to a running run: its node_count grows with them (their statuses
    are counted from the node documents, like every node's)."""
    return {"node_count": firestore.Increment(sum(created.values()))}


def final_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The counts a run stores: final statuses only (no unfinished node is left then)."""
    final = {s.value for s in TERMINAL_NODE}
    return {k: int(v) for k, v in counts.items() if k in final and v}


def usage(data: Mapping[str, Any] | None) -> Usage:
    total = Usage.from_dict(data)
    total.cost_usd = round(total.cost_usd, 9)  # float increments drift in the last digits
    return total


def error_doc(error: NodeError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {**error.to_dict(), "message": cap(error.message, TEXT_CAP)}


def capped_error(error: Mapping[str, Any]) -> dict[str, Any]:
    return {k: cap(v, TEXT_CAP) if isinstance(v, str) else v for k, v in error.items()}


def cap(text: str | None, limit: int) -> str | None:
    """At most `limit` UTF-8 bytes of `text`, marked when cut."""
    if text is None or len(text) * 4 <= limit or len(text.encode()) <= limit:
        return text
    return text.encode()[: limit - 40].decode(errors="ignore") + " … [cut: too long to store]"
