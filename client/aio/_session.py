"""A writer's asyncio session with one shard: requests of many coroutines coalesced into batches.

Writes go into the shared ``WriteBuffer`` and leave as sequenced write batches, several in
flight, applied by the node in order. Reads queue up and leave together as one ReadBatch. One
pump task per shard sends everything, so the order rules are in one place:

* a read is answered from the node's value combined with the overlay of the buffer at the
  moment the answer arrives, and no write batch is sent while reads are in flight, so the node's
  value and the overlay together are the shard's state at that moment, each write counted once;
* a read whose key is in a write batch still in flight waits for that batch, since the node
  may apply it before or after the read; reads of other keys go out at once;
* so a read issued after a write of the same key sees it (per-key order), and batches of
  unrelated keys overlap.

Every operation holds a permit of ``OutstandingLimit`` from the moment it is accepted until the
node answered it: a slow node makes callers wait instead of growing buffers. A batch holds at
most ``max_ops`` operations and ``max_bytes`` bytes (within the node's message size); a key or
value over the node's limits is refused at the call. A batch the node refused as out of order
is sent again once its predecessor has its outcome; any other failure fails the whole writer
(``WriterFailure``), as in the sync client.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

from stateserver.client._buffer import WriteBuffer, read_request, read_results, resolve_list, resolve_map_entry, resolve_value
from stateserver.client._errors import OutOfOrderError
from stateserver.client._failure import MAX_RESENDS, WriterFailure
from stateserver.client._node_limits import OVERHEAD_PER_OP, NodeLimits
from stateserver.client.aio._connection import AsyncNodeConnection
from stateserver.client.aio._limits import OutstandingLimit
from stateserver.protocol import wire
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoalescingLimits:
    """How the asyncio client batches and bounds the requests to one shard."""

    max_ops: int = 1000           # operations in one write batch, reads in one read batch
    max_bytes: int = 4 << 20      # bytes of keys and values in one write batch
    max_in_flight: int = 4        # write batches sent and not yet applied
    max_outstanding: int = 8192   # operations accepted and not yet answered; callers wait beyond it
    linger: float = 0.0           # seconds a request may wait for its batch to fill; by default a batch
                                  # leaves once every ready coroutine has run, and fills while one is in flight


def within_node_limits(limits: CoalescingLimits, node: NodeLimits) -> CoalescingLimits:
    """The client's batch sizes, cut to what the node accepts (operations, message bytes)."""
    return dataclasses.replace(limits, max_ops=min(limits.max_ops, node.max_batch_ops),
                               max_bytes=min(limits.max_bytes, node.max_request_bytes))


@dataclasses.dataclass(slots=True)
class _Read:
    op: ReadOp
    state: str
    key: bytes
    map_key: bytes
    merge_operator: str
    future: asyncio.Future[Any]


@dataclasses.dataclass(slots=True)
class _WriteInFlight:
    task: asyncio.Task[Any]
    count: int
    keys: set[tuple[str, bytes]]
    settled: bool = False


