"""The sync face of a writer's session with one shard: sends what the core seals at once, keeps
up to ``max_in_flight`` write batches in flight, and blocks for replies where a call needs them."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from stateserver.client._connection import NodeConnection
from stateserver.client._failure import WriterFailure
from stateserver.client._node_limits import NodeLimits
from stateserver.client._shard_core import BatchLimits, CoreSession, ReadBatch, ReadGroup, read_batch_size
from stateserver.protocol import wire
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.operations import ReadOp, WriteOp
from stateserver.protocol.v1 import state_pb2 as pb

__all__ = ["BatchLimits", "ShardSession", "read_batch_size"]


class ShardSession(CoreSession):
    def __init__(self, *, namespace: str, key_groups: KeyGroupRange, epoch: int, connection: NodeConnection,
                 limits: BatchLimits, node_limits: NodeLimits | None = None,
                 failure: WriterFailure | None = None) -> None:
        super().__init__(namespace=namespace, key_groups=key_groups, epoch=epoch, connection=connection,
                         limits=limits, node_limits=node_limits, failure=failure)
        self.core.on_sealed = self._send_sealed
        self.core.busy = self._busy
        self._in_flight = self.core.in_flight
        self._reading: list[ReadBatch] = []

    # -- writes ------------------------------------------------------------------------

    def add(self, op: WriteOp, state: str, key: bytes, value: bytes = b"", map_key: bytes = b"") -> None:
        self.core.add(op, state, key, value, map_key)

    def add_many(self, op: WriteOp, state: str, keys: Sequence[bytes], values: Sequence[bytes],
                 key_groups: Sequence[int] | None = None, *, checked: bool = False) -> None:
        self.core.add_many(op, state, keys, values, key_groups, checked=checked)

    def _busy(self) -> bool:
        """Every batch in flight is still being applied (those applied are collected here)."""
        while self._in_flight and self._in_flight[0].call.done():
            self._collect_first()  # raises a failed batch's error, as start_flush does
        return len(self._in_flight) >= self.core.limits.max_in_flight

    def _send_sealed(self) -> None:
        core = self.core
        while core.sealed:
            self.failure.check()  # nothing buffered is sent once the writer failed
            if len(self._in_flight) >= core.limits.max_in_flight:
                self._collect_first()
            batch = core.next_write()
            batch.call = self.connection.start("WriteBatch", batch.request)
            self._in_flight.append(batch)

    def reset_sequence(self) -> None:
        """After (re)opening the shard the node expects batch 1 next."""
        self.wait_for_writes()
        self.core.sequence = 0

    def start_flush(self) -> None:
        """Send the buffer without waiting for the node to apply it."""
        self.failure.check()
        self.core.seal()

    def _collect_first(self) -> None:
        """The outcome of the oldest batch in flight. One refused as out of order is sent again:
        every batch before it has its outcome by now (they are collected in sequence order).
        Any other failure fails the writer."""
        sent = self._in_flight.popleft()
        sent.settled = True
        attempt = 0
        while True:
            try:
                sent.call.result()
                return
            except Exception as exc:
                if not self.core.may_resend(exc, attempt):
                    self.failure.record(exc)
                    raise
            sent.call = self.connection.start("WriteBatch", sent.request)
            attempt += 1

    def wait_for_writes(self) -> None:
        """Wait until every batch in flight is applied; raises the first failure (and, once the
        writer failed, SessionFailedError)."""
        try:
            while self._in_flight:
                self._collect_first()
        except Exception:
            for sent in self._in_flight:  # refused or applied; leave no call behind
                try:
                    sent.call.result()
                except Exception:
                    pass
            self._in_flight.clear()
            raise
        self.failure.check()

    def flush(self) -> None:
        self.start_flush()
        self.wait_for_writes()

    # -- reads -------------------------------------------------------------------------

    def start_read(self, op: ReadOp, state: str, keys: Sequence[bytes], map_keys: Sequence[bytes] = (),
                   merge_operator: str = "", key_groups: Sequence[int] | None = None) -> ReadGroup:
        """Send the reads (in batches, all in flight at once, so that the node serves them on
        several threads) once the writes in flight are applied; ``finish_read`` takes the answers."""
        self.failure.check()
        self.wait_for_writes()
        group = self.core.queue_read(op, state, keys, map_keys, merge_operator, key_groups=key_groups)
        self._send_reads()
        return group

    def _send_reads(self) -> None:
        size = read_batch_size(self.core.queued_reads, self.core.limits)
        while (batch := self.core.next_read(size)) is not None:
            batch.call = self.connection.start("ReadBatch", batch.request)
            self._reading.append(batch)

    def finish_read(self, group: ReadGroup) -> list[bytes | None]:
        """The group's values as they will be once buffered writes are flushed; a batch whose
        values do not fit into one reply is read again in halves."""
        try:
            while not group.done:
                reading, self._reading = self._reading, []
                for batch in reading:
                    try:
                        self.core.answered(batch, batch.call.result())
                    except Exception as exc:
                        if self.core.read_failed(batch, exc):
                            raise
                self._send_reads()
        except Exception:
            self._reading = []
            self.core.drop_reads()
            raise
        return group.results

    def read_one(self, op: ReadOp, state: str, key: bytes, map_key: bytes = b"",
                 merge_operator: str = "") -> bytes | None:
        """One key, the cheapest way: a blocking call, no future and no thread hop (after the
        writes in flight are applied, as for any read; buffered writes are combined with the answer)."""
        self.failure.check()
        if self._in_flight:
            self.wait_for_writes()
        batch = self.core.read_now(op, state, key, map_key, merge_operator)
        self.core.answered(batch, self.connection.call("ReadBatch", batch.request))
        return batch.parts[0][0].results[0]

    def read(self, state: str, op: ReadOp, keys: Sequence[bytes], map_keys: Sequence[bytes] = ()) -> list[bytes | None]:
        return self.finish_read(self.start_read(op, state, keys, map_keys))

    def pages(self, state: str, key: bytes, page_size: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (entry key, value) stored under ``key``, fetched a page at a time."""
        self.failure.check()
        self.wait_for_writes()
        start_after: bytes | None = None
        while True:
            request = pb.IterateRequest(shard=self.ref, state=state, key=key, limit=page_size)
            if start_after is not None:
                request.start_after = start_after
            reply = self.connection.call("Iterate", request)
            entry_keys = wire.unpack(reply.entry_keys, reply.entry_key_lengths)
            values = wire.unpack(reply.values, reply.value_lengths)
            yield from zip(entry_keys, values)
            if not reply.has_more or not entry_keys:
                return
            start_after = entry_keys[-1]
