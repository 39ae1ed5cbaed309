"""Aggregating state with every merge operator, folded on the node (and in the client's overlay)."""
from __future__ import annotations


import pytest

from stateserver.client import InvalidArgumentError, StateClient, Writer
from support.checkpoints import commit

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def test_sum_int64_with_negative_numbers(writer: Writer) -> None:
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    for operand in (5, -12, 3, 0, -1):
        totals.merge("a", operand)
    totals.merge("b", -7)
    writer.flush()
    assert totals.get("a") == -5
    assert totals.get("b") == -7
    assert totals.get("never") is None  # absent, not 0
    totals.merge("a", 10)
    writer.flush()
    assert totals.get_many(["a", "b", "never"]) == [5, -7, None]


@pytest.mark.parametrize(("operands", "expected"), [
    ([INT64_MAX, 1], INT64_MIN),
    ([INT64_MIN, -1], INT64_MAX),
    ([INT64_MAX, INT64_MAX], -2),
    ([INT64_MAX, 1, -1], INT64_MAX),
])
def test_sum_int64_wraps_around_like_a_java_long(writer: Writer, operands: list[int], expected: int) -> None:
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    # Folded in one batch ...
    for operand in operands:
        totals.merge("one-batch", operand)
    writer.flush()
    # ... and one flush per operand, so that the node folds each into the stored value.
    for operand in operands:
        totals.merge("many-batches", operand)
        writer.flush()
    assert totals.get_many(["one-batch", "many-batches"]) == [expected, expected]


def test_max_and_min_int64(writer: Writer) -> None:
    highest = writer.aggregating_state("highest", merge_operator="max_int64")
    lowest = writer.aggregating_state("lowest", merge_operator="min_int64")
    for operand in (-5, -3, -9):  # all negative: an absent value must not count as 0
        highest.merge("neg", operand)
        lowest.merge("neg", operand)
    for operand in (4, 11, 2):  # all positive
        highest.merge("pos", operand)
        lowest.merge("pos", operand)
    highest.merge("edges", INT64_MIN)
    lowest.merge("edges", INT64_MAX)
    writer.flush()
    assert highest.get_many(["neg", "pos", "edges"]) == [-3, 11, INT64_MIN]
    assert lowest.get_many(["neg", "pos", "edges"]) == [-9, 2, INT64_MAX]

    # A later batch folds into what is stored.
    highest.merge("neg", -4)
    highest.merge("pos", 12)
    lowest.merge("neg", -8)
    lowest.merge("pos", 3)
    writer.flush()
    assert highest.get_many(["neg", "pos"]) == [-3, 12]
    assert lowest.get_many(["neg", "pos"]) == [-9, 2]


def test_list_append(writer: Writer) -> None:
    history = writer.aggregating_state("history", merge_operator="list_append")
    history.merge("k", {"step": 1})
    history.merge("k", "two")
    writer.flush()
    history.merge("k", [3])
    history.merge("other", None)
    writer.flush()
    assert history.get("k") == [{"step": 1}, "two", [3]]
    assert history.get("other") == [None]
    assert history.get("never") is None


@pytest.mark.parametrize("operator", ["sum_int64", "max_int64", "min_int64", "list_append"])
def test_clear_resets_the_aggregate(writer: Writer, operator: str) -> None:
    state = writer.aggregating_state("agg", merge_operator=operator)
    operand = 6 if operator != "list_append" else "x"
    state.merge("cleared", operand)
    state.merge("kept", operand)
    writer.flush()
    state.clear("cleared")
    writer.flush()
    assert state.get_many(["cleared", "kept"]) == [None, 6 if operator != "list_append" else ["x"]]
    state.merge("cleared", operand)
    writer.flush()
    assert state.get("cleared") == (6 if operator != "list_append" else ["x"])


@pytest.mark.parametrize("operator", ["sum_int64", "max_int64", "min_int64", "list_append"])
def test_a_new_writer_reads_the_flushed_aggregate(node_address: str, writer: Writer, namespace: str,
                                                  operator: str) -> None:
    state = writer.aggregating_state("agg", merge_operator=operator)
    for operand in (3, -2, 8):
        state.merge("k", operand)
    with StateClient(node_address) as coordinator:
        commit(coordinator, writer, 1)
    expected = {"sum_int64": 9, "max_int64": 8, "min_int64": -2, "list_append": [3, -2, 8]}[operator]
    with StateClient(node_address) as other:
        second = other.open_writer(namespace, key_groups="0-127", epoch=2, restore="latest")
        assert second.aggregating_state("agg", merge_operator=operator).get("k") == expected


def test_an_operand_that_is_not_an_int64_is_refused_by_the_client(writer: Writer) -> None:
    """Both are InvalidArgumentError (old code: struct.error and a plain ValueError)."""
    totals = writer.aggregating_state("totals", merge_operator="sum_int64")
    with pytest.raises(InvalidArgumentError):  # the INT64 serializer takes 64-bit ints only
        totals.merge("k", 1 << 64)
    with pytest.raises(InvalidArgumentError):
        writer.aggregating_state("names", merge_operator="concat_strings")


def test_an_unknown_merge_operator_is_refused_by_the_node(client: StateClient, namespace: str) -> None:
    from stateserver.protocol.v1 import state_pb2 as pb

    writer = client.open_writer(namespace, key_groups="0-127", epoch=1)
    request = pb.DeclareStatesRequest(shard=writer.sessions[0].ref, states=[pb.StateDescriptor(
        name="agg", kind=pb.STATE_KIND_AGGREGATING, merge_operator="concat_strings")])
    with pytest.raises(InvalidArgumentError, match="concat_strings"):
        writer.sessions[0].connection.call("DeclareStates", request)
