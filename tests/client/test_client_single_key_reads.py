"""A single-key read takes the cheapest path: one blocking ReadBatch call, no future, no thread
hop, and still sees the writer's own writes (buffered, or in batches still in flight)."""
from __future__ import annotations

from typing import Any

import pytest

from stateserver.client import BYTES, StateClient

MAX_KEY_GROUPS = 128


class CallLog:
    """Records the session connection's calls; a call started as a future is refused."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, connection: Any) -> None:
        self.blocking: list[str] = []
        call = connection.call

        def logged(method: str, request: Any, **kwargs: Any) -> Any:
            self.blocking.append(method)
            return call(method, request, **kwargs)

        def refused(method: str, request: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"{method} started as a future")

        monkeypatch.setattr(connection, "call", logged)
        monkeypatch.setattr(connection, "start", refused)


def test_a_single_key_get_is_one_blocking_call(client: StateClient, namespace: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on the code before issue 14: a get went out as a future (``start``) and waited on it."""
    writer = client.open_writer(namespace, key_groups=f"0-{MAX_KEY_GROUPS - 1}", epoch=1)
    values = writer.value_state("v")
    values.put("stored", 1)
    writer.flush()
    values.put("buffered", 2)  # in the open buffer: combined with the node's answer
    log = CallLog(monkeypatch, writer.sessions[0].connection)
    assert (values.get("stored"), values.get("buffered"), values.get("absent", "none")) == (1, 2, "none")
    assert log.blocking == ["ReadBatch"] * 3


def test_a_single_key_get_after_a_put_sees_it_with_batches_in_flight(node_address: str, namespace: str) -> None:
    # Small batches, so that most of the puts are in batches the node has not applied yet.
    with StateClient(node_address, batch_ops=50, busy_batch_ops=50, max_in_flight=8) as client:
        writer = client.open_writer(namespace, key_groups=f"0-{MAX_KEY_GROUPS - 1}", epoch=1)
        values = writer.value_state("v", key_serializer=BYTES, value_serializer=BYTES)
        for round_number in range(3):
            for i in range(400):
                values.put(b"k%d" % i, b"%d-%d" % (round_number, i))
                if i % 97 == 0:  # read while the batch with this put may still be in flight
                    assert values.get(b"k%d" % i) == b"%d-%d" % (round_number, i)
            values.delete(b"k7")
            assert values.get(b"k7") is None
            assert values.get(b"k399") == b"%d-399" % round_number
        writer.flush()
        assert values.get_many([b"k%d" % i for i in (0, 7, 399)]) == [b"2-0", None, b"2-399"]
        writer.close()