class AsyncShardSession:
    def __init__(self, *, namespace: str, key_groups: KeyGroupRange, epoch: int, connection: AsyncNodeConnection,
                 limits: CoalescingLimits, node_limits: NodeLimits | None = None,
                 failure: WriterFailure | None = None) -> None:
        self.key_groups = key_groups
        self.ref = pb.ShardRef(namespace=namespace, key_group_start=key_groups.start, key_group_end=key_groups.end,
                               epoch=epoch)
        self.connection = connection
        self.node_limits = node_limits or NodeLimits(max_message_bytes=connection.max_message_bytes)
        self.limits = within_node_limits(limits, self.node_limits)
        self.failure = failure or WriterFailure()  # shared by the writer's sessions
        self.buffer = WriteBuffer()
        self.outstanding = OutstandingLimit(limits.max_outstanding, on_wait=self._wake)
        self.read_batches = 0
        self.write_batches = 0
        self._reads: list[_Read] = []
        self._reading: list[_Read] = []  # the reads in flight
        self._barriers: list[asyncio.Future[None]] = []
        self._in_flight: collections.deque[_WriteInFlight] = collections.deque()
        self._sequence = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()  # set while the buffer has room for more operations
        self._room.set()
        self._pump: asyncio.Task[None] | None = None

    @property
    def shard_id(self) -> str:
        return f"{self.ref.namespace}/{self.key_groups}"

    # -- what callers do -----------------------------------------------------------------

    async def add(self, op: WriteOp, state: str, key: bytes, value: bytes = b"", map_key: bytes = b"") -> None:
        """Accept a write; returns once it is buffered (the node applies it in order later)."""
        self._check()
        self.node_limits.check_write(key, value, map_key, needs_map_key=op in (WriteOp.MAP_PUT, WriteOp.MAP_REMOVE))
        await self._accept()
        size = len(key) + len(value) + len(map_key) + OVERHEAD_PER_OP
        # A full buffer is sent before this write joins the next one: batches stay within the limits.
        while len(self.buffer) and (len(self.buffer) >= self.limits.max_ops
                                    or self.buffer.byte_size + size > self.limits.max_bytes):
            self._room.clear()
            self._wake()
            try:
                await self._room.wait()
                self._check()
            except BaseException:
                self.outstanding.release()
                raise
        self.buffer.add(op, state, key, value, map_key)
        self._wake()

    async def read(self, op: ReadOp, state: str, key: bytes, map_key: bytes = b"", merge_operator: str = "") -> Any:
        """The stored value as it is once every write accepted before this read is applied:
        bytes or None; for GET_LIST the list of elements."""
        await self._accept()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._reads.append(_Read(op, state, key, map_key, merge_operator, future))
        self._wake()
        return await future

    async def flush(self) -> None:
        """Wait until the node applied every write accepted so far."""
        self._check()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append(future)
        self._wake()
        await future

    async def reset_sequence(self) -> None:
        """After (re)opening the shard the node expects batch 1 next."""
        await self.flush()
        self._sequence = 0

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None

    async def _accept(self) -> None:
        self._check()
        if not self.outstanding.try_acquire():
            await self.outstanding.acquire()
            self._check()

    def _check(self) -> None:
        self.failure.check()

    def _wake(self) -> None:
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run(), name=f"stateserver pump {self.shard_id}")
        self._wakeup.set()

    # -- the pump ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                if not (self._reads or len(self.buffer) or self._barriers):
                    self._wakeup.clear()
                    await self._wakeup.wait()  # after every coroutine that was ready: batches fill
                    continue
                if self.limits.linger and not self.outstanding.waiting and not self._barriers:
                    await asyncio.sleep(self.limits.linger)
                if self._reads:
                    await self._send_reads()
                if len(self.buffer):
                    await self._send_writes()
                if self._barriers and not len(self.buffer):
                    await self._drain_writes()
                    barriers, self._barriers = self._barriers, []
                    for barrier in barriers:
                        _settle(barrier, None)
                await asyncio.sleep(0)  # let answered callers run before the next round
        except Exception as exc:  # a failed batch ends the session: the node's state is unknown
            self._fail(exc)

    async def _send_reads(self) -> None:
        reads, self._reads = self._reads[: self.limits.max_ops], self._reads[self.limits.max_ops :]
        if self._in_flight:  # wait for the write batches in flight that touch keys read here
            last = max((i for i, batch in enumerate(self._in_flight)
                        if any((r.state, r.key) in batch.keys for r in reads)), default=-1)
            for batch in list(self._in_flight)[: last + 1]:
                await self._wait_applied(batch)
        self._reading = reads
        try:
            reply = await self.connection.call("ReadBatch", _read_batch(self.ref, reads))
        except Exception as exc:  # the readers get the error; the session goes on
            for read in reads:
                _settle(read.future, exc)
        else:
            self.read_batches += 1
            buffered = bool(len(self.buffer))
            for read, stored in zip(reads, read_results(reply)):
                _settle(read.future, _resolve(read, self.buffer if buffered else None, stored))
        self._reading = []
        self.outstanding.release(len(reads))

    async def _send_writes(self) -> None:
        while len(self._in_flight) >= self.limits.max_in_flight:
            await self._wait_applied(self._in_flight[0])
        self._check()  # nothing buffered is sent once the writer failed
        request = self.buffer.to_request(self.ref)
        self._sequence += 1
        request.sequence = self._sequence
        count = len(self.buffer)
        keys = set(zip([self.buffer.state_names[i] for i in self.buffer.state_indexes], self.buffer.keys))
        self.buffer.clear()
        self._room.set()
        previous = self._in_flight[-1].task if self._in_flight else None
        task = asyncio.get_running_loop().create_task(self._write(request, previous))
        batch = _WriteInFlight(task, count, keys)
        self._in_flight.append(batch)
        task.add_done_callback(lambda _: self._applied(batch))
        self.write_batches += 1

    async def _write(self, request: pb.WriteBatchRequest, previous: asyncio.Task[Any] | None) -> Any:
        """Send a batch; one refused as out of order is sent again once the batch before it has its
        outcome (which it has only after every batch before it)."""
        for attempt in range(MAX_RESENDS + 1):
            try:
                return await self.connection.call("WriteBatch", request)
            except OutOfOrderError:
                if attempt == MAX_RESENDS or self.failure.failed:
                    raise
                if previous is not None:
                    await asyncio.wait([previous])
                    if previous.cancelled() or previous.exception() is not None:
                        raise  # the writer failed with the batch before; this one is not sent again
                    previous = None
        raise AssertionError("unreachable")

    def _applied(self, batch: _WriteInFlight) -> None:
        """Once per batch, from its done callback or from the pump, whichever comes first."""
        if batch.settled:
            return
        batch.settled = True
        self._in_flight.remove(batch)
        self.outstanding.release(batch.count)
        if not batch.task.cancelled() and batch.task.exception() is not None:
            self._fail(batch.task.exception())  # type: ignore[arg-type]

    async def _wait_applied(self, batch: _WriteInFlight) -> None:
        # Awaiting a finished task does not yield, so its done callback may not have run yet.
        await asyncio.wait([batch.task])
        self._applied(batch)
        self._check()

    async def _drain_writes(self) -> None:
        while self._in_flight:
            await self._wait_applied(self._in_flight[0])

    def _fail(self, error: BaseException) -> None:
        self.failure.record(error)
        for waiting in [*self._reads, *self._reading]:
            _settle(waiting.future, error)
        for barrier in self._barriers:
            _settle(barrier, error)
        self._reads, self._reading, self._barriers = [], [], []
        self.outstanding.fail(error)
        self._room.set()
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _read_batch(ref: pb.ShardRef, reads: Sequence[_Read]) -> pb.ReadBatchRequest:
    states: dict[str, int] = {}
    indexes = [states.setdefault(read.state, len(states)) for read in reads]
    map_keys = [read.map_key for read in reads] if any(read.map_key for read in reads) else ()
    return read_request(ref, list(states), bytes(read.op for read in reads), [read.key for read in reads], map_keys,
                        indexes if len(states) > 1 else ())


def _resolve(read: _Read, buffer: WriteBuffer | None, stored: bytes | None) -> Any:
    """The node's answer combined with what is still buffered, as the node will combine them."""
    overlay = buffer.overlay(read.state, read.key) if buffer is not None else None
    if read.op is ReadOp.GET_LIST:
        return resolve_list(overlay, lambda: wire.unpack_list(stored) if stored is not None else [])
    if read.op in (ReadOp.MAP_GET, ReadOp.MAP_CONTAINS):
        return resolve_map_entry(overlay, read.map_key, lambda: stored)
    return resolve_value(overlay, lambda: stored, read.merge_operator)
