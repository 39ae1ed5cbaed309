"""Key groups this node learned a newer writer owns elsewhere: what fences an older writer here.

A node fences its shards overlapping key groups that a newer epoch opened on another member (a
worker of the same node, or another node: ``peer_fencing``): it closes them and remembers the
range and epoch, so that the older writer hears Fenced, not "open it first", and cannot open those
key groups here again. The table is bounded: a range forgotten makes a stale writer hear
ShardNotOpen instead, and the ownership records in the snapshot store fence it anyway (invariant 5).
"""
from __future__ import annotations

import collections
import threading

from stateserver.protocol.errors import Fenced
from stateserver.protocol.keygroups import KeyGroupRange

MAX_RECORDS = 4096


class FenceRecords:
    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._lock = threading.Lock()
        # (namespace, start, end) -> the newest epoch that opened it elsewhere, oldest entry first
        self._epochs: collections.OrderedDict[tuple[str, int, int], int] = collections.OrderedDict()
        self._max_records = max_records

    def record(self, namespace: str, key_groups: KeyGroupRange, epoch: int) -> None:
        key = (namespace, key_groups.start, key_groups.end)
        with self._lock:
            self._epochs[key] = max(epoch, self._epochs.pop(key, epoch))
            while len(self._epochs) > self._max_records:
                self._epochs.popitem(last=False)

    def newer(self, namespace: str, start: int, end: int, epoch: int) -> tuple[KeyGroupRange, int] | None:
        """A range overlapping ``start``-``end`` that an epoch newer than ``epoch`` opened, or None."""
        with self._lock:
            if not self._epochs:
                return None
            for (name, other_start, other_end), newer in self._epochs.items():
                if name == namespace and newer > epoch and other_start <= end and start <= other_end:
                    return KeyGroupRange(other_start, other_end), newer
        return None

    def check(self, namespace: str, start: int, end: int, epoch: int) -> None:
        """Raise Fenced if a newer epoch opened overlapping key groups on another member."""
        found = self.newer(namespace, start, end, epoch)
        if found is not None:
            raise fenced(namespace, found, epoch)


def fenced(namespace: str, found: tuple[KeyGroupRange, int], epoch: int) -> Fenced:
    """The error for a writer at ``epoch`` that ``FenceRecords.newer`` found a newer writer for."""
    key_groups, newer = found
    return Fenced(f"key groups {key_groups} of {namespace!r} are owned by epoch {newer} on another member of "
                  f"the cluster; epoch {epoch} is fenced")
