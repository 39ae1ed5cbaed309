"""A shard: one RocksDB instance holding one namespace's key-group range.

The shard owns its column families (one per state, plus ``_meta`` for its own records),
its writer epoch, and a lock that serialises writes: merges and list appends are
read-modify-writes, made safe by applying one batch at a time.

Everything that uses the database holds a lease on the shard (``with shard.lease():``) for as
long as it does, as Flink's ``ResourceGuard``: ``close`` refuses new leases (ShardClosed) and
closes RocksDB only after the leases in flight ended. A column family or iterator still alive
when the database closes would keep RocksDB's lock file held, and the next open of the shard's
directory would fail. A RocksDB failure for want of a resource (a full disk) inside a lease
becomes ResourceExhausted and marks the shard broken: RocksDB is then in its background-error
state, refuses every write, and only a reopen from a checkpoint brings the shard back.

The order a writer's batches are applied in, and its session's failure, are ``session``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import rocksdict


from stateserver.protocol.errors import (
    AlreadyExists, Fenced, InvalidInput, KeyGroupOutOfRange, NotFound, ResourceExhausted, RestoreRequired,
    ShardClosed, ShardNotOpen, StateServerError,
)
from stateserver.protocol.keygroups import KeyGroupRange, key_groups_for
from stateserver.protocol.limits import Limits
from stateserver.protocol.names import check_name
from stateserver.shard.resource_guard import GuardClosed, ResourceGuard
from stateserver.shard.rocks import RocksResources
from stateserver.shard.session import WriterSession, WriterTurns
from stateserver.protocol.states import StateDescriptor
from stateserver.shard.storage_errors import resource_cause

log = logging.getLogger(__name__)

META_COLUMN_FAMILY = "_meta"
_EPOCH_KEY = b"epoch"
_STATE_KEY_PREFIX = b"state/"
# How long a close waits for the requests in flight (each a few milliseconds; a write waiting
# for its turn gives up as soon as the close starts). Past it, the close goes on and logs it.
LEASE_WAIT_SECONDS = 10.0
_FLUSH_WAIT_SECONDS = 60.0

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


class Shard(WriterTurns):
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
        self.session = WriterSession()
        self.changes = 0
        self._arrivals_lock = threading.Lock()  # arrivals register without waiting for the write lock
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
        self.closed = False  # set when the close starts; the database closes once the leases ended
        self.guard = ResourceGuard()
        self._released = threading.Event()
        # Why RocksDB failed for want of a resource (it then refuses writes); None while healthy.
        self.broken: str | None = None
        self.owner_id = ""  # the writer that opened it (OpenShardRequest.owner_id); set by the registry

    @contextlib.contextmanager
    def lease(self, *, writing: bool = False) -> Iterator[None]:
        """Use the database for the ``with`` block: it stays open until the block ends.

        ShardClosed once the shard is closing; ResourceExhausted at once for a write to a broken
        shard, and for any failure of RocksDB inside the block that says a resource ran out.
        """
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.guard.lease())
            except GuardClosed:
                raise ShardClosed(f"shard {self.id} is closed; reopen it (OpenShard) and retry") from None
            if writing and self.broken is not None:
                raise self._exhausted(self.broken)
            try:
                yield
            except StateServerError:
                raise
            except Exception as exc:
                cause = resource_cause(exc)
                if cause is None:
                    raise
                self._mark_broken(cause)
                raise self._exhausted(cause) from exc

    def _mark_broken(self, cause: str) -> None:
        if self.broken is None:
            self.broken = cause
            log.error("shard broken: RocksDB ran out of a resource and refuses writes until the shard is "
                      "reopened from a checkpoint", extra={"namespace": self.id.namespace, "shard": str(self.id),
                                                            "cause": cause})

    def _exhausted(self, cause: str) -> ResourceExhausted:
        return ResourceExhausted(f"shard {self.id} cannot write: {cause}; free the resource on the node, then reopen "
                                 f"the shard from its last checkpoint (writes since it were not persisted)")

    # -- lifecycle -------------------------------------------------------------------

    def take_ownership(self, epoch: int) -> None:
        """Let the writer with ``epoch`` own the shard; older epochs are fenced from now on.

        A shard whose session failed, or that is broken, is not taken over as it is: only a shard
        built afresh (restored from a checkpoint, or empty) starts a session again.
        """
        with self.lease(), self.write_lock:
            if epoch < self.epoch:
                raise Fenced(f"shard {self.id} is owned by epoch {self.epoch}; epoch {epoch} is stale")
            if self.broken is not None:  # its memtables may hold writes the disk never got
                raise RestoreRequired(f"shard {self.id} is broken ({self.broken}); free the resource, then reopen "
                                      f"it from a checkpoint (restore)")
            if self.session.failure:
                raise RestoreRequired(f"shard {self.id}: {self.session.failure}; "
                                      "reopen it from a checkpoint (or empty)")
            if epoch != self.epoch:
                self._meta.put(_EPOCH_KEY, str(epoch).encode(), _logged())
                self.epoch = epoch
            self.session = WriterSession()  # the writer numbers its batches afresh after each open
            self._turns.notify_all()

    def reset_epoch(self, epoch: int) -> None:
        """After a restore: the restored epoch record is the old writer's, not this one's."""
        with self.lease(), self.write_lock:
            self._meta.put(_EPOCH_KEY, str(epoch).encode(), _logged())
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
            raise ShardClosed(f"shard {self.id} is closed; reopen it (OpenShard) and retry")
        if epoch != self.epoch:
            if epoch < self.epoch:
                raise Fenced(f"shard {self.id} is owned by epoch {self.epoch}; epoch {epoch} is fenced")
            raise ShardNotOpen(f"shard {self.id} is open at epoch {self.epoch}; open it with epoch {epoch} first")

    def close(self, lease_wait: float = LEASE_WAIT_SECONDS) -> None:
        """Refuse new requests, wait for those in flight, flush and close RocksDB.

        The database is released even when the flush fails (a broken shard): its writes since
        the last flush are then lost, and the shard comes back from a checkpoint. Callers must
        not hold a lock that lease holders take (the registry's lock is fine: none takes it).
        A second close returns once the first one has released the database.
        """
        with self.write_lock:
            closing = not self.closed
            self.closed = True
            self._turns.notify_all()  # batches waiting for their turn give up now (check_writer)
        if not closing:  # bounded: the first closer's flush may hang on a failing disk
            self._released.wait(lease_wait + _FLUSH_WAIT_SECONDS)
            return
        started = time.monotonic()
        if not self.guard.close(lease_wait):
            log.warning("shard closing with requests still in flight", extra={
                "namespace": self.id.namespace, "shard": str(self.id), "leases": self.guard.leases,
                "waited_s": round(time.monotonic() - started, 3)})
        try:
            with self.write_lock:
                self._release()
        finally:
            self._released.set()

    def _release(self) -> None:
        fields = {"namespace": self.id.namespace, "shard": str(self.id)}
        try:
            self.db.flush()  # without a write-ahead log, memtables are the only copy
        except Exception as exc:
            cause = resource_cause(exc)
            self._mark_broken(cause or str(exc))
            log.error("shard flush at close failed; its writes since the last flush are lost",
                      extra={**fields, "error": str(exc)})
        self.states.clear()
        self._meta = None  # type: ignore[assignment]  # views must go before the db closes
        try:
            self.db.close()  # drops the database even when its own flush fails
        except Exception as exc:
            if self.broken is None:
                raise
            log.info("shard database released after a failed flush", extra={**fields, "error": str(exc)})

    def column_family_views(self) -> list[rocksdict.Rdict]:
        """The views of every column family the shard holds open: default, ``_meta``, each state.

        Read properties through these, under a lease and the write lock (``states`` changes under
        it). A view made and dropped elsewhere flushes its memtable when it goes (rocksdict's Rdict
        does), which cuts an SST that compaction and the next snapshot's upload then pay for.
        """
        return [self.db, self._meta, *(state.table for state in self.states.values())]

    # -- states ----------------------------------------------------------------------

    def declare_states(self, descriptors: Iterable[StateDescriptor]) -> None:
        with self.lease(), self.write_lock:
            descriptors = list(descriptors)
            check_compatible({name: state.descriptor for name, state in self.states.items()}, descriptors)
            for descriptor in descriptors:
                existing = self.states.get(descriptor.name)
                if existing is not None:
                    if existing.descriptor == descriptor:
                        continue
                self._meta.put(_STATE_KEY_PREFIX + descriptor.name.encode(), descriptor.to_json(), _logged())
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
        key_groups = key_groups_for(keys, max_key_groups)
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


def _logged() -> rocksdict.WriteOptions:
    """The shard's own records (epoch, states): in the write-ahead log, not fsynced. A directory
    is served as it is after a restart only with a clean-close record, written after a flush
    (invariant 8); after a crash it is restored. An fsync here cost an open up to ~0.2 s while
    a failover's downloads filled the page cache (measured with stateserver_shard_open_phase_seconds)."""
    return rocksdict.WriteOptions()


def check_compatible(existing: dict[str, StateDescriptor], requested: Iterable[StateDescriptor]) -> None:
    """Raise AlreadyExists if a requested state exists with another kind or merge operator."""
    for descriptor in requested:
        stored = existing.get(descriptor.name)
        if stored is not None and not stored.compatible_with(descriptor):
            raise AlreadyExists(f"state {descriptor.name!r} exists as {_describe(stored)}, not {_describe(descriptor)}")


def _describe(descriptor: StateDescriptor) -> str:
    kind = descriptor.kind.name.lower()
    return f"{kind} state with {descriptor.merge_operator}" if descriptor.merge_operator else f"{kind} state"
