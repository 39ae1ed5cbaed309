"""Committing a checkpoint of one writer through the client, as a stream job's coordinator does."""
from __future__ import annotations

from stateserver.client import StateClient, Writer


def commit(client: StateClient, writer: Writer, checkpoint_id: int) -> None:
    """Flush, sync phase, wait until durable, commit, notify: ``checkpoint_id`` then holds
    exactly what ``writer`` had acknowledged."""
    writer.snapshot(checkpoint_id)
    handles = writer.await_snapshot(checkpoint_id, timeout=60)
    client.commit_checkpoint(writer.namespace, checkpoint_id, handles, writers=[writer])
    writer.notify_checkpoint_complete(checkpoint_id)
