"""A committed checkpoint with TTL entries on both sides of a cut-off, for the compaction tests.

Four shards of every state kind (restore.state_builder), plus ``recent``, a list state with a TTL.
Everything is first written with the shards' clocks two days back, so every TTL entry of that
round expired a day ago; then a third of the keys get fresh ``expiring`` values and ``recent``
elements at ``now_ms``, which expire a day from now. Compacting with the cut-off ``now_ms`` must
drop exactly the first round's TTL entries. Imported as ``compaction_state`` (the test folder is
on sys.path; ``compaction`` itself is the package under test).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

from restore.state_builder import DAY_MS, STATES, Dump, Expected, NamespaceState
from stateserver.shard import layout
from stateserver.store import ObjectStore
from stateserver.protocol.operations import WriteOp
from stateserver.protocol.states import StateDescriptor, StateKind
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

NAMESPACE = "events"
EPOCH = 3
RECENT = StateDescriptor(name="recent", kind=StateKind.LIST, ttl_ms=DAY_MS)
ALL_STATES = {*STATES, RECENT}


@dataclasses.dataclass(frozen=True)
class TtlCheckpoint:
    metadata: cpb.CheckpointMetadata
    dump: Dump  # every stored entry of the checkpoint
    cutoff_ms: int  # the first round's TTL entries expire before it, the second round's after
    unexpired: Expected  # what reads give after a cleanup at ``cutoff_ms`` (``recent`` aside)
    recent: dict[bytes, list[bytes]]  # the ``recent`` elements that outlive the cut-off


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def build_checkpoint(data_dir: pathlib.Path, store: ObjectStore, *, keys: int = 300,
                     now_ms: int | None = None) -> TtlCheckpoint:
    """Checkpoint 1 of ``NAMESPACE`` in ``store``, 4 shards at writer epoch ``EPOCH``."""
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    source = NamespaceState(data_dir, store, NAMESPACE, parallelism=4, epoch=EPOCH)
    try:
        for shard in source.shards:
            shard.declare_states([RECENT])
        _set_clocks(source, now_ms - 2 * DAY_MS)
        source.write_every_kind(keys)
        every_key = [f"key-{i}".encode() for i in range(keys)]
        source.apply("recent", WriteOp.LIST_APPEND, every_key, [b"old-" + k for k in every_key])
        _set_clocks(source, now_ms)
        fresh = every_key[::3]
        source.apply("expiring", WriteOp.PUT, fresh, [b"fresh-" + k for k in fresh])
        source.apply("recent", WriteOp.LIST_APPEND, fresh, [b"new-" + k for k in fresh])
        metadata = source.checkpoint(1)
        dump = source.dump()
        unexpired = source.expected.copy()
    finally:
        source.close()
    unexpired.expiring = {k: b"fresh-" + k for k in fresh}
    return TtlCheckpoint(metadata=metadata, dump=dump, cutoff_ms=now_ms, unexpired=unexpired,
                         recent={k: [b"new-" + k] for k in fresh})


def without_expired(dump: Dump, cutoff_ms: int) -> Dump:
    """``dump`` less every entry whose TTL expiry is at or before ``cutoff_ms``."""
    def kept(value: bytes) -> bool:
        expires = layout.expires_at(value)
        return expires is None or expires > cutoff_ms

    return {family: {k: v for k, v in entries.items() if kept(v)} for family, entries in dump.items()}


def entry_count(dump: Dump) -> int:
    return sum(len(entries) for entries in dump.values())


def _set_clocks(source: NamespaceState, millis: int) -> None:
    for shard in source.shards:
        shard.clock = lambda: millis
