"""The file:// store's durability (invariant 10), counted in a real node making a real checkpoint.

The node runs with ``os.fsync`` wrapped (support.fsync_recording_node); the test then reads, in
call order, every fsync the node made under the snapshot store. Fails on the code before the fix:
obstore's LocalStore made no fsync at all, so the log was empty.
"""
from __future__ import annotations

import re
from pathlib import Path

from stateserver.client import BYTES, StateClient
from stateserver.store import paths
from stateserver.store import open_store
from support.fsync_recording_node import read_fsync_log, start_fsync_recording_node

_STAGING = re.compile(r"#\d+$")


def test_every_object_of_a_checkpoint_is_synced_with_its_directory_and_the_metadata_last(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    log = tmp_path / "fsyncs.log"
    node = start_fsync_recording_node(tmp_path / "data", snapshot_url=store_dir.as_uri(), under=store_dir, log=log)
    try:
        with StateClient(node.address, timeout=20) as client:
            client.create_namespace("durable", max_key_groups=32)
            writer = client.open_writer("durable", key_groups=["0-15", "16-31"], epoch=1)
            state = writer.value_state("v", value_serializer=BYTES)
            state.put_many({f"k{i}": bytes([i % 256]) * 100 for i in range(3000)})
            writer.snapshot(1)
            handles = writer.await_snapshot(1)
            client.commit_checkpoint("durable", 1, handles, [writer])
            writer.close()
    finally:
        node.stop()

    events = read_fsync_log(log)
    root = store_dir.resolve()
    objects = {root.joinpath(*meta.key.split("/")) for meta in open_store(store_dir.as_uri()).list("durable")
               if paths.parse_key(meta.key) is not None}
    metadata = root.joinpath(*paths.checkpoint_metadata("durable", 1).split("/"))
    assert metadata in objects and len(objects) > 4

    def synced_at(path: Path) -> int:
        """Where the object's bytes were synced (under its staging name) and then its directory."""
        files = [i for i, (kind, p) in enumerate(events) if kind == "file" and Path(_STAGING.sub("", str(p))) == path]
        assert files, f"{path} was never fsynced"
        dirs = [i for i, (kind, p) in enumerate(events) if kind == "dir" and p == path.parent and i > files[-1]]
        assert dirs, f"the directory of {path} was not fsynced after it"
        return dirs[0]

    durable_at = {path: synced_at(path) for path in objects}
    metadata_bytes = max(i for i, (kind, p) in enumerate(events)
                         if kind == "file" and Path(_STAGING.sub("", str(p))) == metadata)
    others = [at for path, at in durable_at.items() if path != metadata]
    assert max(others) < metadata_bytes, "metadata.pb was written before every object it names was durable"
    # Every directory between an object and the store's root was synced into its parent.
    synced_dirs = {p for kind, p in events if kind == "dir"}
    for path in objects:
        for directory in path.relative_to(root).parents:
            assert (root / directory).parent in synced_dirs or directory == Path(".")
