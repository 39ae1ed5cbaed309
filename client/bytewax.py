"""Keep a Bytewax (0.21) dataflow's keyed state in stateserver, exactly once across a crash.

    from stateserver.client.bytewax import StateServerBackend, stateful_flat_map

    def count(counts, word, _event):
        counts.merge(word, 1)
        return [counts.get(word)]

    backend = StateServerBackend("127.0.0.1:7700", "wordcount", epoch=attempt,
                                 declare=lambda writer: writer.aggregating_state("counts", merge_operator="sum_int64"))
    running_counts = stateful_flat_map("count", keyed_words, backend, count)   # (word, count) items

How it fits Bytewax's recovery: the step's state lives in the namespace's shards, not in Bytewax.
At the end of every Bytewax epoch in which the step saw items, Bytewax asks the step's logic for
its ``snapshot()``; the adapter then runs a stateserver checkpoint (flush, sync phase on every
shard, wait until durable, commit, notify) and hands Bytewax only the checkpoint id to store in its
recovery database, next to the source offsets of the same epoch. On resume, Bytewax gives that id
back and the adapter reopens the shards restored from exactly that checkpoint, while Bytewax
replays its sources from the same epoch: state and input agree, so every event counts once. With
no id (a fresh run, or a crash before Bytewax's first snapshot) the shards start empty, whatever
the namespace held before (see ``client.checkpointing``).

``epoch`` fences the writers of earlier attempts and numbers their checkpoints apart, so it must
grow with every (re)start. Leave it out and each ``open`` allocates the namespace's next epoch in
the snapshot store (``StateClient.next_epoch``): no attempt number to keep; an explicit one works too.

Limits: the step keeps one writer, so its items go to one Bytewax worker (all keys travel under one
routing key; the writer spreads them over ``shards`` shards). Outputs emitted after the last
snapshot are emitted again on replay, with the same values (Bytewax's sinks are at-least-once).
Bytewax is imported only when an operator is built, so the client does not depend on it (the
tests install bytewax==0.21.1 through the test extra).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from stateserver.client._client import StateClient
from stateserver.client._errors import ShardNotOpenError
from stateserver.client._writer import Writer
from stateserver.client.checkpointing import CheckpointCoordinator, KeyedStateBackend
from stateserver.protocol.keygroups import ranges_for_parallelism

H = TypeVar("H")
V = TypeVar("V")
W = TypeVar("W")

# Every item of a step travels under this Bytewax key, so one logic (one writer) sees them all.
ROUTING_KEY = "stateserver"


class StateServerBackend(Generic[H]):
    """Where one Bytewax step keeps its keyed state: ``namespace`` on the nodes at ``addresses``.

    ``declare`` turns the step's writer into the state handles the mapper gets (one handle, or a
    tuple or object of several). ``shards`` key-group ranges are opened, one shard each.
    """

    def __init__(self, addresses: Sequence[str] | str, namespace: str, *, epoch: int | None = None,
                 declare: Callable[[Writer], H], max_key_groups: int = 128, shards: int = 4,
                 client: StateClient | None = None) -> None:
        self.addresses = addresses
        self.namespace = namespace
        self.epoch = epoch
        self.declare = declare
        self.max_key_groups = max_key_groups
        self.shards = shards
        self._client = client
        self._subtask: KeyedStateBackend | None = None
        self._coordinator: CheckpointCoordinator | None = None
        self.restored_from: int | None = None  # the checkpoint the last open restored, None for fresh
        self.checkpoints: list[int] = []       # checkpoints this backend committed, in order

    @property
    def client(self) -> StateClient:
        if self._client is None:
            self._client = StateClient(self.addresses)
        return self._client

    def open(self, checkpoint_id: int | None) -> H:
        """The state handles, on shards restored from ``checkpoint_id`` (None: empty state)."""
        self.client.create_namespace(self.namespace, max_key_groups=self.max_key_groups)
        epoch = self.epoch if self.epoch is not None else self.client.next_epoch(self.namespace)
        self._subtask = KeyedStateBackend(self.client, self.namespace, epoch=epoch,
                                          key_groups=ranges_for_parallelism(self.max_key_groups, self.shards))
        self._coordinator = CheckpointCoordinator(self.client, self.namespace, epoch=epoch)
        self._coordinator.initialize([self._subtask], restore=checkpoint_id)
        self.restored_from = checkpoint_id
        return self.declare(self._subtask.writer)

    def checkpoint(self) -> int:
        """Snapshot, wait until durable, commit: the id Bytewax keeps as the step's snapshot."""
        if self._subtask is None or self._coordinator is None:
            raise ShardNotOpenError("open() the backend first")
        checkpoint_id = self._coordinator.checkpoint([self._subtask])
        self.checkpoints.append(checkpoint_id)
        return checkpoint_id

    def close(self) -> None:
        """Close the client (the shards stay open on the nodes until a newer attempt takes them)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def stateful_flat_map(step_id: str, up: Any, backend: StateServerBackend[H],
                      mapper: Callable[[H, str, V], Iterable[W]]) -> Any:
    """A Bytewax operator: ``mapper(handles, key, value)`` for every ``(key, value)`` of the keyed
    stream ``up``; emits ``(key, w)`` for every ``w`` it returns. State lives in stateserver."""
    return _bytewax_operator()(step_id, up, backend, mapper)


@functools.cache
def _bytewax_operator() -> Callable[..., Any]:
    """Built on first use, so that importing this module does not import Bytewax."""
    import bytewax.operators as op
    from bytewax.dataflow import Stream, operator
    from bytewax.operators import StatefulLogic

    class StateServerLogic(StatefulLogic):  # type: ignore[type-arg]
        """The step's one logic: its writer's handles, and a checkpoint at every Bytewax snapshot."""

        def __init__(self, backend: StateServerBackend[Any], mapper: Callable[..., Iterable[Any]],
                     resume_state: int | None) -> None:
            self.backend = backend
            self.mapper = mapper
            self.handles = backend.open(resume_state)

        def on_item(self, value: tuple[str, Any]) -> tuple[list[tuple[str, Any]], bool]:
            key, item = value
            return [(key, out) for out in self.mapper(self.handles, key, item)], StatefulLogic.RETAIN

        def snapshot(self) -> int:
            return self.backend.checkpoint()

    def stateserver_flat_map(step_id: str, up: Stream, backend: StateServerBackend[Any],  # type: ignore[type-arg]
                             mapper: Callable[..., Iterable[Any]]) -> Stream:  # type: ignore[type-arg]
        routed = op.map("route", up, lambda key_value: (ROUTING_KEY, key_value))
        processed = op.stateful("state", routed, lambda resume: StateServerLogic(backend, mapper, resume))
        return op.map("unroute", processed, lambda routed_item: routed_item[1])

    # Bytewax reads the operator's signature through typing.get_type_hints: give it real types.
    stateserver_flat_map.__annotations__ = {"step_id": str, "up": Stream, "backend": object, "mapper": object,
                                            "return": Stream}
    return operator(stateserver_flat_map)  # type: ignore[no-any-return]
