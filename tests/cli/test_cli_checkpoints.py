"""The checkpoint commands end to end: `.venv/bin/stateserver ...` in a subprocess.

Snapshots are made by the node's code path in this process (restore.state_builder); the CLI
reads them from file:// or SeaweedFS, and what `stateserver restore` writes is served by a real
`stateserver serve` process and read back through the client library.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Sequence

import pytest

from stateserver.client import BYTES, RestoreRequiredError, StateClient
from restore.state_builder import DAY_MS, Expected, NamespaceState
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.store import ObjectStore, open_store
from stateserver.protocol.v1 import checkpoint_pb2 as cpb
from support.node import free_loopback_port, run_node
from support.seaweedfs import SeaweedS3

STATESERVER = pathlib.Path(sys.executable).parent / "stateserver"
NAMESPACE = "orders"
# The store's URL, the store, checkpoints 1 and 2, and what each holds.
Snapshots = tuple[str, ObjectStore, list[cpb.CheckpointMetadata], list[Expected]]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STATESERVER), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def store_args(url: str, namespace: str = NAMESPACE, options: Sequence[str] = ()) -> list[str]:
    return ["--snapshot-url", url, "--namespace", namespace, *(a for o in options for a in ("--snapshot-option", o))]


def assert_one_clear_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stateserver: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def snapshots(tmp_path: pathlib.Path) -> Snapshots:
    """A file:// store with checkpoints 1 and 2 of 4 shards at writer epoch 3."""
    url = (tmp_path / "store").as_uri()
    store = open_store(url)
    source = NamespaceState(tmp_path / "source", store, NAMESPACE, parallelism=4, epoch=3)
    try:
        source.write_every_kind(800)
        first = source.checkpoint(1)
        expected_1 = source.expected.copy()
        source.write_every_kind(800)
        second = source.checkpoint(2)
    finally:
        source.close()
    return url, store, [first, second], [expected_1, source.expected]


def test_list_show_and_verify(snapshots: Snapshots) -> None:
    url, _store, (first, second), _ = snapshots
    listed = run("checkpoints", "list", *store_args(url))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(row[0], row[3]) for row in rows] == [("1", "4"), ("2", "4")]

    shown = run("checkpoints", "show", *store_args(url), "--checkpoint", "latest")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"checkpoint 2 of namespace '{NAMESPACE}'")
    for handle in second.shards:
        assert f"shard {handle.key_group_start}-{handle.key_group_end}: writer epoch 3" in shown.stdout
        assert all(f.object_key in shown.stdout for f in (*handle.shared_files, *handle.private_files))
    assert "sums (aggregating, sum_int64)" in shown.stdout and f"expiring (value, ttl {DAY_MS} ms)" in shown.stdout

    verified = run("verify", *store_args(url), "--checkpoint", "1", "--checksums")
    assert verified.returncode == 0 and "sizes and checksums match" in verified.stdout, verified.stderr
    assert f"all {sum(len(h.shared_files) + len(h.private_files) for h in first.shards)} files" in verified.stdout


def test_verify_and_restore_name_a_corrupt_and_a_missing_object(
        snapshots: Snapshots, tmp_path: pathlib.Path) -> None:
    url, store, (first, _second), _ = snapshots
    corrupt = first.shards[0].shared_files[0].object_key
    original = store.get(corrupt)
    store.put(corrupt, bytes([original[0] ^ 0x01]) + original[1:])
    missing = first.shards[2].private_files[0].object_key
    store.delete(missing)

    sizes_only = run("verify", *store_args(url), "--checkpoint", "1")
    assert sizes_only.returncode == 1
    assert f"bad object {missing}: missing" in sizes_only.stdout and corrupt not in sizes_only.stdout
    verified = run("verify", *store_args(url), "--checkpoint", "1", "--checksums")
    assert_one_clear_error(verified, 1, "2 of", "missing or damaged")
    assert f"bad object {corrupt}: checksum" in verified.stdout and f"bad object {missing}: missing" in verified.stdout

    data_dir = tmp_path / "data"
    restore = ["restore", *store_args(url), "--checkpoint", "1", "--data-dir", str(data_dir)]
    assert_one_clear_error(run(*restore, "--key-groups", "0-31"), 1, corrupt, "corrupt")
    assert_one_clear_error(run(*restore, "--key-groups", "70-80"), 1, missing, "missing")
    store.put(corrupt, original)  # repaired: shards 0-31 and 32-63 now restore while 64-95 fails
    assert_one_clear_error(run(*restore), 1, missing)
    shards = data_dir / "namespaces" / NAMESPACE / "shards"
    assert not shards.exists() or list(shards.iterdir()) == []  # all or nothing: no shard is left behind


