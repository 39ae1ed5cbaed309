"""The metrics endpoint of a real node reports exactly the workload a client ran."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import BYTES, AlreadyExistsError, StateClient
from lifecycle_node import Samples, ServedNode, sample, served

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
        assert sample(samples, "stateserver_request_seconds_count", method="WriteBatch") == write_batches
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
        # Defined for the snapshot code to record into; nothing recorded them yet.
        for name in ("stateserver_checkpoint_sync_seconds_count", "stateserver_checkpoint_async_seconds_count",
                     "stateserver_checkpoint_uploaded_bytes_total", "stateserver_checkpoint_reused_bytes_total",
                     "stateserver_restore_seconds_count", "stateserver_restore_bytes_total"):
            assert sample(samples, name) == 0, name

        writer.close()
    after_close = node.scrape()
    assert requests(after_close, "CloseShard") == 1
    assert sample(after_close, "stateserver_shards", namespace="metrics") is None
    assert sample(after_close, "stateserver_rocksdb_memtable_bytes", **shard) is None
