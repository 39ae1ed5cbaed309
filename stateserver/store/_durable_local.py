"""``DurableLocalStore``: the ``file://`` store, whose writes are on disk when they return (invariant 10).

obstore's ``LocalStore`` (obstore 0.12, Rust object_store's ``LocalFileSystem``) writes a staging
file and renames it into place (a hard link for a create-only put) without any fsync: after a power
loss a committed ``metadata.pb`` could name empty SSTs, or be empty itself. Rust object_store later
grew ``with_fsync`` (apache/arrow-rs-object-store#643), but obstore does not expose it, and
syncing after its rename would still publish a name before its bytes are on disk. So writes happen
here, the way durable local stores do them:

    write a staging file beside the object, fsync it  (the bytes)
    rename it into place, or hard-link it for put_if_absent (atomic, refuses an existing name)
    fsync the object's directory                       (the name)
    fsync the parent of every directory not yet known to be durable, up to the store's root

Reads, listings and deletes go to obstore's ``LocalStore`` over the same directory. Staging files
are named ``<name>#<digits>``, obstore's own convention, which its listings skip and keys cannot
spell (``_keys`` refuses '#').
"""
from __future__ import annotations

import errno
import itertools
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ._errors import InvalidObjectKey, StoreAccessDenied, StoreError, StoreUnavailable
from ._interface import ObjectMeta, ObjectStore
from ._keys import check_key
from stateserver.store.durable_files import sync_directory

_COPY_CHUNK = 4 * 1024 * 1024
_staging_numbers = itertools.count(1)


class DurableLocalStore:
    """An ObjectStore over a local directory whose writes are durable once they return."""

    def __init__(self, root: str | os.PathLike[str], *, url: str, reader: ObjectStore) -> None:
        self._root = Path(root).resolve()
        self._url = url
        self._reader = reader
        # Directories whose own entry is known to be synced into their parent: each is synced once
        # per process, by the first write that needs it, and never again.
        self._durable_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        self._sync_dir_chain(self._root, up_to=self._root.parent)

    def __repr__(self) -> str:
        return f"DurableLocalStore({self._url!r})"

    @property
    def url(self) -> str:
        return self._url

    # -- writes: here, durable --------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        with self._writing("write", key):
            self._publish(key, lambda out: out.write(data), create_only=False)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._writing("create", key):
            return self._publish(key, lambda out: out.write(data), create_only=True)

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        source = Path(local_path)
        size = source.stat().st_size  # a missing local file is the caller's OSError, not a store error

        def copy(out: BinaryIO) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)

        with self._writing("upload", key):
            self._publish(key, copy, create_only=False)
        return size

    def _publish(self, key: str, write: Callable[[BinaryIO], object], *, create_only: bool) -> bool:
        target = self._path_of(key)
        directory = target.parent
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f"{target.name}#{os.getpid()}{next(_staging_numbers)}"
        try:
            with open(staging, "xb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            if create_only:
                try:
                    os.link(staging, target)
                except FileExistsError:
                    return False
            else:
                os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)
        sync_directory(directory)
        self._sync_dir_chain(directory, up_to=self._root)
        return True

    def _sync_dir_chain(self, directory: Path, *, up_to: Path) -> None:
        """Make the entries of ``directory`` and its ancestors below ``up_to`` durable in their parents."""
        current = directory
        while current != up_to and current != current.parent:
            with self._dirs_lock:
                known = current in self._durable_dirs
            if known:
                return  # its ancestors were synced before it was marked
            sync_directory(current.parent)
            with self._dirs_lock:
                self._durable_dirs.add(current)
            current = current.parent

    def _path_of(self, key: str) -> Path:
        check_key(key)
        return self._root.joinpath(*key.split("/"))

    @contextmanager
    def _writing(self, operation: str, key: str) -> Iterator[None]:
        try:
            yield
        except (StoreError, InvalidObjectKey):
            raise
        except PermissionError as exc:
            raise StoreAccessDenied(f"cannot {operation} {key!r} in {self._url}: permission denied on the local "
                                    f"file system ({exc.strerror})", key=key, store=self._url) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
                raise StoreError(f"cannot {operation} {key!r} in {self._url}: {exc.strerror} ({exc.filename})",
                                 key=key, store=self._url) from exc
            # Disk full, I/O errors and the like may pass; the caller's retries decide.
            raise StoreUnavailable(f"cannot {operation} {key!r} in {self._url}: {exc.strerror}",
                                   key=key, store=self._url) from exc

    # -- reads and deletes: obstore's LocalStore ---------------------------------------------

    def get(self, key: str) -> bytes:
        return self._reader.get(key)

    def get_to_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._reader.get_to_file(key, local_path)

    def head(self, key: str) -> ObjectMeta:
        return self._reader.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self._reader.list(prefix)

    def delete(self, key: str) -> None:
        self._reader.delete(key)

    def exists(self, key: str) -> bool:
        return self._reader.exists(key)
