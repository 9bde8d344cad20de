"""Drives runs through the ports; the same code runs in every backend.

Each public coroutine handles one message kind and is safe to repeat: the store's
transitions are conditional, so a duplicate delivery finds its work done and at most
re-sends the message that follows (which is itself safe to repeat). The order inside
each handler is state change first, then the next message: a crash between the two
leaves a state the redelivery (or the sweeper) recognises and finishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentgraph import engine_delegates
from agentgraph.attempt_watch import AttemptWatch
from agentgraph.core import grow, readiness
from agentgraph.core.errors import (
    DelegationSuspended,
    LlmError,
    OutputTooLarge,
    RetryableToolError,
    TemplateProblem,
)
from agentgraph.core.graph import Graph, Node
from agentgraph.core.limits import OwnerLimits
from agentgraph.core.llm_port import LlmProvider
from agentgraph.core.lru import Lru
from agentgraph.core.model_gate import config_from_env
from agentgraph.core.ports import (
    Dispatcher,
    ModelGate,
    OwnerActivityReader,
    RetryScheduler,
    Store,
    ToolRegistry,
)
from agentgraph.core.readiness import Decision, Verdict
from agentgraph.core.records import Event, NodeError, NodeRecord, Outcome, RunRecord, Usage
from agentgraph.core.status import NodeStatus, RunStatus
from agentgraph.core.templates import condition_holds
from agentgraph.core.timeouts import TimeoutBound
from agentgraph.core.validate import load_graph, validate_input
from agentgraph.engine_approval import Approvals
from agentgraph.engine_delegates import Delegation
from agentgraph.engine_fanin import FanIn
from agentgraph.engine_gate import LocalModelGate, ModelGating, Ticket
from agentgraph.engine_grow import Growth
from agentgraph.engine_memory import Memory
from agentgraph.engine_recovery import RUN_ENDED_WHILE_RUNNING, Recovery
from agentgraph.engine_redrive import Redrive
from agentgraph.engine_work import NodeWork
from agentgraph.observability import engine_telemetry as telemetry
from agentgraph.observability import metrics, tracing
from agentgraph.observability.logs import log_fields
from agentgraph.tools import context as tool_context

log = logging.getLogger("agentgraph.engine")

MAX_OUTPUT_BYTES = 10 * 1024 * 1024
# A running node's lease. Its worker renews it every third of it while it works, so a
# worker that died is noticed (and its node taken over) about this long after, whatever
# the node's timeout_s; a live one is never taken over for being slow.
LEASE_S = 30.0
LEASE_MARGIN_S = 1.0  # past a lease's end before a watch looks again (clock skew)
LEASE_WATCH_TAG = "lease-"  # the delayed deliveries of lease watches (`_watch_lease`)
_GRAPHS_KEPT = 64
_GRAPH_BYTES = 64 * 1024 * 1024  # compiled graphs, measured by their document's JSON text
_RUNS_KEPT = 256
_RUN_BYTES = 64 * 1024 * 1024  # run contexts hold run inputs (up to 10 MiB each)
_ENDED_KEPT = 4096
_INSTANCES_KEPT = 20_000  # resolved instance ids per run context


@dataclass(frozen=True)
class RunContext:
    """What every message of a run needs: its compiled graph and its input."""

    graph: Graph
    input: Any
    input_bytes: int = 0  # the input's JSON size, what the engine's memory of it costs
    owner: str | None = None  # whose limits the run's model calls count against
    instances: dict[str, Node | None] = field(default_factory=dict, compare=False)

    def node(self, node_id: str) -> Node | None:
        """The node an id runs as: a graph node, or an instance (core/grow.py), cached."""
        found = self.graph.nodes.get(node_id)
        if found is not None:
            return found
        if node_id not in self.instances:
            if len(self.instances) > _INSTANCES_KEPT:
                self.instances.clear()
            found = grow.instance_node(self.graph, node_id)
            self.instances[node_id] = found or engine_delegates.resolve(self, node_id)
        return self.instances[node_id]


class Engine(
    FanIn,
    Recovery,
    Growth,
    Delegation,
    Memory,
    ModelGating,
    Approvals,
    Redrive,
    NodeWork,
):
    """One engine per process; it caches each run's compiled graph (immutable per run).

    Its three message kinds are split over three modules: node-ready here (`execute`),
    node-finished in `engine_fanin.py` (`complete`), retries and recovery in
    `engine_recovery.py` (`retry`, `cancel`, `sweep`, `resume`); the per-model limits and
    circuit breaker around model calls are `engine_gate.py`. What a claimed attempt does (a
    tool call, a model call within its owner's budget) is `engine_work.py`; an agent with
    `tools` runs its tool loop of durable steps in `engine_agent.py`; human approval is in
    `engine_approval.py` (`decide_approval`, the timeout), redrive in `engine_redrive.py`."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        retries: RetryScheduler,
        llm: LlmProvider,
        tools: ToolRegistry,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        partial_interval_s: float = 1.0,
        sweep_grace_s: float = 60.0,
        check_llm_config: bool = True,
        lease_s: float = LEASE_S,
        owner_activity: OwnerActivityReader | None = None,
        owner_limits: OwnerLimits | None = None,
        local_files: bool = False,
        scratch: tool_context.ScratchSpace | None = None,
        model_gate: ModelGate | None = None,
        timeout_bound: TimeoutBound | None = None,
        fanin_inline: bool = False,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.retries = retries
        self.llm = llm
        self.tools = tools
        self.clock = clock
        self.rng = rng or random.Random()
        self.partial_interval_s = partial_interval_s
        self.sweep_grace_s = sweep_grace_s
        self.check_llm_config = check_llm_config
        self.lease_s = lease_s
        # With both, a model call of a run whose owner is over the daily budget fails the
        # node instead (core/limits.py); without, nothing is counted (the local backend).
        self.owner_activity = owner_activity
        self.owner_limits = owner_limits or OwnerLimits()
        # Whether an agent's `attach` may read local paths (the local backend only).
        self.local_files = local_files
        # The runs' scratch space, for tools that ask (tools/context.py, tools/run_files.py).
        self.scratch = scratch
        # Per-model rate, concurrency and circuit breaker (engine_gate.py). Without one,
        # an in-process gate configured from AGENTGRAPH_MODEL_* / AGENTGRAPH_BREAKER_*.
        if model_gate is None:
            model_gate = LocalModelGate(config_from_env(os.environ), clock=clock)
        self.gate = model_gate
        # Serverless: each pool's function timeout bounds a node's timeout_s (validation
        # refuses longer ones); None keeps the graph schema's own bound (the local backend).
        self.timeout_bound = timeout_bound
        # Serverless: the executor that writes a node's final status does its fan-in
        # itself (`node_done`) instead of sending node-finished to the complete function.
        self.fanin_inline = fanin_inline
        self._runs: Lru[str, RunContext] = Lru(_RUNS_KEPT, _RUN_BYTES, _context_size)
        self._graphs: Lru[tuple[str, ...], tuple[Graph, int]] = Lru(
            _GRAPHS_KEPT, _GRAPH_BYTES, lambda entry: entry[1]
        )
        self._ended: Lru[str, None] = Lru(_ENDED_KEPT)
        # owner -> (read at, USD, tokens): today's spend, read at most every SPEND_FRESH_S
        self._spend: Lru[str, tuple[float, float, int]] = Lru(_ENDED_KEPT)

    # ---- starting -------------------------------------------------------------------

    def compile(self, document: Mapping[str, Any]) -> Graph:
        """Validate a graph document against this engine's tools and models."""
        tools = self.tools.names()
        return self._cached_graph(
            document,
            ("checked", *tools),
            lambda: load_graph(
                document,
                tools=tools,
                model_known=self.llm.supports,
                timeout_bound=self.timeout_bound,
            ),
        )

    async def compile_off_loop(self, document: Mapping[str, Any]) -> Graph:
        """`compile`, with the work on a worker thread: validating a large or hostile graph
        takes up to about a second of CPU, and the other requests of the same instance
        (its health check too) must not wait for it on the event loop."""
        tools = self.tools.names()
        scope = ("checked", *tools)
        key, size = await asyncio.to_thread(_graph_key, document, scope)
        cached = self._graphs.get(key) if key is not None else None
        if cached is not None:
            return cached[0]
        graph = await asyncio.to_thread(
            load_graph,
            document,
            tools=tools,
            model_known=self.llm.supports,
            timeout_bound=self.timeout_bound,
        )
        if key is not None:
            self._graphs.put(key, (graph, size))
        return graph

    def _cached_graph(
        self, document: Mapping[str, Any], scope: tuple[str, ...], build: Callable[[], Graph]
    ) -> Graph:
        """Validation costs milliseconds per run, and a service runs the same few documents
        again and again; a Graph is immutable, so one compiled graph serves every run of
        the same document text (and the same tool names). A document that is not plain
        JSON is compiled every time."""
        key, size = _graph_key(document, scope)
        if key is None:
            return build()
        cached = self._graphs.get(key)
        if cached is not None:
            return cached[0]
        graph = build()
        self._graphs.put(key, (graph, size))
        return graph

    async def start_run(
        self,
        document: Mapping[str, Any],
        input: Any = None,
        *,
        owner: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Validate, write the run and its nodes in one step, then dispatch the roots.

        Raises GraphInvalid / InputInvalid before anything is written. With an
        idempotency key already used, returns the earlier run and dispatches nothing.
        """
        graph = await self.compile_off_loop(document)
        check_models = getattr(self.llm, "check_models", None)
        if self.check_llm_config and check_models is not None:
            check_models(grow.models(graph))
        # The input's schema and size, and the roots' conditions: CPU bounded by the
        # limits, off the event loop for the same reason as validation.
        context, roots = await asyncio.to_thread(self._prepare_roots, graph, input, owner)
        now = self.clock()
        run_id = run_id or new_run_id(now)
        records = [
            self._initial_record(run_id, node, roots.get(node.id), now)
            for node in graph.nodes.values()
        ]
        counts: dict[str, int] = {}
        for record in records:
            counts[record.status.value] = counts.get(record.status.value, 0) + 1
        run = RunRecord(
            run_id=run_id,
            graph_name=graph.name,
            graph=dict(document),
            input=input,
            status=RunStatus.RUNNING,
            created_at=now,
            started_at=now,
            node_count=len(graph),
            counts=counts,
            owner=owner,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        stored = await self.store.create_run(run, records)
        if stored.run_id != run_id:
            await self._redispatch_roots(stored)
            return stored
        metrics.instruments().runs_started.add(1)
        tracing.set_attributes({tracing.RUN_ID: run_id, "agentgraph.graph": graph.name})
        self._remember(run_id, context)
        await self._dispatch_roots(run_id, records)
        return stored

    async def _dispatch_roots(self, run_id: str, roots: Iterable[NodeRecord]) -> None:
        await asyncio.gather(
            *(
                self.dispatcher.node_ready(run_id, r.node_id, r.attempt, r.pool)
                if r.status == NodeStatus.READY
                else self.dispatcher.node_finished(run_id, r.node_id, r.status)
                for r in roots
                if r.status in (NodeStatus.READY, NodeStatus.SKIPPED) and not r.executions
            )
        )

    async def _redispatch_roots(self, run: RunRecord) -> None:
        """The same request again (an idempotency key, a redelivered run-request): the
        first may have died between writing the run and dispatching its roots, so send what
        the roots still need. Receivers are idempotent; roots already claimed get nothing."""
        if run.status != RunStatus.RUNNING:
            return
        context = self._runs.get(run.run_id) or self._context_of(run)
        roots = await self.store.get_outputs(run.run_id, context.graph.roots)
        await self._dispatch_roots(run.run_id, roots.values())

    def _decide_root(self, context: RunContext, node: Node) -> Decision:
        if node.when is None:
            return Decision(Verdict.READY)
        return readiness.apply_condition(
            condition_holds(node.when, {"input": context.input, "nodes": {}})
        )

    @staticmethod
    def _initial_record(
        run_id: str, node: Node, decision: Decision | None, now: float
    ) -> NodeRecord:
        status = NodeStatus.WAITING
        if decision is not None:
            status = NodeStatus.READY if decision.verdict == Verdict.READY else NodeStatus.SKIPPED
        return NodeRecord(
            run_id=run_id,
            node_id=node.id,
            status=status,
            parents=list(node.parents),
            children=list(node.children),
            pool=node.pool,
            skip_reason=decision.reason if decision else None,
            finished_at=now if status == NodeStatus.SKIPPED else None,
        )

    # ---- node-ready: execute one attempt ---------------------------------------------

    async def execute(self, run_id: str, node_id: str, attempt: int) -> None:
        """Claim, run and record one attempt. Returns only after its fan-in is done or
        handed over as node-finished (or the retry is), so acking after this never loses
        a node.

        One span per attempt (claim → run → finish), current while the next message is
        published, so the node's children and its retry continue from it."""
        attributes = {tracing.RUN_ID: run_id, tracing.NODE_ID: node_id, tracing.ATTEMPT: attempt}
        with (
            log_fields(run_id, node_id, attempt),
            tracing.span(f"node {node_id}", attributes),
        ):
            await self._gated_execute(run_id, node_id, attempt)

    async def _execute(
        self, run_id: str, node_id: str, attempt: int, ticket: Ticket | None = None
    ) -> None:
        context = await self._context(run_id)
        node = context.node(node_id) if context is not None else None
        if context is None or node is None:
            log.warning("node-ready for unknown run/node %s/%s: dropped", run_id, node_id)
            return
        now = self.clock()
        if await self._ended_here(run_id, node_id, now):
            return
        with tracing.span("claim"):
            claimed = await self.store.claim_node(
                run_id,
                node_id,
                attempt,
                now,
                now + self.lease_s,
                node.retry.max_takeovers,
            )
        if claimed is None:
            tracing.annotate(agentgraph__node__claimed=False)
            await self._redeliver_after_duplicate(run_id, node, attempt)
            return
        if claimed.status == NodeStatus.FAILED:  # its workers were lost too many times
            await self.node_done(run_id, node_id, NodeStatus.FAILED)
            return
        if claimed.executions > claimed.attempt:
            if await self._cancel_takeover_of_ended_run(run_id, node_id):
                return
            await self.store.append_event(
                Event(
                    run_id,
                    now,
                    "message",
                    node_id,
                    "running",
                    attempt,
                    "repeated after an executor died mid-attempt",
                )
            )
        if node.controller:  # a map, loop or subgraph: it adds instances, runs no call
            await self._expand(run_id, context, node, claimed, attempt)
            return
        usage = Usage()
        model: str | None = None
        attempt_model = ticket.model if ticket is not None else node.model_for_attempt(attempt)
        began = time.monotonic()
        request: dict[str, Any] | None = None  # an approval's, once its work is done
        suspended: DelegationSuspended | None = None  # waits for delegates (engine_delegates)
        try:
            # Tools called in the attempt (by a tool node, or by an agent) learn their run
            # from tools.context (e.g. the run's scratch space).
            call = tool_context.ToolContext(run_id, node_id, attempt, self.scratch)

            def renew() -> Awaitable[bool]:
                return self.store.renew_lease(run_id, node_id, attempt, self.clock() + self.lease_s)

            lease = f"lease {run_id}/{node_id}#{attempt}"
            async with AttemptWatch(renew, self.lease_s, node.timeout_s, lease):
                with tool_context.bound(call):
                    output, usage, model = await self._perform(
                        run_id, context, node, attempt, claimed, ticket
                    )
            _check_output_size(output)
            outcome = Outcome(NodeStatus.SUCCEEDED, output=output, usage=usage, model=model)
            if node.approval is not None:
                request = await self._approval_request(run_id, context, node, claimed, output)
        except asyncio.CancelledError:
            raise
        except DelegationSuspended as exc:
            suspended = exc
        except Exception as exc:  # every failure of user code becomes a node error
            error = classify(exc, attempt, node.timeout_s)
            usage = getattr(exc, "usage", usage)
            action = readiness.after_failure(node, attempt, error, self.rng)
            tracing.mark_error(error.type, error.message)
            if isinstance(action, readiness.Retry):
                telemetry.record_attempt(node, "retrying", attempt_model, began)
                await self._schedule_retry(run_id, node, attempt, error, action, usage)
                return
            outcome = Outcome(NodeStatus.FAILED, error=error, usage=usage, model=attempt_model)
        if suspended is not None:  # its delegates run; their node-finished wake it
            telemetry.record_attempt(node, "expanded", attempt_model, began)
            await self._suspend(run_id, node, attempt, suspended)
            return
        if request is not None:  # the work is done; a person decides the rest
            telemetry.record_attempt(node, "waiting_approval", outcome.model, began)
            await self._await_approval(run_id, node, attempt, request, usage, model)
            return
        telemetry.record_attempt(node, outcome.status.value, outcome.model, began)
        with tracing.span("finish"):
            finished = await self.store.finish_node(run_id, node_id, attempt, outcome, self.clock())
        if finished:
            await self.node_done(run_id, node_id, outcome.status)

    async def node_done(self, run_id: str, node_id: str, status: NodeStatus) -> None:
        """What follows the write of a node's final status by its executor: the fan-in
        to its children, here (`fanin_inline`) or by a node-finished message.

        Inline, a serverless edge is one Pub/Sub hop (node-ready) instead of two, and
        the arrivals of a wide fan-in are spread over the parents' own executors instead
        of queuing through one subscription's pushes. It is as safe as the message: the
        executor acks its node-ready only after this returns, so a crash anywhere in the
        fan-in means a redelivery, which finds the node finished and does it again
        (`_redeliver_after_duplicate`; every step of `complete` is safe to repeat)."""
        if self.fanin_inline:
            with tracing.span("complete"):
                await self.complete(run_id, node_id, status)
        else:
            await self.dispatcher.node_finished(run_id, node_id, status)

    async def _ended_here(self, run_id: str, node_id: str, now: float) -> bool:
        """A node-ready of a run this process ended starts nothing: the node, ready, is
        cancelled, only if the run is still ended when that is written. False when the run
        did not end here, or a redrive came since it was read (the node-ready is then
        handled as any other)."""
        if not await self._has_ended(run_id):
            return False
        if await self.store.resolve_node(
            run_id,
            node_id,
            NodeStatus.CANCELLED,
            now,
            reason=readiness.RUN_ENDED,
            expected=(NodeStatus.READY,),
            while_run_ended=True,
        ):
            return True
        return await self._has_ended(run_id)

    async def _cancel_takeover_of_ended_run(self, run_id: str, node_id: str) -> bool:
        """A takeover (the executor died mid-attempt) in a run that has ended since: the
        node must not run again, so it ends cancelled. Only takeovers pay this read; a
        first claim cannot race an ended run, whose cancel already took every ready node.
        The cancel holds only if the run is still ended when it is written: a redrive in
        between lets the takeover run (the redriven run waits for this node)."""
        run = await self.store.get_run_summary(run_id, counts=False)
        if run is not None and not run.status.terminal:
            return False
        if await self.store.resolve_node(
            run_id,
            node_id,
            NodeStatus.CANCELLED,
            self.clock(),
            reason=RUN_ENDED_WHILE_RUNNING,
            expected=(NodeStatus.RUNNING,),
            while_run_ended=True,
        ):
            return True
        run = await self.store.get_run_summary(run_id, counts=False)
        return run is None or run.status.terminal

    async def _schedule_retry(
        self,
        run_id: str,
        node: Node,
        attempt: int,
        error: NodeError,
        action: readiness.Retry,
        usage: Usage,
    ) -> None:
        now = self.clock()
        at = now + action.delay_s
        metrics.instruments().retries.add(1, {"error.type": error.type})
        attributes = {"error.type": error.type, "agentgraph.retry.delay_s": action.delay_s}
        with tracing.span("retry.schedule", attributes):
            if await self.store.schedule_retry(run_id, node.id, attempt, error, at, now, usage):
                await self.retries.schedule(run_id, node.id, action.next_attempt, at)

    async def _redeliver_after_duplicate(self, run_id: str, node: Node, attempt: int) -> None:
        """A delivery that could not claim: if the first delivery recorded its result but
        died before sending the next message, send it now (the receivers are idempotent)."""
        record = await self.store.get_node(run_id, node.id)
        if record is None or record.attempt != attempt:
            return
        if record.status in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
            await self.node_done(run_id, node.id, record.status)
        elif record.status == NodeStatus.EXPANDED and not node.controller:
            await self._redispatch_delegates(run_id, node)  # an agent waiting for delegates
        elif record.status == NodeStatus.EXPANDED:
            await self._redispatch_expansion(run_id, node)
        elif record.status == NodeStatus.RETRYING and record.next_attempt_at is not None:
            await self.retries.schedule(run_id, node.id, attempt + 1, record.next_attempt_at)
        elif record.status == NodeStatus.WAITING_APPROVAL and record.next_attempt_at is not None:
            await self._arm_approval(run_id, node.id, attempt, record.next_attempt_at)
        elif record.status == NodeStatus.RUNNING and record.lease_until is not None:
            await self._watch_lease(run_id, node.id, attempt, record.lease_until)

    async def _watch_lease(
        self, run_id: str, node_id: str, attempt: int, lease_until: float
    ) -> None:
        """A node-ready for an attempt that runs under a live lease: a duplicate, or the
        redelivery of a message whose worker died (Pub/Sub redelivers what a killed
        function never acked). Acking it unrun would leave a dead worker's node to the
        minute's sweep; nacking it would loop it through Pub/Sub's backoff into the
        dead-letter topic. So look again when the lease runs out (a delayed delivery of
        this attempt, `retry`): a dead worker's node is taken over then, about one lease
        after its last heartbeat; a live worker's renewed lease is watched once more."""
        due = lease_until + LEASE_MARGIN_S
        await self.retries.schedule(
            run_id, node_id, attempt, due, tag=f"{LEASE_WATCH_TAG}{int(due)}"
        )

    # ---- helpers ----------------------------------------------------------------------

    async def _context(self, run_id: str) -> RunContext | None:
        context = self._runs.get(run_id)
        if context is not None:
            return context
        run = await self.store.get_run(run_id, counts=False)
        return None if run is None else self._context_of(run)

    def _prepare_roots(
        self, graph: Graph, input: Any, owner: str | None
    ) -> tuple[RunContext, dict[str, Decision]]:
        context = RunContext(graph, input, validate_input(graph, input), owner)
        return context, {root: self._decide_root(context, graph[root]) for root in graph.roots}

    def _context_of(self, run: RunRecord) -> RunContext:
        """The run's graph snapshot compiled (cached by document) with its input."""
        context = RunContext(
            self._cached_graph(run.graph, ("snapshot",), lambda: load_graph(run.graph)),
            run.input,
            _json_size(run.input),
            run.owner,
        )
        self._remember(run.run_id, context)
        return context

    def _remember(self, run_id: str, context: RunContext) -> None:
        self._runs.put(run_id, context)

    async def _values(
        self,
        run_id: str,
        context: RunContext,
        node: Node,
        record: NodeRecord | None,
        known: Mapping[str, NodeRecord] | None = None,
    ) -> dict[str, Any]:
        """What the node's templates read: `input`, `nodes.<id>` (in its scope: an
        instance inside a subgraph reads its siblings), and an instance's bindings (item,
        index, loop). `known`: records already read, by full id."""
        known = known or {}
        wanted = [node.scope + r for r in sorted(node.reads) if node.scope + r not in known]
        fetched = await self.store.get_outputs(run_id, wanted) if wanted else {}
        records = {**known, **fetched}
        local = {r: records[node.scope + r] for r in node.reads if node.scope + r in records}
        return {
            **grow.bindings_of(record),
            **grow.template_values(context.input, local, node.reads),
        }


def classify(exc: BaseException, attempt: int, timeout_s: float) -> NodeError:
    """Turn any failure into a NodeError; only known-transient kinds are retryable."""
    if isinstance(exc, LlmError):
        return NodeError(
            exc.type, exc.message, exc.retryable, exc.http_status, attempt, exc.retry_after_s
        )
    if isinstance(exc, TimeoutError):
        return NodeError(
            "Timeout", f"no result within timeout_s={timeout_s:g}", True, None, attempt
        )
    if isinstance(exc, TemplateProblem):
        return NodeError("TemplateError", str(exc), False, None, attempt)
    if isinstance(exc, RetryableToolError):
        return NodeError(type(exc).__name__, str(exc), True, None, attempt)
    return NodeError(type(exc).__name__, str(exc) or repr(exc), False, None, attempt)


def _graph_key(document: Mapping[str, Any], scope: tuple[str, ...]) -> tuple[Any, int]:
    """The cache key of a graph document (its canonical text's hash) and that text's
    size; (None, 0) for a document that is not plain JSON (then compiled every time)."""
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None, 0
    return (*scope, hashlib.sha256(text.encode()).hexdigest()), len(text)


def _json_size(value: Any) -> int:
    """Bytes of a value as JSON (an estimate for what holding it costs)."""
    try:
        return len(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return 0


def _context_size(context: RunContext) -> int:
    return 1024 + context.input_bytes


def _check_output_size(output: Any) -> None:
    if output is None or (isinstance(output, str) and 6 * len(output) + 2 <= MAX_OUTPUT_BYTES):
        return  # a text's JSON is at most 6 bytes a character (\uXXXX) and its quotes
    try:
        size = len(json.dumps(output, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise TypeError(f"output is not JSON-serialisable: {exc}") from exc
    if size > MAX_OUTPUT_BYTES:
        raise OutputTooLarge(f"output is {size:,} bytes; the limit is {MAX_OUTPUT_BYTES:,} bytes")


def new_run_id(now: float) -> str:
    """Unique without coordination, and deliberately NOT sortable by creation time.

    The leading characters are random so that run documents (and the Cloud Tasks names
    derived from them) spread over Firestore's key range instead of all landing on its
    last split, which is Firestore's guidance against monotonically increasing document
    ids. The creation time follows for people reading logs; anything that orders runs
    orders by `created_at`. Only [0-9a-z-]: URL-safe and a valid Firestore document id.
    """
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    return f"{secrets.token_hex(5)}-{stamp}"