def test_clear_errors_for_a_missing_checkpoint_a_malformed_url_and_bad_arguments(
        snapshots: Snapshots, tmp_path: pathlib.Path) -> None:
    url, _store, _, _ = snapshots
    assert_one_clear_error(run("checkpoints", "show", *store_args(url), "--checkpoint", "9"), 1,
                           "checkpoint 9 of namespace 'orders' does not exist")
    assert_one_clear_error(run("verify", *store_args(url, namespace="other"), "--checkpoint", "latest"), 1,
                           "namespace 'other' has no committed checkpoint")
    assert_one_clear_error(run("checkpoints", "list", *store_args("s3:/no-bucket")), 2, "invalid store URL")
    assert_one_clear_error(run("checkpoints", "list", *store_args("file:///definitely/not/here")), 1,
                           "no snapshot store at")
    assert_one_clear_error(run("checkpoints", "list", *store_args(url, options=["region=x"])), 2,
                           "file stores take no options")
    assert_one_clear_error(run("restore", *store_args(url), "--checkpoint", "1", "--data-dir", str(tmp_path / "d"),
                               "--key-groups", "100-300"), 2, "outside namespace 'orders'")
    bad_range = run("restore", *store_args(url), "--checkpoint", "1", "--data-dir", str(tmp_path / "d"),
                    "--key-groups", "7")
    assert bad_range.returncode == 2 and "expected a key-group range" in bad_range.stderr


def test_wrong_credentials_and_an_unreachable_store_on_s3(seaweed: SeaweedS3) -> None:
    url = seaweed.fresh_url()
    wrong = run("checkpoints", "list", *store_args(url, options=[
        f"endpoint={seaweed.endpoint}", f"region={seaweed.region}", f"access_key_id={seaweed.access_key}",
        "secret_access_key=not-the-secret"]))
    assert_one_clear_error(wrong, 1, "rejected the credentials", "SignatureDoesNotMatch")

    unreachable = run("checkpoints", "list", *store_args(url, options=[
        f"endpoint=http://127.0.0.1:{free_loopback_port()}", "region=us-east-1", "access_key_id=a",
        "secret_access_key=b", "max_retries=0"]))
    assert_one_clear_error(unreachable, 1, "unavailable", "Connection refused")


