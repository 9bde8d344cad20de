"""An attempt's lease is renewed while it works and it is cancelled when its time is up,
on one timer (agentgraph.attempt_watch)."""

from __future__ import annotations

import asyncio

import pytest

from agentgraph.attempt_watch import AttemptWatch

LEASE_S = 0.3  # a beat every 0.1 s


class Renewals:
    def __init__(self, alive_for: int = 1_000, failing: int = 0) -> None:
        self.calls = 0
        self.alive_for = alive_for  # renewals that find the attempt still running
        self.failing = failing  # first renewals that raise (the store is unavailable)

    async def __call__(self) -> bool:
        self.calls += 1
        if self.calls <= self.failing:
            raise ConnectionError("store unavailable")
        return self.calls <= self.alive_for


def _lease_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("lease ")]


async def test_a_short_attempt_renews_nothing_and_leaves_no_task_behind() -> None:
    renewals = Renewals()
    async with AttemptWatch(renewals, LEASE_S, timeout_s=5, name="lease r/n#1"):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)
    assert renewals.calls == 0
    assert _lease_tasks() == []


async def test_a_long_attempt_renews_every_third_of_its_lease_until_it_ends() -> None:
    renewals = Renewals()
    async with AttemptWatch(renewals, LEASE_S, timeout_s=None, name="lease r/n#1"):
        await asyncio.sleep(0.35)
        assert 2 <= renewals.calls <= 4
        assert len(_lease_tasks()) == 1
    calls = renewals.calls
    await asyncio.sleep(0.25)
    assert renewals.calls == calls  # the heartbeat ended with the block
    assert _lease_tasks() == []


async def test_renewal_stops_once_the_attempt_is_no_longer_running() -> None:
    renewals = Renewals(alive_for=1)
    async with AttemptWatch(renewals, LEASE_S, timeout_s=None, name="lease r/n#1"):
        await asyncio.sleep(0.45)
    assert renewals.calls == 2  # the second renewal learnt the attempt was taken over


async def test_a_renewal_that_fails_is_tried_again_at_the_next_beat() -> None:
    renewals = Renewals(failing=2)
    async with AttemptWatch(renewals, LEASE_S, timeout_s=None, name="lease r/n#1"):
        await asyncio.sleep(0.45)
    assert renewals.calls >= 3


@pytest.mark.parametrize("timeout_s", [0.05, 0.25], ids=["before-first-beat", "after-it"])
async def test_an_attempt_over_its_timeout_is_cancelled_with_a_timeout_error(
    timeout_s: float,
) -> None:
    renewals = Renewals()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        async with AttemptWatch(renewals, LEASE_S, timeout_s, name="lease r/n#1"):
            await asyncio.sleep(10)
    assert timeout_s <= loop.time() - began < timeout_s + 0.2
    assert (renewals.calls > 0) == (timeout_s > LEASE_S / 3)
    assert _lease_tasks() == []
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_timeout_caught_inside_the_block_is_the_blocks_business() -> None:
    async with AttemptWatch(Renewals(), LEASE_S, timeout_s=0.05, name="lease r/n#1"):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(10)
        # The block swallowed the cancellation: it ends normally, as with asyncio.timeout.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def attempt() -> None:
        async with AttemptWatch(Renewals(), LEASE_S, timeout_s=5, name="lease r/n#1"):
            await asyncio.sleep(10)

    task = asyncio.ensure_future(attempt())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_outside_as_the_timeout_expires_is_not_a_timeout() -> None:
    async def attempt() -> None:
        async with AttemptWatch(Renewals(), LEASE_S, timeout_s=0.05, name="lease r/n#1"):
            try:
                await asyncio.sleep(10)
            finally:
                await asyncio.sleep(0.1)  # the timeout fires; then someone cancels

    task = asyncio.ensure_future(attempt())
    await asyncio.sleep(0.08)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
