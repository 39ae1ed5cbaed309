"""One shard's requests without I/O: writes buffered and cut into numbered batches, the batches
in flight, reads queued, packed into ReadBatch requests and answered with the writer's own writes.

Both faces drive it: the sync session sends a sealed batch at once and blocks for replies; the
asyncio session's pump task sends what is sealed or queued. The core never blocks, sleeps or
touches a channel; it tells the face what to send (``on_sealed``, ``next_write``, ``next_read``)
and is told the outcomes (``answered``, ``read_failed``, ``applied``).
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from stateserver.client._buffer import WriteBuffer, read_request, read_results
from stateserver.client._errors import InvalidArgumentError, OutOfOrderError
from stateserver.client._failure import MAX_RESENDS, WriterFailure
from stateserver.client._node_limits import OVERHEAD_PER_OP, NodeLimits
from stateserver.client._overlays import resolve_read
from stateserver.protocol.errors import ReplyTooLarge
from stateserver.protocol.keygroups import KeyGroupRange, stable_hash
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchLimits:
    # 4000, not 1000: with small entries the node's CPU per put key fell by about a quarter
    # (RocksDB's own work per key falls with the batch) and puts went from ~300k/s to ~400k/s
    # on a 2-worker node (benchmarks/results/acceptance.md); a batch is still at most max_bytes.
    max_ops: int = 4000
    max_bytes: int = 4 << 20
    # Write batches in flight per shard: the node applies them in sequence order, and a
    # queued batch keeps it busy while the client fills the next.
    max_in_flight: int = 4
    # While every batch in flight is still being applied, the next batch keeps filling up to
    # this many operations instead of waiting for one: under load batches grow, and the node's
    # cost per batch (gRPC call, thread hand-offs, sequencing: about a third of its time with
    # 1000-op batches) is spread over more keys. Idle, batches leave at max_ops as before.
    max_ops_when_busy: int = 16000


def read_batch_size(count: int, limits: BatchLimits) -> int:
    """Reads per batch for ``count`` reads sent at once: ``max_in_flight`` batches, each of
    ``max_ops`` to ``max_ops_when_busy`` reads (measured, 16,000 random gets: batches of 4000
    instead of 1000 cut node CPU 3.7 -> 3.3 and client CPU 1.05 -> 0.9 us a key, +10-15%)."""
    return max(limits.max_ops, min(limits.max_ops_when_busy, -(-count // limits.max_in_flight)))


def within_node_limits(limits: BatchLimits, node: NodeLimits) -> BatchLimits:
    """The client's batch sizes, cut to what the node accepts (operations, message bytes)."""
    return dataclasses.replace(limits, max_ops=min(limits.max_ops, node.max_batch_ops),
                               max_ops_when_busy=min(limits.max_ops_when_busy, node.max_batch_ops),
                               max_bytes=min(limits.max_bytes, node.max_request_bytes))


@dataclasses.dataclass(slots=True, eq=False)
class WriteInFlight:
    """A numbered write batch, from its sending until its outcome is known."""

    request: pb.WriteBatchRequest  # kept to be sent again if it overtook its predecessor
    count: int
    buffer: WriteBuffer
    call: Any = None  # the face's handle of the RPC (a pending call, a task)
    settled: bool = False
    _keys: set[tuple[str, bytes]] | None = None

    def touches(self, state: str, key: bytes) -> bool:
        if self._keys is None:  # built only when a read has to ask
            names = self.buffer.state_names
            self._keys = set(zip([names[i] for i in self.buffer.state_indexes], self.buffer.keys))
        return (state, key) in self._keys


@dataclasses.dataclass(slots=True, eq=False)
class ReadGroup:
    """The reads of one call (one key or many): answered together, in the order of ``keys``."""

    op: ReadOp
    state: str
    keys: Sequence[bytes]
    map_keys: Sequence[bytes]
    merge_operator: str
    sink: Any = None  # the face's: what to settle once the group is answered
    permits: int = 0  # the asyncio face's outstanding permits held by the group
    results: list[bytes | None] = dataclasses.field(default_factory=list)
    missing: int = 0
    # Single-key reads of many callers, joined into one group while it waits to be sent (the
    # asyncio face's gathered gets): one group, not one per key; ``sink`` is then per key.
    joinable: bool = False
    key_groups: Sequence[int] | None = None  # of ``keys``, when the router computed them

    @property
    def done(self) -> bool:
        return self.missing == 0