@pytest.mark.parametrize("workers", [1, 2])
def test_restore_output_is_served_by_a_real_node(
        snapshots: Snapshots, tmp_path: pathlib.Path, workers: int) -> None:
    """With 2 workers, fails on the code before the change: each worker looked only in its own
    ``worker-<i>`` directory, so it ignored what `stateserver restore` wrote (NotFoundError for the
    namespace; had a worker learnt the namespace elsewhere, a resuming writer got an empty shard)."""
    url, _store, (first, _second), (expected_1, _) = snapshots
    as_is, rescaled = tmp_path / "as-is", tmp_path / "rescaled"
    restored = run("restore", *store_args(url), "--checkpoint", "1", "--data-dir", str(as_is))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.count("(full,") == 4 and f"--data-dir {as_is}" in restored.stdout
    again = run("restore", *store_args(url), "--checkpoint", "1", "--data-dir", str(as_is))
    assert_one_clear_error(again, 1, "refusing to restore", "already holds")
    for key_groups in ("0-42", "43-127"):
        restored = run("restore", *store_args(url), "--checkpoint", "1", "--data-dir", str(rescaled),
                       "--key-groups", key_groups)
        assert restored.returncode == 0 and "(rescaled," in restored.stdout, restored.stderr

    for data_dir, ranges in ((as_is, [f"{h.key_group_start}-{h.key_group_end}" for h in first.shards]),
                             (rescaled, ["0-42", "43-127"])):
        with run_node(data_dir, workers=workers) as node, StateClient(node.address, timeout=30) as client:
            writer = client.open_writer(NAMESPACE, key_groups=ranges, epoch=4)  # newer than the snapshot's 3
            values = writer.value_state("values", key_serializer=BYTES, value_serializer=BYTES)
            expiring = writer.value_state("expiring", key_serializer=BYTES, value_serializer=BYTES, ttl_ms=DAY_MS)
            sums = writer.aggregating_state("sums", merge_operator="sum_int64", key_serializer=BYTES)
            lists = writer.list_state("lists", key_serializer=BYTES, value_serializer=BYTES)
            maps = writer.map_state("maps", key_serializer=BYTES, map_key_serializer=BYTES, value_serializer=BYTES)
            keys = list(expected_1.values)
            assert values.get_many(keys) == [expected_1.values[k] for k in keys]
            assert expiring.get_many(list(expected_1.expiring)) == list(expected_1.expiring.values())
            assert sums.get_many(list(expected_1.sums)) == list(expected_1.sums.values())
            for key in list(expected_1.lists)[:200]:
                assert lists.get(key) == expected_1.lists[key]
            for key in list(expected_1.maps)[:200]:
                assert dict(maps.items(key)) == expected_1.maps[key]
            writer.close()
    assert CheckpointCatalog(open_store(url)).committed_ids(NAMESPACE) == [1, 2]


@pytest.mark.parametrize("workers", [1, 2])
def test_resuming_key_groups_a_restored_shard_overlaps_is_refused(
        snapshots: Snapshots, tmp_path: pathlib.Path, workers: int) -> None:
    """Restored as 0-42 and 43-127, opened as one shard 0-127 without a restore: refused, never an
    empty shard. With 2 workers, fails on the code before the change (NotFoundError: the restored
    directory was ignored)."""
    url = snapshots[0]
    for key_groups in ("0-42", "43-127"):
        restored = run("restore", *store_args(url), "--checkpoint", "1", "--data-dir", str(tmp_path / "data"),
                       "--key-groups", key_groups)
        assert restored.returncode == 0, restored.stderr
    with run_node(tmp_path / "data", workers=workers) as node, StateClient(node.address, timeout=30) as client:
        with pytest.raises(RestoreRequiredError, match="0-42"):
            client.open_writer(NAMESPACE, key_groups=["0-127"], epoch=4)


def test_gc_dry_run_then_for_real(snapshots: Snapshots) -> None:
    url, store, (first, second), _ = snapshots
    before = {meta.key for meta in store.list(NAMESPACE)}
    dry = run("gc", *store_args(url), "--retain", "1", "--min-age", "30m", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete orders/checkpoints/00000000000000000001/metadata.pb" in dry.stdout
    assert {meta.key for meta in store.list(NAMESPACE)} == before
    done = run("gc", *store_args(url), "--retain", "1", "--min-age", "30m")
    assert done.returncode == 0, done.stderr
    assert done.stdout.replace("deleted ", "would delete ").splitlines()[:-1] == dry.stdout.splitlines()[:-1]
    assert CheckpointCatalog(store).committed_ids(NAMESPACE) == [2]
    assert run("verify", *store_args(url), "--checkpoint", "2").returncode == 0
    assert run("gc", *store_args(url), "--min-age", "soon").returncode == 2
    assert first.checkpoint_id == 1 and second.checkpoint_id == 2
