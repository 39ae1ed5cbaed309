"""The restore package exports what its docstring, the node's registry and offline compaction rely on, and no more."""
from __future__ import annotations

import inspect

import stateserver.restore as restore


def test_exported_names() -> None:
    assert sorted(restore.__all__) == ["CorruptObject", "MissingObject", "RestorePlan", "RestoreResult",
                                       "destination_family", "plan_restore", "restore_shard", "restore_shards",
                                       "union_of_states"]
    assert all(hasattr(restore, name) for name in restore.__all__)


def test_restore_shard_keeps_the_signature_the_node_calls() -> None:
    parameters = inspect.signature(restore.restore_shard).parameters
    assert list(parameters) == ["store", "metadata", "key_groups", "target", "resources", "executor", "progress"]
    assert [p.name for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY] == [
        "resources", "executor", "progress"]
    assert parameters["progress"].default is None
