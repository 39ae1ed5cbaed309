"""The writer without I/O: key -> shard session routing, state declarations, the checkpoint calls.

Every writer operation that talks to the nodes is a plan (``_plans``) defined here once; the
sync ``Writer`` and the asyncio ``AsyncWriter`` only run plans (``_run``: blocking, or returning
an awaitable) and drive their own sessions (flush, close).
"""
from __future__ import annotations

import collections
import operator
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from stateserver.client._errors import InvalidArgumentError, KeyGroupOutOfRangeError, SnapshotFailedError, UnavailableError
from stateserver.client._failure import WriterFailure
from stateserver.client._handles import AggregatingState, ListState, MapState, ValueState, operand_serializer_for
from stateserver.client._plans import Call, Each, Plan
from stateserver.client._serializers import JSON, STR, Serializer
from stateserver.protocol.keygroups import KeyGroupRange, key_group_for, key_groups_for
from stateserver.protocol.states import StateDescriptor, StateKind
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from stateserver.protocol.v1 import state_pb2 as pb


def state_descriptor(*, name: str, kind: StateKind, merge_operator: str = "", ttl_ms: int = 0) -> StateDescriptor:
    """A checked descriptor; a bad name or an unknown merge operator is InvalidArgumentError."""
    try:
        return StateDescriptor(name=name, kind=kind, merge_operator=merge_operator, ttl_ms=ttl_ms)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None


class RoutedSession(Protocol):
    @property
    def key_groups(self) -> KeyGroupRange: ...
    @property
    def ref(self) -> pb.ShardRef: ...
    @property
    def shard_id(self) -> str: ...
    @property
    def connection(self) -> Any: ...


Session = TypeVar("Session", bound=RoutedSession)
# A shard's part of a call's keys: its session, the positions of its keys among the call's (None:
# every key), and their key groups in that order.
Routed = tuple[Session, list[int] | None, list[int]]


class ShardRouter(Generic[Session]):
    """Which of a writer's shard sessions a key goes to.

    Routing is where every state handle's call starts, so it also refuses calls once the writer
    failed (``failure``, shared with the sessions).
    """

    def __init__(self, *, max_key_groups: int, sessions: Sequence[Session], failure: WriterFailure) -> None:
        self.max_key_groups = max_key_groups
        self.failure = failure
        self.route_to(sessions)

    def route_to(self, sessions: Sequence[Session]) -> None:
        self.sessions = list(sessions)
        # key group -> session (and its index in ``sessions``, -1 for none), so routing a key is
        # one hash and one list index.
        self._by_key_group: list[Session | None] = [None] * self.max_key_groups
        self._slot_by_key_group: list[int] = [-1] * self.max_key_groups
        for slot, session in enumerate(self.sessions):
            for key_group in range(session.key_groups.start, session.key_groups.end + 1):
                self._by_key_group[key_group] = session
                self._slot_by_key_group[key_group] = slot

    @property
    def key_groups(self) -> list[KeyGroupRange]:
        return [session.key_groups for session in self.sessions]

    def session_for(self, raw_key: bytes) -> Session:
        self.failure.check()
        session = self._by_key_group[key_group_for(raw_key, self.max_key_groups)]
        if session is None:
            raise self._not_owned(raw_key)
        return session

    def split(self, raw_keys: Sequence[bytes]) -> list[Routed[Session]]:
        """Split keys by the shard they belong to: (session, positions, key groups) per shard with
        keys: the positions of its keys in ``raw_keys`` (None: all of them) and their key groups,
        in that order. Whole-list operations only (every key is hashed once, here, and the batches
        reuse its key group as the stored key's prefix): no Python bytecode per key."""
        self.failure.check()
        if not raw_keys:
            return []
        key_groups = key_groups_for(raw_keys, self.max_key_groups)
        slots = list(map(self._slot_by_key_group.__getitem__, key_groups))
        first = slots[0]
        if slots.count(first) == len(slots):  # all in one shard (always so for a writer of one shard)
            if first < 0:
                raise self._not_owned(raw_keys[0])
            return [(self.sessions[first], None, key_groups)]
        if -1 in slots:
            raise self._not_owned(raw_keys[slots.index(-1)])
        positions: list[list[int]] = [[] for _ in self.sessions]
        appends = [chosen.append for chosen in positions]
        collections.deque(map(operator.call, map(appends.__getitem__, slots), range(len(slots))), maxlen=0)
        return [(self.sessions[slot], chosen, list(map(key_groups.__getitem__, chosen)))
                for slot, chosen in enumerate(positions) if chosen]

    def _not_owned(self, raw_key: bytes) -> KeyGroupOutOfRangeError:
        return KeyGroupOutOfRangeError(
            f"key group {key_group_for(raw_key, self.max_key_groups)} of this key is not owned by this writer "
            f"(it owns {', '.join(map(str, self.key_groups))})"
        )


