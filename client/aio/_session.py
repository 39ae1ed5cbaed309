"""The asyncio face of a writer's session with one shard: one pump task sends what the core holds.

Callers do no I/O and create no coroutine per operation: a write is buffered in the core at the
call and answered with a completed future; a read joins the core's read queue with one future per
call (not per key). The pump sends the core's sealed write batches (several in flight, applied by
the node in order) and its queued reads (one ReadBatch at a time), so the order rules are in one
place:

* a read is answered from the node's value combined with the writes still unsent when the answer
  arrives, and no write batch is sent while a read is in flight, so the node's value and those
  writes together are the shard's state at that moment, each write counted once;
* a read whose key is in a write batch still in flight waits for that batch, since the node
  may apply it before or after the read; reads of other keys go out at once;
* so a read issued after a write of the same key sees it (per-key order), and batches of
  unrelated keys overlap.

Every operation holds a permit of ``OutstandingLimit`` from the moment it is accepted until the
node answered it: past the bound, a call waits in line (its write is buffered when its turn
comes), so a slow node makes callers wait instead of growing buffers. A key or value over the
node's limits is refused at the call. A batch the node refused as out of order is sent again once
its predecessor has its outcome; any other failure fails the whole writer (``WriterFailure``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

from stateserver.client._failure import WriterFailure
from stateserver.client._node_limits import NodeLimits
from stateserver.client._shard_core import BatchLimits, CoreSession, ReadBatch, ReadGroup, WriteInFlight, read_batch_size
from stateserver.client._handles import Values
from stateserver.client.aio._connection import AsyncNodeConnection
from stateserver.client.aio._limits import OutstandingLimit
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.operations import ReadOp, WriteOp

Sink = Callable[[list[Any], BaseException | None], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoalescingLimits:
    """How the asyncio client batches and bounds the requests to one shard."""

    max_ops: int = 4000           # operations in one write batch, reads in one read batch (see below)
    max_bytes: int = 4 << 20      # bytes of keys and values in one write batch
    max_in_flight: int = 4        # write batches sent and not yet applied
    max_outstanding: int = 8192   # operations accepted and not yet answered; callers wait beyond it
    linger: float = 0.0           # seconds a request may wait for its batch to fill; by default a batch
                                  # leaves once every ready coroutine has run, and fills while one is in flight
    # As the sync client's: while every write batch in flight is still being applied, the next
    # one grows up to this many operations (default 4 x max_ops), and reads queued beyond
    # max_in_flight batches of max_ops go out in batches of up to this many; fewer, larger
    # batches cost the node and the client less per key.
    max_ops_when_busy: int | None = None

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(max_ops=self.max_ops, max_bytes=self.max_bytes, max_in_flight=self.max_in_flight,
                           max_ops_when_busy=max(self.max_ops_when_busy or 4 * self.max_ops, self.max_ops))


class AsyncShardSession(CoreSession):
    def __init__(self, *, namespace: str, key_groups: KeyGroupRange, epoch: int, connection: AsyncNodeConnection,
                 limits: CoalescingLimits, node_limits: NodeLimits | None = None,
                 failure: WriterFailure | None = None) -> None:
        super().__init__(namespace=namespace, key_groups=key_groups, epoch=epoch, connection=connection,
                         limits=limits.batch_limits(), node_limits=node_limits, failure=failure)
        self.core.on_sealed = self._wake
        self.core.busy = self._busy
        self.linger = limits.linger
        self.outstanding = OutstandingLimit(limits.max_outstanding, on_wait=self._wake)
        self.read_batches = 0
        self.write_batches = 0
        self._reading: list[ReadBatch] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._barriers: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.done: asyncio.Future[None] | None = None  # what an accepted write answers: settled already

    # -- what callers do -----------------------------------------------------------------

    def add(self, op: WriteOp, state: str, key: bytes, value: bytes = b"", map_key: bytes = b"") -> asyncio.Future[None]:
        """Accept a write; the future settles once it is buffered (the node applies it in order later)."""
        if self.outstanding.try_acquire():
            try:
                self.core.add(op, state, key, value, map_key)
            except BaseException:
                self.outstanding.release()
                raise
            return self._accepted()
        self.failure.check()
        self.core.node_limits.check_write(key, value, map_key,
                                          needs_map_key=op in (WriteOp.MAP_PUT, WriteOp.MAP_REMOVE))
        return self.outstanding.enqueue(1, lambda: self._buffer(op, state, key, value, map_key))

    def _buffer(self, op: WriteOp, state: str, key: bytes, value: bytes, map_key: bytes) -> None:
        self.core.add(op, state, key, value, map_key)
        self._wake()

    def add_many(self, op: WriteOp, state: str, keys: Sequence[bytes], values: Sequence[bytes],
                 key_groups: Sequence[int] | None = None, *, checked: bool = False) -> Any:
        if len(keys) <= self.outstanding.limit and self.outstanding.try_acquire(len(keys)):
            try:
                self.core.add_many(op, state, keys, values, key_groups, checked=checked)
            except BaseException:
                self.outstanding.release(len(keys))
                raise
            return self._accepted()
        self.failure.check()
        waits = []  # in order, each part at most the limit: one wait in line per part, none per key
        for start in range(0, len(keys), self.outstanding.limit):
            end = start + self.outstanding.limit
            part_keys, part_values = keys[start:end], values[start:end]
            part_key_groups = key_groups[start:end] if key_groups is not None else None
            if not waits and self.outstanding.try_acquire(len(part_keys)):  # nothing held: granted at once
                try:
                    self._buffer_many(op, state, part_keys, part_values, part_key_groups)
                except BaseException:
                    self.outstanding.release(len(part_keys))
                    raise
            else:  # a permit is held meanwhile, so one will be released and grant this part
                waits.append(self.outstanding.enqueue(
                    len(part_keys), functools.partial(self._buffer_many, op, state, part_keys, part_values,
                                                      part_key_groups)))
        return asyncio.gather(*waits)

    def _buffer_many(self, op: WriteOp, state: str, keys: Sequence[bytes], values: Sequence[bytes],
                     key_groups: Sequence[int] | None) -> None:
        self.core.add_many(op, state, keys, values, key_groups)
        self._wake()

    def _accepted(self) -> asyncio.Future[None]:
        self._wake()
        if self.done is None:
            self.done = asyncio.get_running_loop().create_future()
            self.done.set_result(None)
        return self.done

    def read(self, op: ReadOp, state: str, keys: Sequence[bytes], map_keys: Sequence[bytes], merge_operator: str,
             sink: Sink, key_groups: Sequence[int] | None = None) -> None:
        """Queue a read; ``sink`` gets the values (as they are once every write accepted before
        is applied) or the error."""
        self.failure.check()
        permits = min(len(keys), self.outstanding.limit)
        if self.outstanding.try_acquire(permits):
            self._queue_read(op, state, keys, map_keys, merge_operator, sink, permits, key_groups)
            return
        waiting = self.outstanding.enqueue(
            permits, lambda: self._queue_read(op, state, keys, map_keys, merge_operator, sink, permits, key_groups))
        waiting.add_done_callback(lambda f: None if f.cancelled() or f.exception() is None else sink([], f.exception()))

    def read_one(self, op: ReadOp, state: str, key: bytes, map_key: bytes, merge_operator: str,
                 finish: Callable[[Values], Any]) -> asyncio.Future[Any]:
        """Queue a single-key read joined with the others waiting to be sent (one group, one future
        per caller); past the bound of outstanding operations the caller's future waits in line."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future = self._loop.create_future()
        if self.outstanding.try_acquire():
            self._join(op, state, key, map_key, merge_operator, finish, future)
        else:  # waits in line as the caller's future, joined once its permit is granted
            self.outstanding.enqueue(1, functools.partial(self._join, op, state, key, map_key, merge_operator,
                                                          finish, future), lent=future)
        return future

    def _join(self, op: ReadOp, state: str, key: bytes, map_key: bytes, merge_operator: str,
              finish: Callable[[Values], Any], future: asyncio.Future[Any]) -> None:
        self.failure.check()
        group = self.core.queue_one(op, state, key, map_key, merge_operator)
        group.permits += 1
        if group.sink is None:
            group.sink = [(future, finish)]
            self._wake()
        else:
            group.sink.append((future, finish))

    def _queue_read(self, op: ReadOp, state: str, keys: Sequence[bytes], map_keys: Sequence[bytes],
                    merge_operator: str, sink: Sink, permits: int, key_groups: Sequence[int] | None = None) -> None:
        self.failure.check()
        self.core.queue_read(op, state, keys, map_keys, merge_operator, sink, key_groups).permits = permits
        self._wake()

    async def flush(self) -> None:
        """Wait until the node applied every write accepted so far."""
        self.failure.check()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append(future)
        self._wake()
        await future

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None

    def _busy(self) -> bool:
        """Every write batch in flight is still being applied, or sealed ones wait to be sent
        after them: the open one may grow."""
        return len(self.core.in_flight) + len(self.core.sealed) >= self.core.limits.max_in_flight

    def _wake(self) -> None:
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run(), name=f"stateserver pump {self.shard_id}")
        self._wakeup.set()

    # -- the pump ------------------------------------------------------------------------

    async def _run(self) -> None:
        core = self.core
        try:
            while True:
                if not (core.reads or core.unsent or self._barriers):
                    self._wakeup.clear()
                    await self._wakeup.wait()  # after every coroutine that was ready: batches fill
                    continue
                if self.linger and not self.outstanding.waiting and not self._barriers:
                    await asyncio.sleep(self.linger)
                if core.reads:
                    await self._send_reads()
                core.seal()
                while core.sealed:
                    await self._send_write()
                if self._barriers and not core.unsent:
                    await self._drain_writes()
                    barriers, self._barriers = self._barriers, []
                    for barrier in barriers:
                        _settle(barrier, None)
                await asyncio.sleep(0)  # let answered callers run before the next round
        except Exception as exc:  # a failed batch ends the session: the node's state is unknown
            self._fail(exc)

    async def _send_reads(self) -> None:
        """Up to ``max_in_flight`` read batches at once (the node serves them on several threads);
        no write batch leaves until every answer is in."""
        core = self.core
        batches: list[ReadBatch] = []
        size = read_batch_size(core.queued_reads, core.limits)
        while len(batches) < core.limits.max_in_flight and (batch := core.next_read(size)) is not None:
            batches.append(batch)
        for batch in batches:
            for sent in core.waits_for(batch):
                await self._wait_applied(sent)
        self._reading = batches
        replies: list[Any]
        if len(batches) == 1:  # a lone read (one key, say): the call itself, no task around it
            try:
                replies = [await self.connection.call("ReadBatch", batches[0].request)]
            except Exception as exc:
                replies = [exc]
        else:
            replies = await asyncio.gather(*(self.connection.call("ReadBatch", batch.request) for batch in batches),
                                           return_exceptions=True)
        self._reading = []
        for batch, reply in zip(batches, replies):
            if isinstance(reply, BaseException):  # the readers get the error; the session goes on
                for group in core.read_failed(batch, reply):
                    self._answer(group, reply)
            else:
                self.read_batches += 1
                for group in core.answered(batch, reply):
                    self._answer(group, None)

    def _answer(self, group: ReadGroup, error: BaseException | None) -> None:
        sink, group.sink = group.sink, None
        if sink is None:  # once per group, though its keys may span batches
            return
        self.outstanding.release(group.permits)
        if group.joinable:
            _answer_each(sink, group.results, error)
        else:
            sink(group.results, error)

    async def _send_write(self) -> None:
        core = self.core
        while len(core.in_flight) >= core.limits.max_in_flight:
            await self._wait_applied(core.in_flight[0])
        self.failure.check()  # nothing buffered is sent once the writer failed
        previous = core.in_flight[-1].call if core.in_flight else None
        batch = core.next_write()
        batch.call = asyncio.get_running_loop().create_task(self._write(batch, previous))
        core.in_flight.append(batch)
        batch.call.add_done_callback(lambda _: self._applied(batch))
        self.write_batches += 1

    async def _write(self, batch: WriteInFlight, previous: asyncio.Task[Any] | None) -> Any:
        """Send a batch; one refused as out of order is sent again once the batch before it has its
        outcome (which it has only after every batch before it)."""
        attempt = 0
        while True:
            try:
                return await self.connection.call("WriteBatch", batch.request)
            except Exception as exc:
                if not self.core.may_resend(exc, attempt):
                    raise
                if previous is not None:
                    await asyncio.wait([previous])
                    if previous.cancelled() or previous.exception() is not None:
                        raise  # the writer failed with the batch before; this one is not sent again
                    previous = None
            attempt += 1

    def _applied(self, batch: WriteInFlight) -> None:
        """Once per batch, from its done callback or from the pump, whichever comes first."""
        if not self.core.applied(batch):
            return
        self.outstanding.release(batch.count)
        task = batch.call
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())

    async def _wait_applied(self, batch: WriteInFlight) -> None:
        # Awaiting a finished task does not yield, so its done callback may not have run yet.
        await asyncio.wait([batch.call])
        self._applied(batch)
        self.failure.check()

    async def _drain_writes(self) -> None:
        while self.core.in_flight:
            await self._wait_applied(self.core.in_flight[0])

    def _fail(self, error: BaseException) -> None:
        self.failure.record(error)
        reading = [group for batch in self._reading for group, _start, _end in batch.parts]
        for group in [*self.core.drop_reads(), *reading]:
            self._answer(group, error)
        for barrier in self._barriers:
            _settle(barrier, error)
        self._reading, self._barriers = [], []
        self.outstanding.fail(error)
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()


def _answer_each(sink: list[tuple[asyncio.Future[Any], Callable[[Values], Any]]], results: list[Any],
                 error: BaseException | None) -> None:
    """Settle each caller of a joined group of single-key reads with its own value."""
    for i, (future, finish) in enumerate(sink):
        if future.done():  # the caller gave up
            continue
        if error is not None:
            future.set_exception(error)
            continue
        try:
            future.set_result(finish(results[i:i + 1]))
        except Exception as exc:  # a value the serializer cannot decode
            future.set_exception(exc)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
