"""Planning a compaction: output ranges, their sources, the new checkpoint id. Pure, no I/O."""
from __future__ import annotations

import pytest

from stateserver.compaction import check_tiling, even_ranges, parse_ranges, plan_compaction, target_checkpoint_id
from stateserver.protocol.errors import InvalidInput
from stateserver.protocol.keygroups import KeyGroupRange, ranges_for_parallelism
from stateserver.protocol.states import StateDescriptor, StateKind
from stateserver.protocol.v1 import checkpoint_pb2 as cpb


def checkpoint(ranges: list[tuple[int, int]], epochs: list[int]) -> cpb.CheckpointMetadata:
    state = StateDescriptor(name="values", kind=StateKind.VALUE).to_proto()
    shards = [cpb.ShardSnapshotHandle(namespace="ns", key_group_start=a, key_group_end=b, checkpoint_id=4,
                                      writer_epoch=epoch, max_key_groups=128, states=[state],
                                      manifest_key=f"ns/manifests/{a}-{b}", state_bytes=1000 + a)
              for (a, b), epoch in zip(ranges, epochs)]
    return cpb.CheckpointMetadata(namespace="ns", checkpoint_id=4, max_key_groups=128, shards=shards)


def test_even_ranges_are_the_clients_ranges_for_that_parallelism() -> None:
    for shards in (1, 3, 5, 7, 128):
        assert even_ranges(128, shards) == ranges_for_parallelism(128, shards)
    with pytest.raises(InvalidInput, match="cannot split 128 key groups into 129 shards"):
        even_ranges(128, 129)


def test_ranges_must_tile_the_namespace() -> None:
    assert parse_ranges("0-41, 42-127") == [KeyGroupRange(0, 41), KeyGroupRange(42, 127)]
    check_tiling([KeyGroupRange(42, 127), KeyGroupRange(0, 41)], 128)  # any order
    for ranges, problem in ((["0-41", "43-127"], "42-42 are in no range"),
                            (["0-41", "41-127"], "overlap at key group 41"),
                            (["1-127"], "0-0 are in no range"),
                            (["0-130"], "128-130 are outside the namespace")):
        with pytest.raises(InvalidInput, match=problem):
            check_tiling([KeyGroupRange.parse(r) for r in ranges], 128)
    with pytest.raises(ValueError, match="expected a key-group range"):
        parse_ranges("0-41,x")


def test_the_new_id_is_above_every_committed_one() -> None:
    assert target_checkpoint_id([1, 4, 7], None) == 8
    assert target_checkpoint_id([1, 4, 7], 20) == 20
    with pytest.raises(InvalidInput, match="above the latest committed checkpoint 7; 7 is not"):
        target_checkpoint_id([1, 4, 7], 7)


def test_each_output_shard_reads_the_input_shards_overlapping_it() -> None:
    source = checkpoint([(0, 31), (32, 63), (64, 95), (96, 127)], epochs=[3, 5, 3, 4])
    plan = plan_compaction(source, even_ranges(128, 3), target_checkpoint_id=9)
    assert [(str(o.key_groups), [h.key_group_start for h in o.sources]) for o in plan.outputs] == [
        ("0-42", [0, 32]), ("43-85", [32, 64]), ("86-127", [64, 96])]
    assert plan.writer_epoch == 5 and plan.max_key_groups == 128 and plan.target_checkpoint_id == 9
    assert plan.input_bytes == 4000 + 0 + 32 + 64 + 96 and plan.outputs[0].source_bytes == 2032
    unchanged = plan_compaction(source, None, target_checkpoint_id=9)
    assert [(o.key_groups.start, len(o.sources)) for o in unchanged.outputs] == [(0, 1), (32, 1), (64, 1), (96, 1)]