@dataclasses.dataclass(slots=True, eq=False)
class ReadBatch:
    request: pb.ReadBatchRequest
    parts: list[tuple[ReadGroup, int, int]]  # (group, start, end): keys [start, end) of the group
    call: Any = None

    @property
    def count(self) -> int:
        return sum(end - start for _group, start, end in self.parts)


class ShardCore:
    def __init__(self, *, namespace: str, key_groups: KeyGroupRange, epoch: int, limits: BatchLimits,
                 node_limits: NodeLimits, failure: WriterFailure | None = None) -> None:
        self.key_groups = key_groups
        self.ref = pb.ShardRef(namespace=namespace, key_group_start=key_groups.start,
                               key_group_end=key_groups.end, epoch=epoch)
        self.shard_id = f"{namespace}/{key_groups}"
        self._client_limits = limits
        self.use_node_limits(node_limits)
        self.failure = failure or WriterFailure()  # shared by the writer's sessions
        self.buffer = WriteBuffer()
        self.sealed: collections.deque[WriteBuffer] = collections.deque()  # full, not yet sent
        self.in_flight: collections.deque[WriteInFlight] = collections.deque()
        # Reads not yet sent, as (group, start, end, alone): keys [start, end) of the group; an
        # ``alone`` slice (half of a batch whose reply was too large) leaves in a batch of its own.
        self.reads: collections.deque[tuple[ReadGroup, int, int, bool]] = collections.deque()
        self.sequence = 0
        # The face's hooks: a batch was sealed (send it, or wake the sender); every batch in
        # flight is still being applied (the next one may grow).
        self.on_sealed: Callable[[], None] = lambda: None
        self.busy: Callable[[], bool] = lambda: False
        # The namespace's key groups, once the writer tells (``use_stored_form``): batches then go
        # in stored form if the node takes it.
        self.max_key_groups: int | None = None

    # Reads go in stored form, writes in the plain form: measured end to end (benchmarks/
    # bench_acceptance.py's plain-form rows, fresh 2-worker nodes with the order alternating),
    # stored-form write batches cost both the client (the prefixes and headers joined in) and the
    # node more CPU per key than plain ones, though the node's handler alone is cheaper in process.
    stored_form_writes = False

    def use_stored_form(self, max_key_groups: int) -> None:
        self.max_key_groups = max_key_groups

    @property
    def _stored_form(self) -> int | None:
        """``max_key_groups`` when requests go in stored form, else None."""
        return self.max_key_groups if self.node_limits.stored_form else None

    def use_node_limits(self, node_limits: NodeLimits) -> None:
        """Check writes and size batches by what the node accepts (as its NodeInfo says)."""
        self.node_limits = node_limits
        self.limits = within_node_limits(self._client_limits, node_limits)

    # -- writes --------------------------------------------------------------------------

    def add(self, op: WriteOp, state: str, key: bytes, value: bytes = b"", map_key: bytes = b"") -> None:
        self.failure.check()
        self.node_limits.check_write(key, value, map_key, needs_map_key=op in (WriteOp.MAP_PUT, WriteOp.MAP_REMOVE))
        buffer, limits = self.buffer, self.limits
        if len(buffer) and buffer.byte_size + len(key) + len(value) + len(map_key) + OVERHEAD_PER_OP > limits.max_bytes:
            self.seal()  # a batch stays within the message size the node accepts
            buffer = self.buffer
        # the key group is hashed here only when a batch will carry it
        max_key_groups = self._stored_form if self.stored_form_writes else None
        buffer.add(op, state, key, value, map_key, stable_hash(key) % max_key_groups if max_key_groups else None)
        if len(buffer) >= limits.max_ops or buffer.byte_size >= limits.max_bytes:
            self._seal_unless_growing()  # the next batch fills while the node applies this one

    def add_many(self, op: WriteOp, state: str, keys: Sequence[bytes], values: Sequence[bytes],
                 key_groups: Sequence[int] | None = None, *, checked: bool = False) -> None:
        """Buffer operations without map keys; ``key_groups``: the keys' key groups, when the
        caller knows them (the router does); ``checked``: the caller checked them against the
        node's limits (``NodeLimits.check_writes``) already."""
        self.failure.check()
        if not checked:
            self.node_limits.check_writes(keys, values)
        start = 0
        while start < len(keys):
            batch_ops = self.limits.max_ops_when_busy if self.busy() else self.limits.max_ops
            end, size = self._fitting(keys, values, start, min(len(keys), start + max(batch_ops - len(self.buffer), 1)))
            if end == start:
                self.seal()
                continue
            if (start, end) == (0, len(keys)):  # the whole call in one batch: no copies
                self.buffer.add_many(op, state, keys, values, key_groups, size)
            else:
                self.buffer.add_many(op, state, keys[start:end], values[start:end],
                                     key_groups[start:end] if key_groups is not None else None, size)
            start = end
            if len(self.buffer) >= self.limits.max_ops or self.buffer.byte_size >= self.limits.max_bytes:
                self._seal_unless_growing()

    def _fitting(self, keys: Sequence[bytes], values: Sequence[bytes], start: int, end: int) -> tuple[int, int | None]:
        """The end of the operations from ``start`` that fit into the buffer's bytes (one at least
        into an empty buffer), and their bytes when known; per-operation work only when they do not all fit."""
        room = self.limits.max_bytes - self.buffer.byte_size
        whole = (start, end) == (0, len(keys))
        chosen_keys, chosen_values = (keys, values) if whole else (keys[start:end], values[start:end])
        size = sum(map(len, chosen_keys)) + sum(map(len, chosen_values)) + OVERHEAD_PER_OP * (end - start)
        if size <= room:
            return end, size
        sizes = itertools.accumulate(len(k) + len(v) + OVERHEAD_PER_OP for k, v in zip(chosen_keys, chosen_values))
        fitting = bisect.bisect_right(list(sizes), room)
        return start + (fitting or (0 if len(self.buffer) else 1)), None

    def _seal_unless_growing(self) -> None:
        growing = len(self.buffer) < self.limits.max_ops_when_busy and self.buffer.byte_size < self.limits.max_bytes
        if not (growing and self.busy()):
            self.seal()

    def seal(self) -> None:
        """Close the open buffer into a batch to send (nothing when it is empty)."""
        if len(self.buffer):
            self.sealed.append(self.buffer)
            self.buffer = WriteBuffer()
            self.on_sealed()

    @property
    def unsent(self) -> bool:
        return bool(self.sealed or len(self.buffer))

    def next_write(self) -> WriteInFlight:
        """The oldest sealed batch, numbered; the face sends it and appends it to ``in_flight``."""
        buffer = self.sealed.popleft()
        request = buffer.to_request(self.ref, self._stored_form if self.stored_form_writes else None)
        self.sequence += 1
        request.sequence = self.sequence
        return WriteInFlight(request, len(buffer), buffer)

    def may_resend(self, error: BaseException, attempt: int) -> bool:
        """A batch refused as out of order is sent again (after its predecessor's outcome), a few times."""
        return isinstance(error, OutOfOrderError) and attempt < MAX_RESENDS and not self.failure.failed

    def applied(self, batch: WriteInFlight) -> bool:
        """Once per batch: forget it; False when its outcome was taken already."""
        if batch.settled:
            return False
        batch.settled = True
        self.in_flight.remove(batch)
        return True

    # -- reads ---------------------------------------------------------------------------

    def queue_read(self, op: ReadOp, state: str, keys: Sequence[bytes], map_keys: Sequence[bytes] = (),
                   merge_operator: str = "", sink: Any = None, key_groups: Sequence[int] | None = None) -> ReadGroup:
        """Queue a read of ``keys`` (``key_groups``: theirs, when the caller knows them)."""
        group = ReadGroup(op, state, keys, map_keys, merge_operator, sink, results=[None] * len(keys),
                          missing=len(keys), key_groups=key_groups)
        if keys:
            self.reads.append((group, 0, len(keys), False))
        return group

    def queue_one(self, op: ReadOp, state: str, key: bytes, map_key: bytes = b"", merge_operator: str = "") -> ReadGroup:
        """Queue a single-key read, joined to the last queued group when it reads the same way and
        is still wholly unsent at its end; returns that group (new ones have ``sink`` None)."""
        if self.reads:
            group, start, end, alone = self.reads[-1]
            if (group.joinable and not alone and end == len(group.keys) and group.op is op and group.state == state
                    and group.merge_operator == merge_operator and bool(group.map_keys) == bool(map_key)):
                group.keys.append(key)  # type: ignore[attr-defined]
                if map_key:
                    group.map_keys.append(map_key)  # type: ignore[attr-defined]
                group.results.append(None)
                group.missing += 1
                self.reads[-1] = (group, start, end + 1, False)
                return group
        group = ReadGroup(op, state, [key], [map_key] if map_key else [], merge_operator, results=[None], missing=1,
                          joinable=True)
        self.reads.append((group, 0, 1, False))
        return group

    def read_now(self, op: ReadOp, state: str, key: bytes, map_key: bytes = b"", merge_operator: str = "") -> ReadBatch:
        """A batch of one read, not queued: the face sends it at once (a blocking call) and hands
        the reply to ``answered``; the value is then ``batch.parts[0][0].results[0]``."""
        group = ReadGroup(op, state, (key,), (map_key,) if map_key else (), merge_operator, results=[None], missing=1)
        return ReadBatch(self._read_request([(group, 0, 1)]), [(group, 0, 1)])

    @property
    def queued_reads(self) -> int:
        return sum(end - start for _group, start, end, _alone in self.reads)

    def next_read(self, max_ops: int) -> ReadBatch | None:
        """Up to ``max_ops`` queued reads packed into one request, or None when none is queued."""
        if not self.reads:
            return None
        if self.reads[0][3]:
            group, start, end, _alone = self.reads.popleft()
            parts = [(group, start, end)]
        else:
            parts, room = [], max_ops
            while self.reads and room and not self.reads[0][3]:
                group, start, end, _alone = self.reads[0]
                cut = min(end, start + room)
                parts.append((group, start, cut))
                room -= cut - start
                if cut == end:
                    self.reads.popleft()
                else:
                    self.reads[0] = (group, cut, end, False)
        return ReadBatch(self._read_request(parts), parts)

    def _read_request(self, parts: list[tuple[ReadGroup, int, int]]) -> pb.ReadBatchRequest:
        if len(parts) == 1:  # one call's keys: packed as a whole
            group, start, end = parts[0]
            whole = (start, end) == (0, len(group.keys))
            keys = group.keys if whole else group.keys[start:end]
            key_groups = group.key_groups if whole or group.key_groups is None else group.key_groups[start:end]
            return read_request(self.ref, [group.state], bytes([group.op]) * (end - start), keys,
                                group.map_keys[start:end] if group.map_keys else (), (), self._stored_form, key_groups)
        states: dict[str, int] = {}
        ops, keys, map_keys, indexes = bytearray(), [], [], []
        all_key_groups: list[int] | None = []
        for group, start, end in parts:
            if all_key_groups is not None:
                if group.key_groups is None:
                    all_key_groups = None
                else:
                    all_key_groups += group.key_groups[start:end]
            index = states.setdefault(group.state, len(states))
            ops += bytes([group.op]) * (end - start)
            keys += group.keys[start:end]
            map_keys += group.map_keys[start:end] if group.map_keys else [b""] * (end - start)
            indexes += [index] * (end - start)
        return read_request(self.ref, list(states), bytes(ops), keys, map_keys if any(map_keys) else (),
                            indexes if len(states) > 1 else (), self._stored_form, all_key_groups)

    def waits_for(self, batch: ReadBatch) -> list[WriteInFlight]:
        """The write batches in flight a read batch must wait for: up to the last one that
        writes a key it reads (the node may apply it before or after the read)."""
        last = -1
        for i, sent in enumerate(self.in_flight):
            if any(sent.touches(group.state, key) for group, start, end in batch.parts for key in group.keys[start:end]):
                last = i
        return list(self.in_flight)[: last + 1]

    def answered(self, batch: ReadBatch, reply: pb.ReadBatchResponse) -> list[ReadGroup]:
        """Take a reply; returns the groups it completed. Values are as they will be once every
        write still unsent is applied (the sealed batches, then the open buffer)."""
        stored = read_results(reply)
        unsent = [*self.sealed, self.buffer] if self.unsent else ()
        offset, completed = 0, []
        for group, start, end in batch.parts:
            values = stored[offset : offset + end - start]
            offset += end - start
            if unsent or group.op is ReadOp.GET_LIST:
                values = [resolve_read(group.op, group.state, key, group.map_keys[start + i] if group.map_keys else b"",
                                       value, group.merge_operator, unsent)
                          for i, (key, value) in enumerate(zip(group.keys[start:end], values))]
            group.results[start:end] = values
            group.missing -= end - start
            if group.done:
                completed.append(group)
        return completed

    def read_failed(self, batch: ReadBatch, error: BaseException) -> list[ReadGroup]:
        """A failed read batch: one whose values do not fit into one reply is queued again in
        halves, each a batch of its own (returns no group); otherwise returns its groups, failed."""
        if (isinstance(error, InvalidArgumentError) and error.reason == ReplyTooLarge.reason
                and batch.count > 1):
            halves = _halves(batch.parts)
            for group, start, end in reversed(halves[1]):
                self.reads.appendleft((group, start, end, True))
            for group, start, end in reversed(halves[0]):
                self.reads.appendleft((group, start, end, True))
            return []
        return list(dict.fromkeys(group for group, _start, _end in batch.parts))

    def drop_reads(self) -> list[ReadGroup]:
        """Forget every queued read; returns their groups."""
        groups = list(dict.fromkeys(group for group, _start, _end, _alone in self.reads))
        self.reads.clear()
        return groups