class WriterCore(ShardRouter[Session]):
    """Once a write batch fails, the writer is failed as a whole: every later call raises
    ``SessionFailedError`` (chained to the failure) until the writer is reopened with a restore.

    The operations below return what the face's ``_run`` returns: the result itself (``Writer``)
    or an awaitable of it (``AsyncWriter``).
    """

    # The face's handle classes (the asyncio face's are awaitable-returning subclasses).
    _handle_types: tuple[type[ValueState[Any, Any]], type[ListState[Any, Any]], type[MapState[Any, Any, Any]],
                         type[AggregatingState[Any, Any]]] = (ValueState, ListState, MapState, AggregatingState)

    def __init__(self, *, namespace: str, max_key_groups: int, epoch: int, sessions: Sequence[Session],
                 owner_id: str, failure: WriterFailure | None = None) -> None:
        self.namespace = namespace
        self.epoch = epoch
        self.owner_id = owner_id  # sent on every OpenShard of this writer: the node knows a reconnect by it
        super().__init__(max_key_groups=max_key_groups, sessions=sessions,
                         failure=failure or (sessions[0].failure if sessions else WriterFailure()))  # type: ignore[attr-defined]
        self.states: dict[str, StateDescriptor] = {}

    def replace_sessions(self, sessions: Sequence[Session], epoch: int) -> None:
        """Route to ``sessions`` from now on (after a rebalance or reopen); state handles stay valid.
        The sessions' failure becomes the writer's: a reopen from a checkpoint starts afresh."""
        self.epoch = epoch
        if sessions:
            self.failure = sessions[0].failure  # type: ignore[attr-defined]
        self.route_to(sessions)

    def _run(self, plan: Plan) -> Any:
        raise NotImplementedError  # the face's

    # -- state handles -------------------------------------------------------------------

    def value_state(self, name: str, *, key_serializer: Serializer[Any] = STR,
                    value_serializer: Serializer[Any] = JSON, ttl_ms: int = 0) -> Any:
        descriptor = state_descriptor(name=name, kind=StateKind.VALUE, ttl_ms=ttl_ms)
        return self._run(self._handle(0, descriptor, key_serializer, value_serializer))

    def list_state(self, name: str, *, key_serializer: Serializer[Any] = STR,
                   value_serializer: Serializer[Any] = JSON, ttl_ms: int = 0) -> Any:
        descriptor = state_descriptor(name=name, kind=StateKind.LIST, ttl_ms=ttl_ms)
        return self._run(self._handle(1, descriptor, key_serializer, value_serializer))

    def map_state(self, name: str, *, key_serializer: Serializer[Any] = STR, map_key_serializer: Serializer[Any] = STR,
                  value_serializer: Serializer[Any] = JSON, ttl_ms: int = 0) -> Any:
        descriptor = state_descriptor(name=name, kind=StateKind.MAP, ttl_ms=ttl_ms)
        return self._run(self._handle(2, descriptor, key_serializer, map_key_serializer, value_serializer))

    def aggregating_state(self, name: str, *, merge_operator: str, key_serializer: Serializer[Any] = STR,
                          element_serializer: Serializer[Any] | None = JSON, ttl_ms: int = 0) -> Any:
        """``sum_int64``, ``max_int64``, ``min_int64`` take ints; ``list_append`` takes elements."""
        descriptor = state_descriptor(name=name, kind=StateKind.AGGREGATING, merge_operator=merge_operator,
                                      ttl_ms=ttl_ms)
        operands = operand_serializer_for(merge_operator, element_serializer)
        return self._run(self._handle(3, descriptor, key_serializer, operands))

    def _handle(self, kind: int, descriptor: StateDescriptor, *serializers: Serializer[Any]) -> Plan:
        self.failure.check()
        if self.states.get(descriptor.name) != descriptor:
            state = descriptor.to_proto()
            yield self._on_every_shard("DeclareStates", lambda s: pb.DeclareStatesRequest(shard=s.ref, states=[state]))
            self.states[descriptor.name] = descriptor
        return self._handle_types[kind](self, descriptor, *serializers)  # type: ignore[arg-type]

    def _on_every_shard(self, method: str, request_for: Callable[[Session], Any]) -> Each:
        return Each([Call(s.connection, method, request_for(s)) for s in self.sessions])

    # -- checkpoints ---------------------------------------------------------------------

    def _take_snapshot(self, checkpoint_id: int) -> Plan:
        """The sync phase at the barrier, after the flush: every shard takes its local checkpoint."""
        replies = yield self._on_every_shard(
            "SnapshotShard", lambda s: cpb.SnapshotShardRequest(shard=s.ref, checkpoint_id=checkpoint_id))
        return max((reply.sync_millis for reply in replies), default=0.0)

    def await_snapshot(self, checkpoint_id: int, *, timeout: float = 300.0) -> Any:
        """Wait until every shard's snapshot is durable; returns their handles for the commit."""
        self.failure.check()
        return self._run(awaiting_snapshots(self.sessions, checkpoint_id, timeout))

    def notify_checkpoint_complete(self, checkpoint_id: int) -> Any:
        """The checkpoint is committed: its uploads may be reused by the next one."""
        self.failure.check()
        return self._run(self._notify("NotifyCheckpointComplete", checkpoint_id))

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> Any:
        return self._run(self._notify("NotifyCheckpointAborted", checkpoint_id))

    def _notify(self, method: str, checkpoint_id: int) -> Plan:
        yield self._on_every_shard(method, lambda s: cpb.NotifyCheckpointRequest(shard=s.ref, checkpoint_id=checkpoint_id))

    def _close_shards(self) -> Plan:
        yield self._on_every_shard("CloseShard", lambda s: pb.CloseShardRequest(shard=s.ref))


