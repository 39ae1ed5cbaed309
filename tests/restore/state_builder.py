"""Checkpointed state for restore, GC and CLI tests, made by the node's own code path.

``NamespaceState`` opens a namespace's shards in a real data directory (ShardRegistry, RocksDB),
writes every kind of state through ``apply_write_batch``, takes shard snapshots with
``ShardSnapshots`` (sync phase + incremental upload) and commits them with the catalog, as a node
and its coordinator do. ``expected`` is a plain-Python model of what the writes mean, and ``dump``
the raw stored entries, to compare restored shards against.

Imported by other test folders as ``restore.state_builder`` (tests/ is on sys.path).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import random
from collections.abc import Iterator, Sequence

import rocksdict

from stateserver.protocol import merge_operators
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol.keygroups import KeyGroupRange, key_group_for, key_group_of_stored_key, ranges_for_parallelism
from stateserver.protocol.limits import Limits
from stateserver.store import ObjectStore
from stateserver.protocol.operations import Batch, WriteOp
from stateserver.node.registry import ShardRegistry
from stateserver.shard.rocks import RocksResources, RocksTuning
from stateserver.shard.shard import Shard
from stateserver.shard.writes import apply_write_batch
from stateserver.snapshot import ShardSnapshots, SnapshotStatus
from stateserver.protocol.states import StateDescriptor, StateKind
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

MAX_KEY_GROUPS = 128
DAY_MS = 86_400_000
STATES = (
    StateDescriptor(name="values", kind=StateKind.VALUE),
    StateDescriptor(name="lists", kind=StateKind.LIST),
    StateDescriptor(name="maps", kind=StateKind.MAP),
    StateDescriptor(name="sums", kind=StateKind.AGGREGATING, merge_operator="sum_int64"),
    StateDescriptor(name="expiring", kind=StateKind.VALUE, ttl_ms=DAY_MS),
)
# Raw contents of shards: column family -> stored key -> stored value.
Dump = dict[str, dict[bytes, bytes]]


def small_resources() -> RocksResources:
    return RocksResources(RocksTuning(block_cache_bytes=16 << 20, write_buffer_bytes=64 << 20, memtable_bytes=4 << 20))


@dataclasses.dataclass
class Expected:
    """What the writes mean, state by state, keyed by the raw key."""

    values: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    lists: dict[bytes, list[bytes]] = dataclasses.field(default_factory=dict)
    maps: dict[bytes, dict[bytes, bytes]] = dataclasses.field(default_factory=dict)
    sums: dict[bytes, int] = dataclasses.field(default_factory=dict)
    expiring: dict[bytes, bytes] = dataclasses.field(default_factory=dict)

    def copy(self) -> Expected:
        return Expected(values=dict(self.values), lists={k: list(v) for k, v in self.lists.items()},
                        maps={k: dict(v) for k, v in self.maps.items()}, sums=dict(self.sums),
                        expiring=dict(self.expiring))


class NamespaceState:
    """One namespace, ``parallelism`` shards on local disk, checkpointed into ``store``."""

    def __init__(self, data_dir: pathlib.Path, store: ObjectStore, namespace: str, *, parallelism: int,
                 max_key_groups: int = MAX_KEY_GROUPS, epoch: int = 1) -> None:
        self.namespace = namespace
        self.store = store
        self.max_key_groups = max_key_groups
        self.epoch = epoch
        self.registry = ShardRegistry(data_dir, small_resources(), Limits())
        self.registry.create_namespace(namespace, max_key_groups)
        self.ranges = ranges_for_parallelism(max_key_groups, parallelism)
        self.shards = [self.registry.open_shard(namespace, r.start, r.end, epoch, STATES) for r in self.ranges]
        self.file_executor = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="test-transfer")
        self.snapshot_executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="test-snapshot")
        self.snapshots = [ShardSnapshots(shard, store, work_dir=data_dir / "work" / str(shard.key_groups),
                                         snapshot_executor=self.snapshot_executor, file_executor=self.file_executor)
                          for shard in self.shards]
        self.catalog = CheckpointCatalog(store)
        self.expected = Expected()
        self._random = random.Random(f"{namespace}-{parallelism}")
        self._next_key = 0

    # -- writing --------------------------------------------------------------------------

    def apply(self, state: str, op: WriteOp, keys: Sequence[bytes], values: Sequence[bytes] = (),
              map_keys: Sequence[bytes] = ()) -> None:
        """One operation per key, sent to each key's shard as one batch."""
        per_shard: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            per_shard.setdefault(self.shard_index(key), []).append(i)
        for index, positions in per_shard.items():
            batch = Batch(ops=bytes([op]) * len(positions), states=[state], state_indexes=[],
                          keys=[keys[i] for i in positions], values=[values[i] for i in positions] if values else (),
                          map_keys=[map_keys[i] for i in positions] if map_keys else ())
            apply_write_batch(self.shards[index], batch, epoch=self.epoch)

    def shard_index(self, key: bytes) -> int:
        group = key_group_for(key, self.max_key_groups)
        return next(i for i, r in enumerate(self.ranges) if group in r)

    def write_every_kind(self, count: int) -> None:
        """``count`` new keys in every state, plus changes to some keys written before."""
        rng = self._random
        old = [f"key-{i}".encode() for i in rng.sample(range(self._next_key), min(self._next_key, count // 5))]
        keys = [f"key-{i}".encode() for i in range(self._next_key, self._next_key + count)]
        self._next_key += count
        touched = keys + old
        values = [rng.randbytes(rng.randint(1, 64)) for _ in touched]
        self.apply("values", WriteOp.PUT, touched, values)
        self.expected.values.update(zip(touched, values))
        self.apply("expiring", WriteOp.PUT, touched, values)
        self.expected.expiring.update(zip(touched, values))
        for _round in range(2):
            elements = [rng.randbytes(8) for _ in touched]
            self.apply("lists", WriteOp.LIST_APPEND, touched, elements)
            for key, element in zip(touched, elements):
                self.expected.lists.setdefault(key, []).append(element)
            map_keys = [f"m{rng.randint(0, 3)}".encode() for _ in touched]
            self.apply("maps", WriteOp.MAP_PUT, touched, elements, map_keys)
            for key, map_key, element in zip(touched, map_keys, elements):
                self.expected.maps.setdefault(key, {})[map_key] = element
            amounts = [rng.randint(-1000, 1000) for _ in touched]
            self.apply("sums", WriteOp.MERGE, touched, [merge_operators.encode_int64(a) for a in amounts])
            for key, amount in zip(touched, amounts):
                self.expected.sums[key] = self.expected.sums.get(key, 0) + amount
        removed = old[: len(old) // 2]
        self.apply("values", WriteOp.DELETE, removed)
        self.apply("lists", WriteOp.CLEAR, removed)
        for key in removed:
            self.expected.values.pop(key, None)
            self.expected.lists.pop(key, None)

    # -- checkpoints ------------------------------------------------------------------------

    def snapshot(self, checkpoint_id: int) -> list[cpb.ShardSnapshotHandle]:
        """Sync phase on every shard, then wait for the uploads: the durable shard snapshots."""
        for snapshots in self.snapshots:
            snapshots.start(checkpoint_id, self.epoch)
        handles = []
        for snapshots in self.snapshots:
            status, result, error = snapshots.status(checkpoint_id, timeout=60)
            assert status is SnapshotStatus.DURABLE and result is not None, error
            handles.append(result.handle)
        return handles

    def checkpoint(self, checkpoint_id: int) -> cpb.CheckpointMetadata:
        """Snapshot, commit, and tell the shards (their uploads become reusable)."""
        self.catalog.commit(self.namespace, checkpoint_id, self.snapshot(checkpoint_id))
        for snapshots in self.snapshots:
            snapshots.complete(checkpoint_id)
        return self.catalog.load(self.namespace, checkpoint_id)

    def dump(self) -> Dump:
        return merge_dumps([dump_shard(shard) for shard in self.shards])

    def close(self) -> None:
        for snapshots in self.snapshots:
            snapshots.close()
        self.snapshot_executor.shutdown(wait=True)
        self.file_executor.shutdown(wait=True)
        self.registry.close_all()


# -- reading shards back ----------------------------------------------------------------------


def dump_shard(shard: Shard) -> Dump:
    """Every stored entry of every state of an open shard."""
    return {state.descriptor.column_family: dict(state.table.items())  # type: ignore[arg-type]
            for state in shard.states.values()}


def merge_dumps(dumps: Sequence[Dump]) -> Dump:
    """The union of shard dumps; asserts no key is in two of them."""
    merged: Dump = {}
    for dump in dumps:
        for family, entries in dump.items():
            into = merged.setdefault(family, {})
            assert not into.keys() & entries.keys(), f"keys of {family} are in two shards"
            into.update(entries)
    return merged


def key_groups_in(dump: Dump) -> set[int]:
    return {key_group_of_stored_key(key) for entries in dump.values() for key in entries}


def open_restored(path: pathlib.Path, namespace: str, key_groups: KeyGroupRange,
                  max_key_groups: int = MAX_KEY_GROUPS) -> Shard:
    from stateserver.shard.shard import ShardId

    return Shard(shard_id=ShardId(namespace, key_groups), max_key_groups=max_key_groups, path=path,
                 resources=small_resources(), limits=Limits())


def column_families(path: pathlib.Path) -> list[str]:
    return sorted(rocksdict.Rdict.list_cf(str(path)))


def iter_chunks(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def assert_reads(shards: Sequence[Shard], expected: Expected) -> None:
    """Read every expected key through the shard read path (as the node serves it) and compare."""
    from stateserver.protocol import wire
    from stateserver.protocol.operations import ReadOp
    from stateserver.shard.reads import read_batch

    def owner(key: bytes) -> Shard:
        group = key_group_for(key, shards[0].max_key_groups)
        return next(s for s in shards if group in s.key_groups)

    def read(state: str, op: ReadOp, keys: list[bytes], map_keys: list[bytes] | None = None) -> list[bytes | None]:
        results: list[bytes | None] = [None] * len(keys)
        by_shard: dict[int, list[int]] = {}  # the keys of one batch must belong to one shard
        for i, key in enumerate(keys):
            by_shard.setdefault(id(owner(key)), []).append(i)
        for positions in by_shard.values():
            batch = Batch(ops=bytes([op]) * len(positions), states=[state], state_indexes=[],
                          keys=[keys[i] for i in positions],
                          map_keys=[map_keys[i] for i in positions] if map_keys else ())
            for i, value in zip(positions, read_batch(owner(keys[positions[0]]), batch)):
                results[i] = value
        return results

    for state in ("values", "expiring"):
        table: dict[bytes, bytes] = getattr(expected, state)
        assert read(state, ReadOp.GET, list(table)) == list(table.values()), state
    sums = list(expected.sums)
    assert [merge_operators.decode_int64(v) if v is not None else None for v in read("sums", ReadOp.GET, sums)] \
        == [expected.sums[k] for k in sums]
    lists = list(expected.lists)
    assert [wire.unpack_list(v) if v is not None else [] for v in read("lists", ReadOp.GET_LIST, lists)] \
        == [expected.lists[k] for k in lists]
    pairs = [(key, map_key) for key, entries in expected.maps.items() for map_key in entries]
    found = read("maps", ReadOp.MAP_GET, [k for k, _ in pairs], [m for _, m in pairs])
    assert found == [expected.maps[k][m] for k, m in pairs]
