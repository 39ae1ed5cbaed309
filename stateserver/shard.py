"""A shard: one RocksDB instance holding one namespace's key-group range.

The shard owns its column families (one per state, plus ``_meta`` for its own records),
its writer epoch, and a lock that serialises writes: merges and list appends are
read-modify-writes, made safe by applying one batch at a time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import rocksdict


from stateserver.errors import AlreadyExists, Fenced, InvalidInput, KeyGroupOutOfRange, NotFound, ShardNotOpen, Unavailable
from stateserver.keygroups import KeyGroupRange, stable_hash
from stateserver.limits import Limits
from stateserver.names import check_name
from stateserver.rocks import RocksResources
from stateserver.states import StateDescriptor

META_COLUMN_FAMILY = "_meta"
_EPOCH_KEY = b"epoch"
_STATE_KEY_PREFIX = b"state/"

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class ShardId:
    namespace: str
    key_groups: KeyGroupRange

    def __str__(self) -> str:
        return f"{self.namespace}/{self.key_groups}"


@dataclasses.dataclass(frozen=True)
class OpenState:
    descriptor: StateDescriptor
    table: rocksdict.Rdict  # the column family, for reads and iteration
    handle: rocksdict.ColumnFamily  # for write batches


class Shard:
    def __init__(
        self,
        *,
        shard_id: ShardId,
        max_key_groups: int,
        path: pathlib.Path,
        resources: RocksResources,
        limits: Limits,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.id = shard_id
        self.key_groups = shard_id.key_groups
        self.max_key_groups = max_key_groups
        self.path = path
        self.limits = limits
        self.clock = clock
        self.resources = resources
        self.write_lock = threading.RLock()
        # Batches numbered by the writer are applied in order, whatever thread receives them.
        self._turns = threading.Condition(self.write_lock)
        self.applied_sequence = 0
        self.db = resources.open_db(path)
        self._meta = self._column_family(META_COLUMN_FAMILY)
        stored_epoch = self._meta.get(_EPOCH_KEY)
        self.epoch = int(stored_epoch) if stored_epoch is not None else 0
        self.states: dict[str, OpenState] = {}
        for _key, data in self._meta.items(from_key=_STATE_KEY_PREFIX):
            if not _key.startswith(_STATE_KEY_PREFIX):
                break
            descriptor = StateDescriptor.from_json(data)
            self.states[descriptor.name] = self._open_state(descriptor)
        # Next free position of recently appended lists, keyed by (state, stored prefix).
        self.list_tails: dict[tuple[str, bytes], int] = {}
        self.closed = False
        self.owner_id = ""  # the writer that opened it (OpenShardRequest.owner_id); set by the registry

    # -- lifecycle -------------------------------------------------------------------

    def take_ownership(self, epoch: int) -> None:
        """Let the writer with ``epoch`` own the shard; older epochs are fenced from now on."""
        with self.write_lock:
            if epoch < self.epoch:
                raise Fenced(f"shard {self.id} is owned by epoch {self.epoch}; epoch {epoch} is stale")
            if epoch != self.epoch:
                self._meta.put(_EPOCH_KEY, str(epoch).encode(), _synced())
                self.epoch = epoch
            self.applied_sequence = 0  # the writer numbers its batches afresh after each open
            self._turns.notify_all()

    def reset_epoch(self, epoch: int) -> None:
        """After a restore: the restored epoch record is the old writer's, not this one's."""
        with self.write_lock:
            self._meta.put(_EPOCH_KEY, str(epoch).encode(), _synced())
            self.epoch = epoch

    @staticmethod
    def stored_epoch(path: pathlib.Path, resources: RocksResources) -> int:
        """The writer epoch recorded in a shard directory that is not open."""
        db = resources.open_db(path, read_only=True)
        try:
            if META_COLUMN_FAMILY not in rocksdict.Rdict.list_cf(str(path)):
                return 0
            stored = db.get_column_family(META_COLUMN_FAMILY).get(_EPOCH_KEY)
            return int(stored) if stored is not None else 0
        finally:
            db.close()

    @staticmethod
    def stored_states(path: pathlib.Path, resources: RocksResources) -> dict[str, StateDescriptor]:
        """The states declared in a shard directory that is not open, by name."""
        if not (path / "CURRENT").exists():
            return {}  # no database (yet): nothing declared
        if META_COLUMN_FAMILY not in rocksdict.Rdict.list_cf(str(path)):
            return {}
        db = resources.open_db(path, read_only=True)
        try:
            meta = db.get_column_family(META_COLUMN_FAMILY)
            states = {}
            for key, data in meta.items(from_key=_STATE_KEY_PREFIX):
                if not key.startswith(_STATE_KEY_PREFIX):
                    break
                descriptor = StateDescriptor.from_json(data)
                states[descriptor.name] = descriptor
            return states
        finally:
            db.close()

    def check_writer(self, epoch: int) -> None:
        if self.closed:
            raise ShardNotOpen(f"shard {self.id} is closed; open it again")
        if epoch != self.epoch:
            if epoch < self.epoch:
                raise Fenced(f"shard {self.id} is owned by epoch {self.epoch}; epoch {epoch} is fenced")
            raise ShardNotOpen(f"shard {self.id} is open at epoch {self.epoch}; open it with epoch {epoch} first")

    @contextlib.contextmanager
    def turn(self, sequence: int, epoch: int, timeout: float = 30.0) -> Iterator[None]:
        """Hold the write lock for batch ``sequence`` once every earlier batch was applied.

        A batch uses its turn even when it fails, so later batches are not held up.
        """
        with self.write_lock:
            if sequence:
                arrived = self._turns.wait_for(
                    lambda: self.closed or self.epoch != epoch or sequence <= self.applied_sequence + 1, timeout
                )
                self.check_writer(epoch)
                if not arrived:
                    raise Unavailable(f"shard {self.id}: batch {self.applied_sequence + 1} never arrived; reopen the shard")
                if sequence <= self.applied_sequence:
                    raise InvalidInput(f"shard {self.id}: batch {sequence} was applied before")
            try:
                yield
            finally:
                if sequence:
                    self.applied_sequence = sequence
                    self._turns.notify_all()

    def close(self) -> None:
        with self.write_lock:
            if self.closed:
                return
            self.closed = True
            self.db.flush()  # without a write-ahead log, memtables are the only copy
            self.states.clear()
            self._meta = None  # type: ignore[assignment]  # views must go before the db closes
            self.db.close()

    def column_family_views(self) -> list[rocksdict.Rdict]:
        """The views of every column family the shard holds open: default, ``_meta``, each state.

        Read properties through these, under the write lock while the shard is open. A view
        made and dropped elsewhere flushes its memtable when it goes (rocksdict's Rdict does),
        which cuts an SST that compaction and the next snapshot's upload then pay for.
        """
        return [self.db, self._meta, *(state.table for state in self.states.values())]

    # -- states ----------------------------------------------------------------------

    def declare_states(self, descriptors: Iterable[StateDescriptor]) -> None:
        with self.write_lock:
            descriptors = list(descriptors)
            check_compatible({name: state.descriptor for name, state in self.states.items()}, descriptors)
            for descriptor in descriptors:
                existing = self.states.get(descriptor.name)
                if existing is not None:
                    if existing.descriptor == descriptor:
                        continue
                self._meta.put(_STATE_KEY_PREFIX + descriptor.name.encode(), descriptor.to_json(), _synced())
                self.states[descriptor.name] = (
                    dataclasses.replace(existing, descriptor=descriptor) if existing else self._open_state(descriptor)
                )

    def state(self, name: str) -> OpenState:
        try:
            return self.states[name]
        except KeyError:
            try:
                check_name("state", name)  # a malformed name is bad input, not an unknown state
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            raise NotFound(f"state {name!r} is not declared in shard {self.id}") from None

    def _open_state(self, descriptor: StateDescriptor) -> OpenState:
        table = self._column_family(descriptor.column_family)
        return OpenState(descriptor, table, self.db.get_column_family_handle(descriptor.column_family))

    def _column_family(self, name: str) -> rocksdict.Rdict:
        if name in rocksdict.Rdict.list_cf(str(self.path)):
            return self.db.get_column_family(name)
        return self.db.create_column_family(name, self.resources.options())

    # -- checks ----------------------------------------------------------------------

    def key_groups_of(self, keys: Sequence[bytes]) -> list[int]:
        """The key group of every key, after checking sizes and that each belongs here.

        Written as whole-list operations: this runs for every key of every batch.
        """
        if not keys:
            return []
        if not all(keys):  # an empty key is false
            raise InvalidInput(f"key {[len(k) for k in keys].index(0)} of the batch is empty; keys must not be empty")
        longest = max(map(len, keys))
        if longest > self.limits.max_key_bytes:
            index = [len(k) for k in keys].index(longest)
            raise InvalidInput(f"key {index} of the batch has {longest} bytes; the limit is {self.limits.max_key_bytes}")
        max_key_groups = self.max_key_groups
        key_groups = [h % max_key_groups for h in map(stable_hash, keys)]
        if self.key_groups.start == 0 and self.key_groups.end >= max_key_groups - 1:
            return key_groups  # the shard has every key group: no key can be outside it
        if min(key_groups) < self.key_groups.start or max(key_groups) > self.key_groups.end:
            index = next(i for i, g in enumerate(key_groups) if g not in self.key_groups)
            raise KeyGroupOutOfRange(f"key {index} of the batch is in key group {key_groups[index]}, outside shard {self.id}")
        return key_groups

    def check_value_sizes(self, values: Sequence[bytes], what: str = "value") -> None:
        if values:
            longest = max(map(len, values))
            if longest > self.limits.max_value_bytes:
                index = [len(v) for v in values].index(longest)
                raise InvalidInput(f"{what} {index} of the batch has {longest} bytes; the limit is {self.limits.max_value_bytes}")

    def expiry_for(self, descriptor: StateDescriptor) -> int | None:
        return self.clock() + descriptor.ttl_ms if descriptor.ttl_ms else None


def _synced() -> rocksdict.WriteOptions:
    options = rocksdict.WriteOptions()
    options.sync = True
    return options


def check_compatible(existing: dict[str, StateDescriptor], requested: Iterable[StateDescriptor]) -> None:
    """Raise AlreadyExists if a requested state exists with another kind or merge operator."""
    for descriptor in requested:
        stored = existing.get(descriptor.name)
        if stored is not None and not stored.compatible_with(descriptor):
            raise AlreadyExists(f"state {descriptor.name!r} exists as {_describe(stored)}, not {_describe(descriptor)}")


def _describe(descriptor: StateDescriptor) -> str:
    kind = descriptor.kind.name.lower()
    return f"{kind} state with {descriptor.merge_operator}" if descriptor.merge_operator else f"{kind} state"
