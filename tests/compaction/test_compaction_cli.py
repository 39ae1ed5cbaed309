"""`stateserver compact` in a subprocess: dry run, compaction, then verify, gc and restore of its
output, a real node opening it, and the errors that must stop it before it writes anything."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from stateserver.client import BYTES, StateClient
from compaction_state import EPOCH, NAMESPACE, TtlCheckpoint, build_checkpoint, entry_count, without_expired
from restore.state_builder import DAY_MS
from stateserver.store import paths
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.cli.main import main
from stateserver.store import ObjectStore, open_store
from support.node import run_node

STATESERVER = pathlib.Path(sys.executable).parent / "stateserver"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STATESERVER), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


def store_args(url: str, namespace: str = NAMESPACE) -> list[str]:
    return ["--snapshot-url", url, "--namespace", namespace]


def listing(store: ObjectStore) -> dict[str, int]:
    return {meta.key: meta.size for meta in store.list(NAMESPACE)}


def assert_one_clear_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stateserver: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def built(store_url: str, tmp_path: pathlib.Path) -> TtlCheckpoint:
    return build_checkpoint(tmp_path / "source", open_store(store_url), keys=200)


def test_compact_then_verify_gc_and_restore_the_output(store_url: str, built: TtlCheckpoint,
                                                       tmp_path: pathlib.Path) -> None:
    store = open_store(store_url)
    untouched = listing(store)
    compact = ["compact", *store_args(store_url), "--checkpoint", "latest", "--shards", "3",
               "--drop-expired-before", str(built.cutoff_ms)]
    dry = run(*compact, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"dry run: would compact checkpoint 1 of namespace '{NAMESPACE}' (4 shards")
    assert "into checkpoint 2 (3 shards)" in dry.stdout and "shard 43-85 from input shards 32-63, 64-95" in dry.stdout
    assert listing(store) == untouched

    done = run(*compact)
    assert done.returncode == 0, done.stderr
    kept = entry_count(without_expired(built.dump, built.cutoff_ms))
    total = entry_count(built.dump)
    assert (f"into checkpoint 2: shards 4 -> 3, entries {total} -> {kept} ({total - kept} expired dropped)"
            in done.stdout), done.stdout
    assert done.stdout.count("  shard ") == 3  # a line per output shard as it is uploaded
    catalog = CheckpointCatalog(store)
    assert catalog.committed_ids(NAMESPACE) == [1, 2]
    assert {k: s for k, s in listing(store).items() if k in untouched} == untouched

    verified = run("verify", *store_args(store_url), "--checkpoint", "2", "--checksums")
    assert verified.returncode == 0 and "sizes and checksums match" in verified.stdout, verified.stderr
    collected = run("gc", *store_args(store_url), "--retain", "1", "--min-age", "30m")
    assert collected.returncode == 0, collected.stderr
    assert catalog.committed_ids(NAMESPACE) == [2]
    compacted = catalog.load(NAMESPACE, 2)
    named = {paths.checkpoint_metadata(NAMESPACE, 2)} | {
        key for h in compacted.shards for key in (h.manifest_key, *(f.object_key for f in (*h.shared_files,
                                                                                         *h.private_files)))}
    assert set(listing(store)) == named  # the output is kept whole; all of checkpoint 1 is reclaimed
    assert run("verify", *store_args(store_url), "--checkpoint", "latest", "--checksums").returncode == 0

    restored = run("restore", *store_args(store_url), "--checkpoint", "2", "--data-dir", str(tmp_path / "data"))
    assert restored.returncode == 0 and restored.stdout.count("(full,") == 3, restored.stderr


def test_a_node_opens_a_resharded_checkpoint(tmp_path: pathlib.Path) -> None:
    url = (tmp_path / "store").as_uri()
    built = build_checkpoint(tmp_path / "source", open_store(url), keys=200)
    done = run("compact", *store_args(url), "--checkpoint", "1", "--key-groups", "0-50,51-127",
               "--drop-expired-before", "now", "--to-checkpoint", "10")
    assert done.returncode == 0 and "into checkpoint 10: shards 4 -> 2" in done.stdout, done.stderr
    expected = built.unexpired
    with run_node(tmp_path / "node", extra_args=["--snapshot-url", url]) as node, \
            StateClient(node.address, timeout=30) as client:
        client.create_namespace(NAMESPACE, max_key_groups=128)
        writer = client.open_writer(NAMESPACE, key_groups=["0-50", "51-127"], epoch=EPOCH + 1, restore="latest")
        values = writer.value_state("values", key_serializer=BYTES, value_serializer=BYTES)
        expiring = writer.value_state("expiring", key_serializer=BYTES, value_serializer=BYTES, ttl_ms=DAY_MS)
        sums = writer.aggregating_state("sums", merge_operator="sum_int64", key_serializer=BYTES)
        maps = writer.map_state("maps", key_serializer=BYTES, map_key_serializer=BYTES, value_serializer=BYTES)
        recent = writer.list_state("recent", key_serializer=BYTES, value_serializer=BYTES, ttl_ms=DAY_MS)
        assert values.get_many(list(expected.values)) == list(expected.values.values())
        assert sums.get_many(list(expected.sums)) == list(expected.sums.values())
        every_key = list(expected.sums)
        assert expiring.get_many(every_key) == [expected.expiring.get(k) for k in every_key]
        for key in every_key[:50]:
            assert dict(maps.items(key)) == expected.maps[key]
            assert recent.get(key) == built.recent.get(key, [])
        writer.close()


def test_errors_are_one_readable_line_and_write_nothing(built: TtlCheckpoint, store_url: str, tmp_path: pathlib.Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """In this process (``cli.main``, the code the console script runs) for speed; one run in a
    subprocess shows the real exit."""
    store = open_store(store_url)
    untouched = listing(store)

    def refused(*args: str, namespace: str = NAMESPACE) -> tuple[int, str]:
        try:
            code = main(["compact", *store_args(store_url, namespace), *args])
        except SystemExit as exc:  # argparse rejects malformed arguments before the command runs
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and code != 0, captured
        return code, captured.err.strip()

    def assert_refused(code: int, fragment: str, *args: str, namespace: str = NAMESPACE) -> None:
        found, message = refused(*args, namespace=namespace)
        assert found == code and len(message.splitlines()) == 1, message
        assert message.startswith("stateserver: error: ") and fragment in message, message

    assert_one_clear_error(run("compact", *store_args(store_url), "--checkpoint", "9"), 1,
                           "checkpoint 9 of namespace 'events' does not exist")
    assert_refused(1, "namespace 'nobody' has no committed checkpoint", "--checkpoint", "latest", namespace="nobody")
    assert_refused(2, "key groups 51-59 are in no range", "--checkpoint", "1", "--key-groups", "0-50,60-127")
    assert_refused(2, "overlap at key group 40", "--checkpoint", "1", "--key-groups", "0-50,40-127")
    assert_refused(2, "128-200 are outside the namespace", "--checkpoint", "1", "--key-groups", "0-50,51-200")
    assert_refused(2, "key groups 101-127 are in no range", "--checkpoint", "1", "--key-groups", "0-100")
    assert_refused(2, "cannot split 128 key groups into 129 shards", "--checkpoint", "1", "--shards", "129")
    assert_refused(2, "above the latest committed checkpoint 1; 1 is not", "--checkpoint", "1", "--to-checkpoint", "1")
    assert_refused(1, "No such file or directory", "--checkpoint", "1", "--work-dir", str(tmp_path / "missing"))
    for wrong in (["--key-groups", "0-50;51-127"], ["--drop-expired-before", "soon"],
                  ["--shards", "3", "--key-groups", "0-127"], ["--to-checkpoint", "0"]):
        code, message = refused("--checkpoint", "1", *wrong)
        assert code == 2 and "stateserver compact: error: argument" in message, message
    assert listing(store) == untouched
    assert CheckpointCatalog(store).committed_ids(NAMESPACE) == [1]
