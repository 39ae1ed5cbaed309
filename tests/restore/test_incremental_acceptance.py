"""Issue #3, incremental snapshots: after a change of 1% of the keys of a 60 MB shard, checkpoint 2
uploads under a tenth of what checkpoint 1 uploaded, and each checkpoint restores to exactly its own
state. A real node process on loopback, real RocksDB, on file:// and on SeaweedFS S3.

What was uploaded is read from the store itself: every object key names the checkpoint that wrote
it (stateserver.store.paths), and the shard manifests say which of those files each checkpoint uses.
The node is scraped by Prometheus meanwhile, as in production; a scrape must cut no SST.
"""
from __future__ import annotations

import dataclasses
import random
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stateserver.client import BYTES, StateClient, Writer
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.store import open_store
from support.checkpoint_objects import objects_by_checkpoint, restore_checkpoint, restored_values
from support.node import free_loopback_port, run_node

NAMESPACE = "incremental"
MAX_KEY_GROUPS = 128
KEY_GROUPS = "0-127"  # one shard: all of the state in one RocksDB, so its compactions are all there is
STATE = "values"
KEYS = 450_000
KEY_BYTES = 16
VALUE_BYTES = 120  # random, so lz4 cannot shrink them: 450,000 x 136 B is 61 MB of SSTs
CHANGED = KEYS // 100
PUT_CHUNK = 10_000
MIN_STATE_BYTES = 50 << 20
SETTLE_TIMEOUT_S = 30.0

pytestmark = pytest.mark.timeout(240)


@dataclasses.dataclass(frozen=True)
class LsmFigures:
    l0_files: int
    pending_compaction_bytes: int
    memtable_bytes: int


def lsm_figures(metrics_port: int) -> LsmFigures:
    """The shard's RocksDB figures from the node's Prometheus endpoint (with several workers the
    supervisor's, whose series also carry the label ``worker``: the shard lives on one)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    wanted = {"namespace": NAMESPACE, "shard": KEY_GROUPS}
    values = {sample.name: int(sample.value) for family in text_string_to_metric_families(text)
              for sample in family.samples if _without_worker(sample.labels) == wanted}
    return LsmFigures(l0_files=values["stateserver_rocksdb_l0_files"],
                      pending_compaction_bytes=values["stateserver_rocksdb_pending_compaction_bytes"],
                      memtable_bytes=values["stateserver_rocksdb_memtable_bytes"])


def _without_worker(labels: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in labels.items() if name != "worker"}


def wait_until_compacted(metrics_port: int) -> LsmFigures:
    """Until no compaction is due and at most one file is in L0. A memtable still being flushed
    adds one more (RocksDB keeps one immutable memtable at most), still short of the four that
    start a compaction, with room for checkpoint 1's flush."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        figures = lsm_figures(metrics_port)
        if figures.pending_compaction_bytes == 0 and figures.l0_files <= 1:
            return figures
        assert time.monotonic() < deadline, f"RocksDB did not compact the load: {figures}"
        time.sleep(0.05)


def checkpoint(client: StateClient, writer: Writer, checkpoint_id: int) -> None:
    writer.snapshot(checkpoint_id)
    handles = writer.await_snapshot(checkpoint_id)
    client.commit_checkpoint(NAMESPACE, checkpoint_id, handles, writers=[writer])
    writer.notify_checkpoint_complete(checkpoint_id)


