"""One timer per attempt for both of its clocks: the lease's heartbeat and the timeout.

While an attempt works, its lease is renewed every third of it, and the attempt is
cancelled when its node's `timeout_s` is up. Most attempts end well within a third of
their lease, so all they need of either clock is a timer set and cancelled: one timer,
set for whichever comes first, and a plain class instead of `asyncio.timeout` inside a
generator-based `_leased` (the two timers and two context managers were 23 µs of a
node's 290 on the local engine). The heartbeat's task is made only when the first beat
is due, and the timeout behaves as `asyncio.timeout`'s: the block's CancelledError
becomes TimeoutError, unless someone else also cancelled the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

log = logging.getLogger(__name__)

BEATS_PER_LEASE = 3  # a lease is renewed every third of it: two beats may fail in a row


class AttemptWatch:
    """`async with AttemptWatch(renew, lease_s, timeout_s, name):` runs the block with its
    lease renewed by `renew()` every `lease_s / 3` until `renew` says the attempt is no
    longer running, and cancels it after `timeout_s` (None: never), raising TimeoutError
    out of the block. A renewal that raises is logged and tried again at the next beat
    (the lease has two more beats before it lapses)."""

    __slots__ = (
        "_beat_s",
        "_cancelling",
        "_deadline",
        "_expired",
        "_heartbeat",
        "_name",
        "_renew",
        "_task",
        "_timeout_s",
        "_timer",
    )

    def __init__(
        self,
        renew: Callable[[], Awaitable[bool]],
        lease_s: float,
        timeout_s: float | None,
        name: str,
    ) -> None:
        self._renew = renew
        self._beat_s = lease_s / BEATS_PER_LEASE
        self._timeout_s = timeout_s
        self._name = name
        self._deadline: float | None = None
        self._expired = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("AttemptWatch must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = asyncio.get_running_loop()
        now = loop.time()
        first_beat = now + self._beat_s
        if self._timeout_s is not None:
            self._deadline = now + self._timeout_s
            if self._deadline <= first_beat:
                self._timer = loop.call_at(self._deadline, self._expire)
                return
        self._timer = loop.call_at(first_beat, self._first_beat)

    def _first_beat(self) -> None:
        self._heartbeat = asyncio.ensure_future(self._beat())
        self._heartbeat.set_name(self._name)
        self._timer = None
        if self._deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        assert self._task is not None
        self._timer = None
        self._expired = True
        self._task.cancel()

    async def _beat(self) -> None:
        while True:
            try:
                alive = await self._renew()
            except Exception:  # the store is briefly unavailable: try at the next beat
                log.warning("renewing the lease of %s failed", self._name, exc_info=True)
                alive = True
            if not alive:
                return
            await asyncio.sleep(self._beat_s)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        assert self._task is not None
        # As asyncio.timeout: only a cancellation that was ours alone becomes TimeoutError.
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
