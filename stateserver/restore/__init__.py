"""Restoring a shard from a committed checkpoint: two explicit variants, as Flink's restore operations.

    full restore        one snapshot shard has exactly the key groups asked for: its files, as
                        uploaded, are a RocksDB checkpoint and become the shard (``_full_restore``)
    rescaling restore   otherwise: each overlapping snapshot shard is downloaded, opened read-only,
                        and the keys of the key groups both hold are copied into a fresh shard
                        (``_rescaling_restore``, ``_key_range_copy``)

Both download in parallel and check every file's size and xxh3-128 checksum against the manifest
(``_download``). ``restore_shard`` picks the variant; ``plan_restore`` says which it will be and
what it will download, without I/O. ``restore_shards`` restores several shards at once, all or nothing.

    result = restore_shard(store, catalog.resolve("job", "latest"), KeyGroupRange(0, 63),
                           data_dir / "namespaces/job/shards/0-63", resources=resources, executor=pool)
"""
from stateserver.restore._errors import CorruptObject, MissingObject
from stateserver.restore._key_range_copy import destination_family
from stateserver.restore._plan import RestorePlan, plan_restore
from stateserver.restore._rescaling_restore import union_of_states
from stateserver.restore._restore_operation import RestoreResult, restore_shard
from stateserver.restore._restore_shards import restore_shards

__all__ = [
    "CorruptObject",
    "MissingObject",
    "RestorePlan",
    "RestoreResult",
    "destination_family",
    "plan_restore",
    "restore_shard",
    "restore_shards",
    "union_of_states",
]
