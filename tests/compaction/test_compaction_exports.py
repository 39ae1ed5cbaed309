"""The compaction package exports what its docstring promises, and the CLI registers `compact`."""
from __future__ import annotations

from stateserver import compaction
from stateserver.cli.main import build_parser


def test_exported_names() -> None:
    assert sorted(compaction.__all__) == [
        "CompactionConflict", "CompactionPlan", "CompactionResult", "OutputShard", "ShardCompaction",
        "check_tiling", "compact_checkpoint", "even_ranges", "parse_ranges", "plan_compaction",
        "target_checkpoint_id"]
    assert all(hasattr(compaction, name) for name in compaction.__all__)
    for name in ("plan_compaction", "compact_checkpoint", "CompactionConflict", "stateserver gc"):
        assert name in (compaction.__doc__ or "")


def test_compact_is_a_stateserver_command() -> None:
    options = build_parser().parse_args(["compact", "--snapshot-url", "file:///x", "--namespace", "ns",
                                         "--checkpoint", "latest", "--shards", "3"])
    assert options.shards == 3 and options.key_groups is None and not options.dry_run