def awaiting_snapshots(sessions: Sequence[RoutedSession], checkpoint_id: int, timeout: float,
                       clock: Callable[[], float] = time.monotonic,
                       ) -> Generator[Call, cpb.AwaitShardSnapshotResponse, list[cpb.ShardSnapshotHandle]]:
    """The async phase's wait as a plan: AwaitShardSnapshot per shard until each is durable."""
    deadline = clock() + timeout
    handles = []
    for session in sessions:
        while True:
            left = deadline - clock()
            if left <= 0:
                raise UnavailableError(f"the snapshot of checkpoint {checkpoint_id} of shard {session.shard_id} "
                                       f"is not durable after {timeout} s")
            request = cpb.AwaitShardSnapshotRequest(shard=session.ref, checkpoint_id=checkpoint_id,
                                                    timeout_millis=int(min(left, 10.0) * 1000))
            reply = yield Call(session.connection, "AwaitShardSnapshot", request, min(left, 10.0) + 5)
            if reply.state == cpb.SNAPSHOT_STATE_DURABLE:
                handles.append(reply.handle)
                break
            if reply.state == cpb.SNAPSHOT_STATE_FAILED:
                raise SnapshotFailedError(f"the snapshot of checkpoint {checkpoint_id} of shard "
                                          f"{session.shard_id} failed: {reply.error}")
    return handles
