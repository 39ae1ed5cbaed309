"""``ObstoreObjectStore``: the ObjectStore interface over any obstore store (S3, local, memory).

obstore drives Rust's ``object_store`` crate, which does the HTTP, signing, multipart uploads and
per-request retries, and releases the GIL while it waits. This class adds key validation, streaming
to and from local files, and the translation of every obstore error at one boundary.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError as ObstoreError

from ._errors import ObjectAlreadyExists, ObjectNotFound, StoreError, StoreUnavailable
from ._interface import ObjectMeta
from ._keys import check_key, check_prefix
from ._obstore_errors import translate

if TYPE_CHECKING:
    from obstore.store import ObjectStore as ObstoreStore

# S3 needs parts of at least 5 MiB; 8 MiB parts keep a 64 MiB SST at 8 requests.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
# Parts in flight per upload. Callers already upload several files at once from a thread pool.
DEFAULT_PART_CONCURRENCY = 4
_DOWNLOAD_CHUNK = 4 * 1024 * 1024
_LIST_PAGE = 1000


class ObstoreObjectStore:
    """An ObjectStore backed by an obstore store.

    ``create_store`` serves ``put_if_absent``. For S3 it is the same bucket with obstore's own
    retries turned off: a conditional PUT retried inside obstore after a lost answer would come back
    "already exists" with no way to tell, so its retries belong to ``RetryingObjectStore``, which can
    tell by comparing content.
    """

    def __init__(
        self,
        store: ObstoreStore,
        *,
        url: str,
        create_store: ObstoreStore | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        part_concurrency: int = DEFAULT_PART_CONCURRENCY,
    ) -> None:
        self._store = store
        self._create_store = create_store if create_store is not None else store
        self._url = url
        self._part_size = part_size
        self._part_concurrency = part_concurrency

    def __repr__(self) -> str:
        return f"ObstoreObjectStore({self._url!r})"

    @property
    def url(self) -> str:
        return self._url

    def put(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._translating("write", key):
            obstore.put(self._store, key, data, chunk_size=self._part_size,
                        max_concurrency=self._part_concurrency)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        check_key(key)
        try:
            with self._translating("create", key):
                # A create-only put is always a single request (obstore skips multipart for it).
                obstore.put(self._create_store, key, data, mode="create")
        except ObjectAlreadyExists:
            return False
        return True

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        check_key(key)
        path = Path(local_path)
        size = path.stat().st_size  # a missing local file is the caller's OSError, not a store error
        with self._translating("upload", key):
            obstore.put(self._store, key, path, chunk_size=self._part_size,
                        max_concurrency=self._part_concurrency)
        return size

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._translating("read", key):
            return bytes(obstore.get(self._store, key).bytes())

    def get_to_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        check_key(key)
        dest = Path(local_path)
        with self._translating("download", key):
            result = obstore.get(self._store, key)
            expected = result.meta["size"]
            chunks = iter(result.stream(min_chunk_size=_DOWNLOAD_CHUNK))
        # Write beside the destination and rename, so a failed download never leaves a partial
        # file under the final name. Local I/O errors stay OSErrors: they are not the store's.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            written = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    with self._translating("download", key):
                        chunk = next(chunks, None)
                    if chunk is None:
                        break
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if written != expected:
                raise StoreUnavailable(
                    f"cannot download {key!r} from {self._url}: got {written} of {expected} bytes",
                    key=key, store=self._url,
                )
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return written

    def head(self, key: str) -> ObjectMeta:
        check_key(key)
        with self._translating("stat", key):
            meta = obstore.head(self._store, key)
        return ObjectMeta(key=key, size=meta["size"], last_modified=meta["last_modified"])

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        normalized = check_prefix(prefix)  # here, not in the generator, so bad input fails at once
        return self._list(normalized)

    def _list(self, prefix: str) -> Iterator[ObjectMeta]:
        with self._translating("list", prefix or None):
            pages = iter(obstore.list(self._store, prefix or None, chunk_size=_LIST_PAGE))
        while True:
            # Pages arrive lazily, so errors can surface at any step, not only at the first.
            with self._translating("list", prefix or None):
                page = next(pages, None)
            if page is None:
                return
            for meta in page:
                yield ObjectMeta(key=meta["path"], size=meta["size"], last_modified=meta["last_modified"])

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            with self._translating("delete", key):
                obstore.delete(self._store, key)
        except ObjectNotFound:
            pass  # S3 and memory say nothing for a missing key; the local store says NotFound

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    @contextmanager
    def _translating(self, operation: str, key: str | None) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (ObstoreError, OSError, ValueError) as exc:
            raise translate(exc, store=self._url, key=key, operation=operation) from exc