def test_one_percent_changed_uploads_under_a_tenth_and_both_checkpoints_restore_exactly(
        store_url: str, tmp_path: Path) -> None:
    started = time.perf_counter()
    rng = random.Random(3)
    keys = list(dict.fromkeys(rng.randbytes(KEY_BYTES) for _ in range(KEYS)))
    assert len(keys) == KEYS  # 16 random bytes do not collide
    state_1 = {key: rng.randbytes(VALUE_BYTES) for key in keys}
    state_2 = dict(state_1)
    changed = rng.sample(keys, CHANGED)
    state_2.update((key, rng.randbytes(VALUE_BYTES)) for key in changed)

    metrics_port = free_loopback_port()
    # Batches of 1000: the load then arrives slowly enough for RocksDB to compact its first four
    # L0 files before the last flushes land (one L0 file after the load, as the arithmetic below
    # needs). With the default 4000 it arrives faster than the compaction on two cores, leaves three
    # L0 files that never compact (4 start one), and checkpoint 1's flush then starts a compaction
    # that rewrites the whole shard (measured: 4 of 6 runs).
    with run_node(tmp_path / "node", extra_args=["--snapshot-url", store_url, "--metrics-port", str(metrics_port)]) \
            as node, StateClient(node.address, timeout=60, batch_ops=1000) as client:
        client.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
        writer = client.open_writer(NAMESPACE, key_groups=KEY_GROUPS, epoch=1)
        values = writer.value_state(STATE, key_serializer=BYTES, value_serializer=BYTES)
        for start in range(0, KEYS, PUT_CHUNK):
            values.put_many({key: state_1[key] for key in keys[start:start + PUT_CHUNK]})
        writer.flush()
        # The load fills four memtables, so RocksDB compacts their L0 files into one SST. A
        # compaction that ends between checkpoints 1 and 2 rewrites every byte of a shard this
        # small, and checkpoint 2 would upload it all again (measured: 90%) whatever the snapshot
        # code does. So checkpoint 1 is cut once the load is compacted; its flush and checkpoint
        # 2's then leave fewer than the four L0 files that would start the next compaction.
        wait_until_compacted(metrics_port)
        checkpoint(client, writer, 1)

        values.put_many({key: state_2[key] for key in changed})
        writer.flush()
        # A scrape, as Prometheus makes all the time, must not flush the change into an SST of its own.
        before, after = lsm_figures(metrics_port), lsm_figures(metrics_port)
        assert after.memtable_bytes >= CHANGED * VALUE_BYTES and after.l0_files == before.l0_files, (before, after)
        checkpoint(client, writer, 2)
        writer.close()
    written = time.perf_counter()

    store = open_store(store_url)
    by_checkpoint = objects_by_checkpoint(store, NAMESPACE)
    assert sorted(by_checkpoint) == [1, 2]
    uploaded = {checkpoint_id: sum(meta.size for meta in objects) for checkpoint_id, objects in by_checkpoint.items()}
    ratio = uploaded[2] / uploaded[1]
    print(f"\n{store_url.split(':')[0]}: checkpoint 1 uploaded {uploaded[1]:,} B, checkpoint 2 {uploaded[2]:,} B "
          f"({ratio:.2%})")
    assert uploaded[1] >= MIN_STATE_BYTES
    assert uploaded[2] < uploaded[1] / 10

    # The manifests agree with the store: checkpoint 2 names every SST checkpoint 1 uploaded (none
    # was rewritten or uploaded again), its own uploads hold the changed values, and nothing that
    # checkpoint 2 wrote is left unnamed.
    catalog = CheckpointCatalog(store)
    (shard_1,), (shard_2,) = catalog.load(NAMESPACE, 1).shards, catalog.load(NAMESPACE, 2).shards
    sizes = {meta.key: meta.size for objects in by_checkpoint.values() for meta in objects}
    for handle in (shard_1, shard_2):
        assert all(sizes[f.object_key] == f.size for f in (*handle.shared_files, *handle.private_files))
    shared_1 = {f.object_key for f in shard_1.shared_files}
    assert shared_1 <= {f.object_key for f in shard_2.shared_files}
    new_shared = [f for f in shard_2.shared_files if f.object_key not in shared_1]
    assert new_shared and all(paths.checkpoint_id_of(f.object_key) == 2 for f in new_shared)
    assert CHANGED * VALUE_BYTES <= sum(f.size for f in new_shared) < 2 * CHANGED * (KEY_BYTES + VALUE_BYTES)
    named_by_2 = {f.object_key for f in (*new_shared, *shard_2.private_files)} | {
        shard_2.manifest_key, paths.checkpoint_metadata(NAMESPACE, 2)}
    assert {meta.key for meta in by_checkpoint[2]} == named_by_2

    # All of a restored shard is compared straight from its RocksDB; a node serving it then reads
    # the changed keys and a tenth of the others through the client.
    served_keys = changed + keys[::10]
    restore_seconds = []
    for checkpoint_id, expected in ((1, state_1), (2, state_2)):
        data_dir = tmp_path / f"restored-{checkpoint_id}"
        restore_seconds.append(restore_checkpoint(store_url, NAMESPACE, checkpoint_id, data_dir))
        stored = restored_values(data_dir, NAMESPACE, KEY_GROUPS, STATE)
        assert len(stored) == KEYS and stored == expected, f"checkpoint {checkpoint_id} restored other state"
        # One worker: `stateserver restore` writes the layout of a one-process node (data_dir/namespaces),
        # where a node of several workers keeps each worker's shards in data_dir/worker-<i>.
        with run_node(data_dir, workers=1) as restored, StateClient(restored.address, timeout=60) as client:
            reader = client.open_writer(NAMESPACE, key_groups=KEY_GROUPS, epoch=2)  # newer than the snapshot's
            served = reader.value_state(STATE, key_serializer=BYTES, value_serializer=BYTES).get_many(served_keys)
            assert served == [expected[key] for key in served_keys], f"checkpoint {checkpoint_id} served other values"
            reader.close()
    print(f"write and checkpoints {written - started:.1f} s, restores {restore_seconds[0]:.1f} s and "
          f"{restore_seconds[1]:.1f} s, total {time.perf_counter() - started:.1f} s")
