"""Writer (sync face): the one client that owns a set of shards of a namespace at an epoch.

Its operations are ``WriterCore``'s, run with blocking calls; what is its own is driving its
sessions: flushing them, and sending a read's batches to every shard before taking the answers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stateserver.client._connection import run_plan
from stateserver.client._handles import Values
from stateserver.client._plans import Plan
from stateserver.client._shard_session import ShardSession
from stateserver.client._states import AggregatingState, ListState, MapState, ValueState
from stateserver.client._positions import picked, scatter
from stateserver.client._writer_core import WriterCore
from stateserver.protocol.operations import ReadOp


class Writer(WriterCore[ShardSession]):
    __doc__ = WriterCore.__doc__
    _handle_types = (ValueState, ListState, MapState, AggregatingState)

    def _run(self, plan: Plan) -> Any:
        return run_plan(plan)

    def join(self, outcomes: list[Any]) -> None:
        """The sync sessions' writes return nothing."""

    def read(self, op: ReadOp, state: str, keys: Sequence[bytes], map_keys: Sequence[bytes], merge_operator: str,
             finish: Callable[[Values], Any]) -> Any:
        if len(keys) == 1:  # a single key: one blocking call
            return finish([self.session_for(keys[0]).read_one(op, state, keys[0], map_keys[0] if map_keys else b"",
                                                              merge_operator)])
        started = []
        for session, chosen, key_groups in self.split(keys):
            started.append((chosen, session, session.start_read(op, state, picked(keys, chosen),
                                                                 picked(map_keys, chosen), merge_operator, key_groups)))
        results: Values = [None] * len(keys)
        for chosen, session, group in started:
            values = session.finish_read(group)
            if chosen is None:
                results = values
            else:
                scatter(results, chosen, values)
        return finish(results)

    def flush(self) -> None:
        """Send every buffered write and wait until the nodes applied them."""
        self.failure.check()
        for session in self.sessions:
            session.start_flush()
        for session in self.sessions:
            session.wait_for_writes()

    def snapshot(self, checkpoint_id: int) -> float:
        """The sync phase at the barrier: flush, then every shard takes its local checkpoint.

        Returns the longest sync pause in milliseconds. Uploads go on in the background on the
        nodes; writes made after this returns are not in the checkpoint.
        """
        self.flush()
        return self._run(self._take_snapshot(checkpoint_id))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Flush and release the shards (they stay on the node's disk)."""
        self.flush()
        self._run(self._close_shards())

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
