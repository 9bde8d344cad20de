"""How long a node may run on the serverless backend: the one source of truth.

A node's `timeout_s` bounds its work inside exec-<pool>. Around that work the function
claims the node, reads its inputs, writes its output and does the node's fan-in (its
arrivals, its children's decisions and node-ready messages), and the whole push must end
before two clocks that are not ours:
- the exec function's timeout (Cloud Run kills the request), and
- the push subscription's ack deadline (Pub/Sub redelivers an unanswered push; it is
  `ack_deadline_s(function timeout)`, at most Pub/Sub's 600 s).
A `timeout_s` longer than both allow (less `HANDLING_MARGIN_S` for the work around the
call) could never finish as configured: the platform would kill or redeliver it first,
so validation refuses it and names the field.

infra/ sets each pool's function timeout (`var.pools[*].timeout_s`, default
`EXEC_TIMEOUT_S`) and its ack deadline with the same formula as `ack_deadline_s`, and passes
the timeouts to the functions as `AGENTGRAPH_POOL_TIMEOUTS` ("default=540,big=900");
tests/infra holds the Terraform to these constants. The local backend has no function
timeout: it keeps the graph schema's own bound (`LOCAL_MAX_TIMEOUT_S`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

EXEC_TIMEOUT_S = 540  # exec-<pool>'s function timeout unless the pool says otherwise
ACK_DEADLINE_MIN_S = 10  # Pub/Sub's bounds on a subscription's ack deadline
ACK_DEADLINE_MAX_S = 600
HANDLING_MARGIN_S = 30  # claim, input reads, output write and the node's fan-in
LOCAL_MAX_TIMEOUT_S = 3600.0  # the graph schema's bound (core/model.py), local backend


def ack_deadline_s(function_timeout_s: float) -> int:
    """The ack deadline infra/ gives a pool's push subscription (pubsub.tf)."""
    return int(min(ACK_DEADLINE_MAX_S, max(ACK_DEADLINE_MIN_S, function_timeout_s)))


def max_node_timeout_s(function_timeout_s: float) -> float:
    """The longest `timeout_s` a node of a pool with this function timeout may ask for."""
    return min(function_timeout_s, ack_deadline_s(function_timeout_s)) - HANDLING_MARGIN_S


def parse_pool_timeouts(text: str) -> dict[str, float]:
    """`pool=seconds,...` as infra/ writes it; ValueError on anything else."""
    found: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        pool, sep, seconds = item.partition("=")
        if not sep or not pool.strip():
            raise ValueError(f"expected pool=seconds, found {item!r}")
        found[pool.strip()] = float(seconds)
    return found


@dataclass(frozen=True)
class TimeoutBound:
    """Each pool's function timeout; a pool not named gets `default_s` (infra's default)."""

    pools: Mapping[str, float] = field(default_factory=dict)
    default_s: float = EXEC_TIMEOUT_S

    def function_timeout_s(self, pool: str) -> float:
        return self.pools.get(pool, self.default_s)

    def max_for(self, pool: str) -> float:
        return max_node_timeout_s(self.function_timeout_s(pool))

    def problem(self, pool: str, timeout_s: float) -> str | None:
        """Why `timeout_s` is too long for `pool`, or None when it fits."""
        limit = self.max_for(pool)
        if timeout_s <= limit:
            return None
        function_s = self.function_timeout_s(pool)
        return (
            f"timeout_s={timeout_s:g} is longer than pool {pool!r} allows: at most "
            f"{limit:g} s (the exec-{pool} function's timeout is {function_s:g} s and its "
            f"Pub/Sub ack deadline {ack_deadline_s(function_s)} s, less {HANDLING_MARGIN_S} s "
            "to claim the node and record its result); lower timeout_s or deploy the pool "
            "with a longer timeout_s in infra/"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str) -> TimeoutBound:
        return cls(parse_pool_timeouts(env.get(name, "")))
