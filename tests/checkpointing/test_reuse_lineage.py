"""A shard that starts a new lineage of files reuses no upload of an earlier incarnation.

RocksDB numbers a database's files afresh, so an empty shard opened over an old one makes its
own ``000009.sst`` and so on: same names, often the same sizes, other contents. Fails on the code
before the fix: the node kept the earlier incarnation's confirmed uploads for an empty reopen,
named the old object for the new file, and restoring the checkpoint gave a MANIFEST whose table
file did not match ("Corruption: Mismatch in unique ID on table file"), as the fault suite's
seed 21 found.
"""
from __future__ import annotations

from pathlib import Path

from stateserver.client import BYTES, StateClient, Writer
from support.node import run_node

KEYS = [f"k{i:04d}" for i in range(500)]


def checkpoint(client: StateClient, writer: Writer, namespace: str, checkpoint_id: int) -> None:
    writer.snapshot(checkpoint_id)
    client.commit_checkpoint(namespace, checkpoint_id, writer.await_snapshot(checkpoint_id), [writer])
    writer.notify_checkpoint_complete(checkpoint_id)


def fill(writer: Writer, byte: bytes) -> dict[str, bytes]:
    values = {key: byte * 64 for key in KEYS}  # the same keys and sizes in every lineage
    writer.value_state("v", value_serializer=BYTES).put_many(values)
    return values


def test_an_empty_reopen_uploads_its_own_files_and_restores_exactly(tmp_path: Path) -> None:
    with run_node(tmp_path / "node") as node, StateClient(node.address) as client:
        client.create_namespace("lineage", max_key_groups=8)
        first = client.open_writer("lineage", key_groups="0-7", epoch=1)
        fill(first, b"a")
        checkpoint(client, first, "lineage", 1)

        second = client.open_writer("lineage", key_groups="0-7", epoch=2, restore="empty")
        expected = fill(second, b"b")
        checkpoint(client, second, "lineage", 2)

        restored = client.open_writer("lineage", key_groups="0-7", epoch=3, restore=2)
        state = restored.value_state("v", value_serializer=BYTES)
        assert dict(zip(KEYS, state.get_many(KEYS))) == expected
