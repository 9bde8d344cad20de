"""The engine's human-approval half: a node that waits for a person, the decision, and
the timeout. Part of `Engine` (`engine.py`); the rules are in `core/approval.py`.

Order of writes: the node moves running -> waiting_approval (releasing its worker and
lease) before the timeout is armed; a crash between the two leaves a node the sweeper
finds once its deadline has passed (`stale_nodes`), and `resume` re-arms it. A decision
is one conditional transition, then node-finished; a repeated decision re-sends that
node-finished (receivers are idempotent), which is also what recovers a crash between
the two.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from agentgraph.core import approval
from agentgraph.core.errors import (
    ApprovalConflict,
    NodeNotFound,
    Problem,
    RequestInvalid,
    RunNotFound,
)
from agentgraph.core.graph import Node
from agentgraph.core.model import Approval
from agentgraph.core.records import NodeRecord, RunRecord, Usage
from agentgraph.core.templates import render
from agentgraph.engine_parts import EngineParts

if TYPE_CHECKING:
    from agentgraph.engine import RunContext

log = logging.getLogger("agentgraph.engine")


class Approvals(EngineParts):
    """Waiting for, deciding and timing out approvals."""

    if TYPE_CHECKING:  # provided by Engine

        def _context_of(self, run: RunRecord) -> RunContext: ...

    async def _approval_request(
        self, run_id: str, context: RunContext, node: Node, record: NodeRecord, output: Any
    ) -> dict[str, Any]:
        """What the person is asked: the rendered message (it may read `output`, the
        node's computed value), that value, the approvers and the deadline. A message that
        does not render fails the node like any template (TemplateProblem)."""
        assert node.approval is not None
        values = await self._values(run_id, context, node, record)
        message = render(node.approval.message, {**values, "output": output})
        deadline = self.clock() + node.approval.timeout_s
        return approval.pending(message, output, node.approval.approvers, deadline)

    async def _await_approval(
        self,
        run_id: str,
        node: Node,
        attempt: int,
        request: dict[str, Any],
        usage: Usage,
        model: str | None,
    ) -> None:
        deadline = float(request["expires_at"])
        if await self.store.await_approval(
            run_id,
            node.id,
            attempt,
            request,
            deadline,
            self.clock(),
            usage,
            model,
            f"waiting for approval: {request['message']}",
        ):
            await self._arm_approval(run_id, node.id, attempt, deadline)

    async def _arm_approval(self, run_id: str, node_id: str, attempt: int, deadline: float) -> None:
        """The timeout (a delayed delivery of the node's current attempt, which `retry`
        recognises), and the process's watcher for decisions made elsewhere, if it has one."""
        await self.retries.schedule(run_id, node_id, attempt, deadline)
        watch = getattr(self.dispatcher, "awaiting_approval", None)
        if watch is not None:
            await watch(run_id, node_id, attempt)

    async def _approval_due(self, record: NodeRecord) -> None:
        """The timeout's delivery: a node still waiting at its deadline is rejected
        (ApprovalTimeout). Early (a timer's rounding), it is armed again."""
        now = self.clock()
        deadline = record.next_attempt_at or 0.0
        if now < deadline:
            await self.retries.schedule(record.run_id, record.node_id, record.attempt, deadline)
            return
        outcome = approval.decided(record, approval.TIMED_OUT, None, None, now)
        if await self.store.decide_approval(
            record.run_id, record.node_id, record.attempt, outcome, now
        ):
            await self.dispatcher.node_finished(record.run_id, record.node_id, outcome.status)

    def approval_step(self, run: RunRecord, node_id: str) -> Approval | None:
        """The node's `approval:` settings (None for a node without); NodeNotFound for a
        node the run does not have."""
        node = self._context_of(run).node(node_id)
        if node is None:
            raise NodeNotFound(run.run_id, node_id)
        return node.approval

    async def decide_approval(
        self,
        run_id: str,
        node_id: str,
        decision: approval.Decision,
        by: str | None,
        comment: str | None = None,
        payload: Any = approval.UNSET,
        *,
        notify: bool = True,
    ) -> NodeRecord:
        """Approve or reject a node waiting for approval; the node as decided. The same
        decision again returns the recorded one (and re-sends node-finished, which a crash
        may have lost); another one raises ApprovalConflict.

        `notify=False` only writes the decision: for a process that runs nothing of the
        run (`agentgraph approve` beside a waiting `agentgraph run`, whose watcher sends
        node-finished; or `agentgraph resume` later)."""
        context = await self._context(run_id)
        if context is None:
            raise RunNotFound(run_id)
        node = context.node(node_id)
        if node is None:
            raise NodeNotFound(run_id, node_id)
        if payload is not approval.UNSET:
            _check_payload(payload)
        if node.approval is None:
            raise ApprovalConflict(f"node {node_id!r} of run {run_id} has no approval step")
        record = await self.store.get_node(run_id, node_id)
        if record is None:
            raise NodeNotFound(run_id, node_id)
        if not approval.already(record, decision):
            now = self.clock()
            outcome = approval.decided(record, decision, by, comment, now, payload)
            if not await self.store.decide_approval(run_id, node_id, record.attempt, outcome, now):
                record = await self.store.get_node(run_id, node_id)  # another decision won
                assert record is not None
                approval.already(record, decision)  # the same: fine; another: conflict
            else:
                record = await self.store.get_node(run_id, node_id)
                assert record is not None
        if notify:
            await self.dispatcher.node_finished(run_id, node_id, record.status)
        return record


def _check_payload(payload: Any) -> None:
    """An edited payload becomes the node's output: the same size limit applies."""
    from agentgraph.engine import MAX_OUTPUT_BYTES

    try:
        size = len(json.dumps(payload, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise RequestInvalid([Problem("payload", f"is not JSON: {exc}")]) from exc
    if size > MAX_OUTPUT_BYTES:
        raise RequestInvalid(
            [Problem("payload", f"is {size:,} bytes; a node output may be {MAX_OUTPUT_BYTES:,}")]
        )
