"""The small interfaces the engine drives (the values that cross them are in
`core/records.py`; the LLM port is `core/llm_port.py`).

Every backend implements the same ports: `backends/local/` (SQLite, in-process queues,
timers) and `backends/gcp/` (Firestore, Pub/Sub, Cloud Tasks). The engine never learns
which one it has, so the contract tests in `tests/contract/` hold both to one behaviour.

Store methods are the state machine's transitions. Each one is conditional (it names the
state it expects) and atomic, and returns whether it happened, so a duplicate delivery
finds the transition already done and does nothing. What each transition may do is decided
in one place, `core/transitions.py`; a store reads, asks it, and persists the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agentgraph.core.limits import OwnerActivity, OwnerLimits
from agentgraph.core.model_gate import Admitted, Refused
from agentgraph.core.model_gate import Outcome as CallOutcome
from agentgraph.core.records import (
    Event,
    NodeError,
    NodePage,
    NodeRecord,
    NodeState,
    Outcome,
    RunRecord,
    Step,
    Usage,
)
from agentgraph.core.status import NodeStatus, RunStatus


class Store(Protocol):
    """Durable run state. Every write method is one atomic, conditional transition."""

    async def create_run(self, run: RunRecord, nodes: Sequence[NodeRecord]) -> RunRecord:
        """Write the run and all its nodes at once. With an idempotency key already used
        by the same owner, write nothing and return the existing run."""
        ...

    async def get_run(self, run_id: str, *, counts: bool = True) -> RunRecord | None:
        """The whole run. `counts=False`: its `counts` and `usage` may be left empty (a
        store that derives them from other documents skips reading those): for callers
        that need the graph, status or node_count only."""
        ...

    async def get_run_summary(self, run_id: str, *, counts: bool = True) -> RunRecord | None:
        """The run WITHOUT its graph snapshot and input (`graph` is {}, `input` None):
        what status checks and the api's answers need. Never reads or reassembles the
        graph or the input (each may be hundreds of KB, the input up to 10 MiB).
        `counts=False` as for `get_run`."""
        ...

    async def count_nodes(self, run_id: str, statuses: Sequence[NodeStatus]) -> int:
        """How many of the run's nodes are in one of `statuses` now (0 for an unknown run):
        what deciding whether a run has ended needs, without its other counts (Firestore:
        one `count()` aggregation over the node documents; SQLite: the run row's counts)."""
        ...

    async def list_runs(self, owner: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Newest first by `created_at` (run ids are random, never an order); summaries
        only, as `get_run_summary` returns them."""
        ...

    async def get_node(self, run_id: str, node_id: str) -> NodeRecord | None: ...

    async def list_nodes(self, run_id: str) -> list[NodeRecord]: ...

    async def list_nodes_page(
        self, run_id: str, *, limit: int, after: int | None = None
    ) -> NodePage:
        """At most `limit` nodes in the run's node order, starting after the cursor a
        previous page returned (`NodePage.next_after`); reads only those nodes."""
        ...

    async def get_outputs(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeRecord]:
        """The named nodes with their (reassembled) outputs, for template contexts."""
        ...

    async def get_statuses(self, run_id: str, node_ids: Sequence[str]) -> dict[str, NodeState]:
        """The named nodes' states without their outputs: a join without `when` decides
        on its parents' statuses alone, and an output may be megabytes (chunked across
        documents in Firestore). Nodes that do not exist are left out."""
        ...

    async def set_run_status(
        self,
        run_id: str,
        expected: Sequence[RunStatus],
        status: RunStatus,
        now: float,
        *,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Move the run from one of `expected` to `status`."""
        ...

    async def claim_node(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        now: float,
        lease_until: float,
        max_takeovers: int = 3,
    ) -> NodeRecord | None:
        """ready(attempt) -> running, or take over running(attempt) whose lease expired.
        None when this delivery must do nothing (duplicate, stale, cancelled). A node
        whose workers were lost more than `max_takeovers` times comes back failed."""
        ...

    async def finish_node(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        """running(attempt) -> succeeded|failed, adding usage and counts to the run."""
        ...

    async def schedule_retry(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        error: NodeError,
        next_attempt_at: float,
        now: float,
        usage: Usage | None = None,
    ) -> bool:
        """running(attempt) -> retrying; the next attempt is attempt + 1."""
        ...

    async def requeue_node(self, run_id: str, node_id: str, attempt: int, now: float) -> bool:
        """retrying(attempt - 1) -> ready(attempt)."""
        ...

    async def record_arrival(
        self,
        run_id: str,
        child_id: str,
        parent_id: str,
        position: int | None = None,
        of: int | None = None,
        succeeded: bool = False,
    ) -> int | None:
        """Note that `parent_id` reached a final status, once per edge (or that an
        instance reached its controller). Returns the child's arrival count as this
        arrival saw it after committing, or None when this edge had already arrived.
        `succeeded`: the parent's final status is `succeeded` (for
        `count_succeeded_arrivals`).

        `position` (the parent's index among the child's parents) and `of` (how many
        arrivals the child waits for) let a store count a wide child's arrivals in
        groups: an arrival that is not the last of its group to commit may then see a
        count lower than what has committed (still below `of`); the last of every group,
        and so the last of all, sees the full count as below.

        Guaranteed: the count includes this arrival and every arrival committed before
        it, so the last arrival to commit sees the full count. Not guaranteed: that only
        one arrival sees it; arrivals racing to commit may each see the full count (the
        Firestore store derives the count instead of keeping a hot counter). Whatever
        follows "the count is full" must therefore be conditional (`resolve_node`,
        `settle_node`), which makes deciding the child exactly-once. The engine calls it
        for children with two or more parents only: a one-parent child is decided by its
        conditional `resolve_node`, which is exactly-once by itself."""
        ...

    async def get_arrival_count(self, run_id: str, node_id: str) -> int:
        """How many arrivals `record_arrival` has recorded for the node (0 for none, or
        for an unknown node). A repeated node-finished uses it to finish a decision that a
        crash cut short after the last arrival committed."""
        ...

    async def count_succeeded_arrivals(self, run_id: str, node_id: str) -> int:
        """How many of the node's arrivals were recorded with `succeeded`, or 0 from a
        store that keeps no such note (SQLite, whose reads of the parents are local). A
        wide child whose every parent arrived succeeded is decided ready on this one
        aggregation instead of a read of every parent. A final status never changes, and
        a redrive deletes the arrivals of the parents it resets, so the note stays true."""
        ...

    async def claim_decision(self, run_id: str, node_id: str) -> bool:
        """Of the callers that saw a node's arrivals complete while it was unchanged
        (waiting, or an expanded controller), True for one; False for the others and once
        the node has moved on. An economy, not the guarantee (deciding is conditional
        anyway): racing arrivals of a wide fan-in do not each read every parent. A crash
        after a True is finished by the redelivered node-finished, which does not claim."""
        ...

    async def resolve_node(
        self,
        run_id: str,
        node_id: str,
        status: NodeStatus,
        now: float,
        *,
        reason: str | None = None,
        expected: Sequence[NodeStatus] = (NodeStatus.WAITING,),
        while_run_ended: bool = False,
    ) -> bool:
        """expected -> ready | skipped | cancelled | failed, without running the node.

        `while_run_ended`: only if the run is still failed or cancelled when the change
        is written, checked in the same atomic write. For the engine's "this run has
        ended, so this node starts nothing": read first and written after, a redrive
        committing in between would otherwise see its node cancelled by a stale
        message, and its run wait forever."""
        ...

    async def cancel_not_started(self, run_id: str, now: float) -> list[str]:
        """Every waiting, ready, retrying or expanded node -> cancelled; returns their ids."""
        ...

    async def add_instances(self, run_id: str, records: Sequence[NodeRecord], now: float) -> int:
        """Add node instances to a running run (core/grow.py), each only if absent, with
        the run's node_count and counts moved in the same commit as the nodes they count
        (a batch of up to a few hundred: never one write of the run per instance). A
        repeated call creates nothing; returns how many were created."""
        ...

    async def expand_node(
        self, run_id: str, node_id: str, attempt: int, expect: int, now: float
    ) -> bool:
        """running(attempt) -> expanded: a controller whose instances exist now waits for
        `expect` arrivals, holding no lease."""
        ...

    async def settle_node(self, run_id: str, node_id: str, outcome: Outcome, now: float) -> bool:
        """expanded -> succeeded|failed, with the output its instances gave."""
        ...

    async def renew_lease(
        self, run_id: str, node_id: str, attempt: int, lease_until: float
    ) -> bool:
        """running(attempt) keeps running: its lease now runs until `lease_until`. False
        when the attempt is no longer running (finished, cancelled, taken over)."""
        ...

    async def set_partial(self, run_id: str, node_id: str, attempt: int, text: str) -> None:
        """Streaming text of the running attempt, for live viewers."""
        ...

    async def append_event(self, event: Event) -> None: ...

    async def list_events(self, run_id: str, after: int | None = None) -> list[Event]: ...

    async def stale_nodes(self, now: float, grace_s: float) -> list[NodeRecord]:
        """Nodes a dead function may have left behind: running past lease_until, retrying
        past next_attempt_at + grace, ready for longer than grace (lost publish),
        waiting_approval past its deadline (next_attempt_at) + grace (a lost timeout)."""
        ...

    async def await_approval(
        self,
        run_id: str,
        node_id: str,
        attempt: int,
        pending: Any,
        deadline: float,
        now: float,
        usage: Usage | None = None,
        model: str | None = None,
        message: str | None = None,
    ) -> bool:
        """running(attempt) -> waiting_approval, with `pending` as the output and the
        deadline in next_attempt_at; the lease is released."""
        ...

    async def decide_approval(
        self, run_id: str, node_id: str, attempt: int, outcome: Outcome, now: float
    ) -> bool:
        """waiting_approval(attempt) -> succeeded | failed with the decision as output."""
        ...

    async def redrive_run(self, run_id: str, resets: Mapping[str, NodeStatus], now: float) -> bool:
        """A failed or cancelled run goes back to running, and each node of `resets` (all
        of them not running, not succeeded) goes back to the given status (waiting or
        ready) with a fresh attempt 1, its arrivals from other reset nodes forgotten.
        Atomic per run on SQLite; on Firestore see its docstring. False if the run was not
        failed or cancelled."""
        ...

    async def append_step(self, run_id: str, node_id: str, step: Step) -> bool:
        """Record a completed step of an agent's tool loop at `step.index`, if that index
        is still free; False (and nothing written) when a step is already there, so a
        repeated write, or a second worker racing a takeover, changes nothing."""
        ...

    async def list_steps(self, run_id: str, node_id: str) -> list[Step]:
        """The node's recorded steps, by index (large values reassembled)."""
        ...


class Dispatcher(Protocol):
    """Delivers the two message kinds, at least once. Messages carry ids only."""

    async def node_ready(self, run_id: str, node_id: str, attempt: int, pool: str) -> None: ...

    async def node_finished(self, run_id: str, node_id: str, status: NodeStatus) -> None: ...


class ApprovalWatcher(Protocol):
    """Optional, on a Dispatcher whose process must notice a decision written by another
    one (the local runtime: `agentgraph approve` in a second terminal): told of every node
    that starts waiting for approval, it sends node-finished once the node is decided."""

    async def awaiting_approval(self, run_id: str, node_id: str, attempt: int) -> None: ...


class RetryScheduler(Protocol):
    """Delivers node-ready for `attempt` no earlier than `at` (epoch seconds). Scheduling
    the same (run, node, attempt, tag) twice delivers it at least once; a `tag` tells apart
    deliveries of one attempt that are not retries (a node delayed by its model's gate)."""

    async def schedule(
        self, run_id: str, node_id: str, attempt: int, at: float, *, tag: str = ""
    ) -> None: ...


# ---- Graph store port ------------------------------------------------------------------


@dataclass(frozen=True)
class StoredGraph:
    """One version of a graph definition saved with POST /graphs."""

    id: str
    version: int
    definition: dict[str, Any]
    hash: str
    owner: str | None
    created_at: float
    latest_version: int


class GraphStore(Protocol):
    """Versioned graph definitions, named per owner: two owners' graphs of one name are
    two graphs, so a name reveals nothing about other owners and cannot be squatted."""

    async def save(
        self, owner: str, graph_id: str, definition: dict[str, Any], digest: str
    ) -> tuple[StoredGraph, bool]:
        """Store a new version of the owner's graph, or return the latest one when its
        hash is `digest` (created=False)."""
        ...

    async def get(
        self, owner: str, graph_id: str, version: int | None = None
    ) -> StoredGraph | None:
        """A version of the owner's graph (the latest when None), or None."""
        ...


# ---- Tools port ------------------------------------------------------------------------


class ToolRegistry(Protocol):
    def names(self) -> list[str]: ...

    def get(self, name: str) -> Callable[..., Any]:
        """The callable, sync or async; KeyError for unknown names."""
        ...


# ---- Owner activity port (per-owner limits) ----------------------------------------------


class OwnerActivityReader(Protocol):
    """Counts what an owner has done, from the runs themselves (core/limits.py)."""

    async def activity(self, owner: str, now: float, limits: OwnerLimits) -> OwnerActivity:
        """An OwnerActivity: runs started in the last minute, running, spent today."""
        ...

    async def spend_today(self, owner: str, now: float) -> tuple[float, int]:
        """USD and tokens of the owner's runs created since midnight UTC."""
        ...


# ---- Model gate port (per-model limits and circuit breaker) -------------------------------


class ModelGate(Protocol):
    """Per-model rate, concurrency and circuit breaker, shared by every engine that uses
    the same gate state (core/model_gate.py has the rules). In-process
    (`backends/local/model_gate.py`) or across a deployment (Firestore)."""

    async def admit(self, model: str, hold_s: float) -> Admitted | Refused:
        """May a call to `model` start now? Admitted holds a slot (and maybe the breaker's
        probe) for at most `hold_s`, until `release`."""
        ...

    async def release(self, model: str, permit: Admitted, outcome: CallOutcome) -> None:
        """The admitted call ended: success, overload (429/5xx) or other."""
        ...
