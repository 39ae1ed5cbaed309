"""Downloading one shard snapshot's files into a directory, in parallel, checking each one.

Every file is checked against its manifest entry, size and xxh3-128 checksum, before a restore
may use it: a restore from damaged bytes would open, and serve wrong state, or fail much later.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import threading
from collections.abc import Callable

from stateserver.store.checksums import file_checksum
from stateserver.protocol.errors import CorruptData, Unavailable
from stateserver.store import ObjectNotFound, ObjectStore, StoreUnavailable
from stateserver.restore._errors import CorruptObject, MissingObject
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Downloaded:
    files: int
    bytes: int


class SerializedProgress:
    """Calls ``callback`` from download threads one at a time (progress bars are not thread-safe)."""

    def __init__(self, callback: Progress | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()

    def __call__(self, size: int) -> None:
        if self._callback is not None:
            with self._lock:
                self._callback(size)


class DownloadJob:
    """The files of ``handle`` downloading into ``directory`` (created here) on ``executor``.

    Waiting happens in the caller's thread, never in the executor's, so that a pool shared with
    other transfers cannot deadlock on its own tasks.
    """

    def __init__(self, store: ObjectStore, handle: cpb.ShardSnapshotHandle, directory: pathlib.Path, *,
                 executor: concurrent.futures.Executor, progress: SerializedProgress) -> None:
        self.handle = handle
        self.directory = directory
        files = [*handle.shared_files, *handle.private_files]
        _check_local_names(handle, files)
        directory.mkdir(parents=True)
        where = f"checkpoint {handle.checkpoint_id}, shard {handle.key_group_start}-{handle.key_group_end}"
        self._futures = [executor.submit(_download, store, stored, directory / stored.local_name, where, progress)
                         for stored in files]

    def wait(self) -> Downloaded:
        """Every file, checked; on the first failure the rest are stopped and the error raised."""
        done, _ = concurrent.futures.wait(self._futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = [f for f in self._futures if f in done and f.exception() is not None]
        if failed:
            self.cancel()
            raise failed[0].exception()  # type: ignore[misc]
        return Downloaded(files=len(self._futures), bytes=sum(f.result() for f in self._futures))

    def cancel(self) -> None:
        """Stop what has not started and wait for what has, so no thread writes into the
        directory after the caller removes it."""
        for future in self._futures:
            future.cancel()
        concurrent.futures.wait(self._futures)


def _download(store: ObjectStore, stored: cpb.StoredFile, path: pathlib.Path, where: str,
              progress: SerializedProgress) -> int:
    key = stored.object_key
    try:
        size = store.get_to_file(key, path)
    except ObjectNotFound as exc:
        raise MissingObject(f"object {key} ({where}) is missing from {store.url}", object_key=key) from exc
    except StoreUnavailable as exc:
        raise Unavailable(f"cannot download object {key} ({where}): {exc}") from exc
    if size != stored.size:
        raise CorruptObject(f"object {key} ({where}) has {size} bytes; its manifest says {stored.size}",
                            object_key=key)
    if file_checksum(path) != stored.checksum:
        raise CorruptObject(f"object {key} ({where}) is corrupt: its checksum differs from its manifest's",
                            object_key=key)
    progress(size)
    return size


def _check_local_names(handle: cpb.ShardSnapshotHandle, files: list[cpb.StoredFile]) -> None:
    """Local names come from the store and become paths: each must be one plain, distinct name."""
    seen: set[str] = set()
    for stored in files:
        name = stored.local_name
        if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name or name in seen:
            raise CorruptData(f"shard manifest {handle.manifest_key} names a file {name!r}, which is not a "
                              "distinct plain file name")
        seen.add(name)