def _halves(parts: list[tuple[ReadGroup, int, int]]) -> tuple[list[tuple[ReadGroup, int, int]], ...]:
    """The parts of a batch cut into two halves, each key in one."""
    half, seen = sum(end - start for _g, start, end in parts) // 2, 0
    first: list[tuple[ReadGroup, int, int]] = []
    second: list[tuple[ReadGroup, int, int]] = []
    for group, start, end in parts:
        cut = start + max(0, min(end - start, half - seen))
        if start < cut:
            first.append((group, start, cut))
        if cut < end:
            second.append((group, cut, end))
        seen += end - start
    return first, second


class CoreSession:
    """What both faces' shard sessions share: the connection, the core, and their names for it."""

    def __init__(self, *, namespace: str, key_groups: KeyGroupRange, epoch: int, connection: Any,
                 limits: BatchLimits, node_limits: NodeLimits | None, failure: WriterFailure | None) -> None:
        self.connection = connection
        self.core = ShardCore(namespace=namespace, key_groups=key_groups, epoch=epoch, limits=limits,
                              node_limits=node_limits or NodeLimits(max_message_bytes=connection.max_message_bytes),
                              failure=failure)
        self.key_groups, self.ref, self.shard_id, self.failure = key_groups, self.core.ref, self.core.shard_id, self.core.failure

    @property
    def buffer(self) -> WriteBuffer:
        return self.core.buffer

    @property
    def limits(self) -> BatchLimits:
        return self.core.limits

    @property
    def node_limits(self) -> NodeLimits:
        return self.core.node_limits

    def use_node_limits(self, node_limits: NodeLimits) -> None:
        self.core.use_node_limits(node_limits)
