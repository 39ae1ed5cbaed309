"""Writer fencing (DESIGN.md invariant 5): a newer epoch shuts the older writer out."""
from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from stateserver.client import FencedError, StateClient, StateServerError, Writer
from support.checkpoints import commit


@pytest.fixture
def two_writers(node_address: str, namespace: str) -> Iterator[tuple[Writer, Writer]]:
    """Writer A at epoch 1 with state in checkpoint 1, then writer B (another process) at epoch 2,
    restored from it (a new writer never takes another's local copy as it is: invariant 8)."""
    with StateClient(node_address) as client_a, StateClient(node_address) as client_b:
        a = client_a.open_writer(namespace, key_groups="0-127", epoch=1)
        a.value_state("v").put_many({"k1": "a1", "k2": "a2"})
        a.list_state("l").add_all("k", ["a"])
        a.map_state("m").put("k", "mk", "a")
        a.aggregating_state("s", merge_operator="sum_int64").merge("k", 1)
        commit(client_a, a, 1)
        b = client_b.open_writer(namespace, key_groups="0-127", epoch=2, restore="latest")
        yield a, b


def assert_fenced(error: pytest.ExceptionInfo[StateServerError]) -> None:
    assert isinstance(error.value, FencedError)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.reason == "fenced"
    assert not error.value.retriable


def assert_state_of_a(b: Writer) -> None:
    assert b.value_state("v").get_many(["k1", "k2", "k3"]) == ["a1", "a2", None]
    assert b.list_state("l").get("k") == ["a"]
    assert list(b.map_state("m").items("k")) == [("mk", "a")]
    assert b.aggregating_state("s", merge_operator="sum_int64").get("k") == 1


def test_the_older_writers_writes_fail_and_change_nothing(two_writers: tuple[Writer, Writer]) -> None:
    a, b = two_writers
    a.value_state("v").put("k1", "stale")
    a.value_state("v").delete("k2")
    a.value_state("v").put("k3", "stale")
    a.list_state("l").add("k", "stale")
    a.map_state("m").put("k", "mk", "stale")
    a.aggregating_state("s", merge_operator="sum_int64").merge("k", 100)
    with pytest.raises(FencedError) as error:
        a.flush()
    assert_fenced(error)
    assert_state_of_a(b)


def test_the_older_writers_reads_fail(two_writers: tuple[Writer, Writer]) -> None:
    a, _b = two_writers
    reads = [
        lambda: a.value_state("v").get("k1"),
        lambda: a.value_state("v").get_many(["k1", "k2"]),
        lambda: a.list_state("l").get("k"),
        lambda: list(a.list_state("l").iterate("k")),
        lambda: a.map_state("m").get("k", "mk"),
        lambda: a.map_state("m").contains("k", "mk"),
        lambda: list(a.map_state("m").items("k")),
        lambda: a.aggregating_state("s", merge_operator="sum_int64").get("k"),
    ]
    for read in reads:
        with pytest.raises(FencedError) as error:
            read()
        assert_fenced(error)


def test_the_older_writer_can_neither_declare_states_nor_close_the_shard(two_writers: tuple[Writer, Writer]) -> None:
    a, b = two_writers
    with pytest.raises(FencedError) as error:
        a.value_state("declared-by-a")
    assert_fenced(error)
    with pytest.raises(FencedError) as error:
        a.close()
    assert_fenced(error)
    # A's declaration did not land: B may declare the name with another kind.
    b.list_state("declared-by-a").add("k", 1)
    b.flush()
    assert b.list_state("declared-by-a").get("k") == [1]
    assert_state_of_a(b)


def test_opening_with_an_older_epoch_fails_and_the_newer_writer_goes_on(
    node_address: str, namespace: str, two_writers: tuple[Writer, Writer]
) -> None:
    _a, b = two_writers
    values = b.value_state("v")
    values.put("k1", "b1")
    b.flush()  # B's batch 1
    with StateClient(node_address) as late:
        with pytest.raises(FencedError) as error:
            late.open_writer(namespace, key_groups="0-127", epoch=1)
        assert_fenced(error)
    # B's state is intact and B's next batch (2) still applies: the failed open reset nothing.
    values.put("k2", "b2")
    b.flush()
    assert values.get_many(["k1", "k2"]) == ["b1", "b2"]
    b.list_state("l").add("k", "b")
    b.flush()
    assert b.list_state("l").get("k") == ["a", "b"]


def test_a_third_writer_fences_the_second(node_address: str, namespace: str,
                                          two_writers: tuple[Writer, Writer]) -> None:
    _a, b = two_writers
    b_values = b.value_state("v")
    with StateClient(node_address) as client_c:
        c = client_c.open_writer(namespace, key_groups="0-127", epoch=7, restore="latest")
        b_values.put("k1", "from-b")
        with pytest.raises(FencedError):
            b.flush()
        assert c.value_state("v").get("k1") == "a1"
        c.value_state("v").put("k1", "from-c")
        c.flush()
        assert c.value_state("v").get("k1") == "from-c"
