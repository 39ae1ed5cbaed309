"""The lease guard each shard closes behind (after Flink's ResourceGuard)."""
from __future__ import annotations

import threading
import time

import pytest

from stateserver.shard.resource_guard import GuardClosed, ResourceGuard
from support.waiting import wait_until


def test_close_waits_for_the_lease_in_flight_and_refuses_new_ones() -> None:
    guard = ResourceGuard()
    leased, release = threading.Event(), threading.Event()
    ended: list[float] = []

    def user() -> None:
        with guard.lease():
            leased.set()
            release.wait(5)
            ended.append(time.monotonic())

    thread = threading.Thread(target=user)
    thread.start()
    assert leased.wait(5)
    closer = threading.Thread(target=lambda: ended.append(guard.close(timeout=5)))
    closer.start()
    # Until the closer has begun (polled: a fixed 50 ms sleep is not enough on a busy machine).
    wait_until(lambda: guard.closed, 5, "the close to begin")
    assert closer.is_alive()  # closing, still waiting for the lease
    with pytest.raises(GuardClosed):
        with guard.lease():
            pass
    release.set()
    thread.join(5)
    closer.join(5)
    assert ended[1] is True and guard.leases == 0


def test_close_gives_up_after_its_timeout() -> None:
    guard = ResourceGuard()
    with guard.lease():
        started = time.monotonic()
        assert guard.close(timeout=0.05) is False
        assert time.monotonic() - started < 2
    assert guard.close(timeout=0) is True  # the lease ended: nothing left to wait for
