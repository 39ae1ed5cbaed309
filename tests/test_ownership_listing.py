"""Ownership listings shared by concurrent opens (``stateserver.ownership.shared_listing``), on a
real file:// store: many callers at once make at most two LISTs, and each still sees every record
written before it asked (fencing, invariant 11).

Fails on the code before the change: every ``Ownership.records`` call made a LIST of its own
(a failover of tens of shards made three per shard, over a list that grows with shards x epochs).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stateserver.ownership.claims import Ownership
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.store import ObjectMeta, ObjectStore, open_store, paths

NAMESPACE = "shared-listing"


class GatedLists:
    """The real store; its LISTs are counted, and the first one waits at a gate once it has read."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.lists = 0
        self.first_listed = threading.Event()
        self.gate = threading.Event()
        self._lock = threading.Lock()

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        with self._lock:
            self.lists += 1
            number = self.lists
        listing = list(self.inner.list(prefix))
        if number == 1:
            self.first_listed.set()
            self.gate.wait(10)
        return iter(listing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_concurrent_callers_share_listings_and_each_sees_the_records_written_before_it_asked(tmp_path: Path) -> None:
    store = GatedLists(open_store((tmp_path / "store").as_uri()))
    ownership = Ownership(store)  # type: ignore[arg-type]
    store.gate.set()  # open while the claim runs
    ownership.claim(NAMESPACE, KeyGroupRange(0, 9), 1, "node-a", owner_id="w1")
    lists_by_claim = store.lists
    store.first_listed.clear()
    store.gate.clear()
    store.lists = 0

    results: dict[str, list[int]] = {}
    first = threading.Thread(target=lambda: results.__setitem__("first", [r.epoch for r in ownership.records(NAMESPACE)]))
    first.start()
    assert store.first_listed.wait(10)  # the first LIST has read; it has not returned yet
    # A record written now is missed by that LIST: every caller that asks from now on must see it.
    store.inner.put_if_absent(paths.owner_record(NAMESPACE, KeyGroupRange(10, 19), 2), b"{}")
    later = [threading.Thread(target=lambda i=i: results.__setitem__(f"later-{i}",
                                                                      [r.epoch for r in ownership.records(NAMESPACE)]))
             for i in range(12)]
    for thread in later:
        thread.start()
    store.gate.set()
    for thread in [first, *later]:
        thread.join(10)

    assert lists_by_claim >= 2, "a claim checks before and after its create-only write"
    assert results["first"] == [1]
    assert all(sorted(results[f"later-{i}"]) == [1, 2] for i in range(12)), results
    assert store.lists == 2, f"13 callers, {store.lists} LISTs: the 12 late ones share one"
