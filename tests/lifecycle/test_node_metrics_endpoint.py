"""The metrics endpoint of a real node reports exactly the workload a client ran."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import test_settings

from stateserver.client import BYTES, AlreadyExistsError, StateClient
from lifecycle_node import Samples, ServedNode, sample, served
from stateserver.store import paths

PUTS = 1000
BATCH_OPS = 100
HITS = 250
MISSES = 50


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServedNode]:
    with served(tmp_path / "data") as running:
        yield running


def requests(samples: Samples, method: str, code: str = "OK") -> float | None:
    return sample(samples, "stateserver_requests_total", method=method, code=code)


def test_scrape_matches_puts_gets_batches_and_errors(node: ServedNode) -> None:
    values = {f"key-{i}": bytes([i % 251]) * (1 + i % 37) for i in range(PUTS)}
    read_keys = list(values)[:HITS] + [f"missing-{i}" for i in range(MISSES)]
    with StateClient(node.address, batch_ops=BATCH_OPS, busy_batch_ops=BATCH_OPS) as client:  # batches of exactly BATCH_OPS
        client.create_namespace("metrics", max_key_groups=128)
        with pytest.raises(AlreadyExistsError):
            client.create_namespace("metrics", max_key_groups=64)
        writer = client.open_writer("metrics", key_groups="0-127", epoch=1)
        state = writer.value_state("counts", value_serializer=BYTES)
        for key, value in values.items():
            state.put(key, value)
        writer.flush()
        assert state.get_many(read_keys) == [values.get(key) for key in read_keys]
        samples = node.scrape()

        write_batches = PUTS // BATCH_OPS
        read_batches = math.ceil((HITS + MISSES) / BATCH_OPS)
        assert requests(samples, "WriteBatch") == write_batches
        assert requests(samples, "ReadBatch") == read_batches
        assert requests(samples, "OpenShard") == 1
        assert requests(samples, "CreateNamespace", "ALREADY_EXISTS") == 1
        # A batch that overtook its predecessor on the way is refused (ABORTED) and sent again.
        resent = requests(samples, "WriteBatch", "ABORTED") or 0
        assert sample(samples, "stateserver_request_seconds_count", method="WriteBatch") == write_batches + resent
        assert sample(samples, "stateserver_request_seconds_count", method="ReadBatch") == read_batches

        assert sample(samples, "stateserver_keys_written_total") == PUTS
        assert sample(samples, "stateserver_bytes_written_total") == sum(len(k) + len(v) for k, v in values.items())
        assert sample(samples, "stateserver_keys_read_total") == HITS + MISSES
        assert sample(samples, "stateserver_bytes_read_total") == sum(len(values[k]) for k in read_keys[:HITS])
        assert sample(samples, "stateserver_batch_ops_count") == write_batches
        assert sample(samples, "stateserver_batch_ops_sum") == PUTS
        assert sample(samples, "stateserver_batch_ops_bucket", le="100.0") == write_batches
        assert sample(samples, "stateserver_batch_ops_bucket", le="50.0") == 0

        shard = {"namespace": "metrics", "shard": "0-127"}
        assert sample(samples, "stateserver_shards", namespace="metrics") == 1
        assert sample(samples, "stateserver_shard_disk_bytes", **shard) > 0  # type: ignore[operator]
        assert sample(samples, "stateserver_rocksdb_memtable_bytes", **shard) > 0  # type: ignore[operator]
        for name in ("stateserver_rocksdb_pending_compaction_bytes", "stateserver_rocksdb_l0_files",
                     "stateserver_rocksdb_block_cache_hits_total"):
            assert sample(samples, name, **shard) is not None, name
        # No checkpoint or restore ran yet (the next test takes them).
        for name in ("stateserver_checkpoint_sync_seconds_count", "stateserver_checkpoint_async_seconds_count",
                     "stateserver_checkpoint_uploaded_bytes_total", "stateserver_checkpoint_reused_bytes_total",
                     "stateserver_restore_seconds_count", "stateserver_restore_bytes_total"):
            assert sample(samples, name) == 0, name

        writer.close()
    after_close = node.scrape()
    assert requests(after_close, "CloseShard") == 1
    assert sample(after_close, "stateserver_shards", namespace="metrics") is None
    assert sample(after_close, "stateserver_rocksdb_memtable_bytes", **shard) is None


def uploaded_bytes_by_checkpoint(snapshot_dir: Path) -> dict[int, int]:
    """Bytes of shared and private files in the store, by the checkpoint that uploaded them."""
    uploaded: dict[int, int] = {}
    for path in snapshot_dir.rglob("*"):
        parsed = paths.parse_key(path.relative_to(snapshot_dir).as_posix()) if path.is_file() else None
        if parsed is not None and parsed.kind in ("shared", "private"):
            uploaded[parsed.checkpoint_id] = uploaded.get(parsed.checkpoint_id, 0) + path.stat().st_size
    return uploaded


def test_scrape_matches_checkpoints_uploads_and_restores(node: ServedNode) -> None:
    """Two checkpoints (the second reusing the first's SSTs), then a restore: the figures are the
    bytes that landed in the store and came back from it."""
    with StateClient(node.address) as client:
        client.create_namespace("snap", max_key_groups=64)
        writer = client.open_writer("snap", key_groups="0-63", epoch=1)
        state = writer.value_state("v", value_serializer=BYTES)
        handles = []
        for checkpoint_id, first_key in ((1, 0), (2, 5000)):
            state.put_many({f"k{i}": bytes([i % 256]) * 100 for i in range(first_key, first_key + 5000)})
            writer.snapshot(checkpoint_id)
            handles += writer.await_snapshot(checkpoint_id)
            client.commit_checkpoint("snap", checkpoint_id, handles[-1:], [writer])
            writer.notify_checkpoint_complete(checkpoint_id)
        samples = node.scrape()
        uploaded = uploaded_bytes_by_checkpoint(node.data_dir / "snapshots")
        assert sorted(uploaded) == [1, 2]
        assert sample(samples, "stateserver_checkpoint_sync_seconds_count") == 2
        assert sample(samples, "stateserver_checkpoint_async_seconds_count") == 2
        assert sample(samples, "stateserver_checkpoint_uploaded_bytes_total") == uploaded[1] + uploaded[2]
        reused = handles[1].state_bytes - uploaded[2]  # checkpoint 2 names cp 1's SSTs it did not upload
        assert reused > 0
        assert sample(samples, "stateserver_checkpoint_reused_bytes_total") == reused
        assert sample(samples, "stateserver_restore_seconds_count") == 0

        # Checkpoint 1, not 2: the node keeps a local copy of its last confirmed checkpoint (2),
        # which a restore would link instead of downloading (local recovery).
        restored = client.open_writer("snap", key_groups="0-63", epoch=2, restore=1)
        assert restored.value_state("v", value_serializer=BYTES).get("k4999") == bytes([4999 % 256]) * 100
        after_restore = node.scrape()
        assert sample(after_restore, "stateserver_restore_seconds_count") == 1
        assert sample(after_restore, "stateserver_restore_bytes_total") == handles[0].state_bytes
        restored.close()
        exported = {name for name, _labels in after_restore}
        dashboard_reads = test_settings.METRICS
        assert dashboard_reads <= exported, f"the dashboard reads metrics the node does not export: " \
                                            f"{sorted(dashboard_reads - exported)}"
