"""The one small interface the rest of stateserver sees: ``ObjectStore`` and ``ObjectMeta``.

Keys are relative '/'-separated strings (see ``_keys``) under the root or prefix of the store's URL.
Every method is synchronous and blocking; the obstore backend releases the GIL while it waits on
the network or the disk, so callers get parallelism from a thread pool.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectMeta:
    """What a store says about one object. ``last_modified`` is timezone-aware (UTC)."""

    key: str
    size: int
    last_modified: datetime


@runtime_checkable
class ObjectStore(Protocol):
    """Object storage behind a URL: ``file://``, ``s3://`` or ``memory://``.

    Errors are the ones in ``_errors``: a missing object raises ``ObjectNotFound``; transient
    failures raise ``StoreUnavailable`` (wrap the store in ``RetryingObjectStore`` to retry them).
    """

    @property
    def url(self) -> str:
        """The store's URL, for messages and logs (never carries credentials)."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically, replacing any object there."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` unless an object is there; True if this call created it.

        Atomic on every backend (S3 conditional write with ``If-None-Match: *``, a hard link on
        local files), so of racing callers exactly one gets True; the object keeps the winner's
        bytes. This is the commit point of a checkpoint. ``RetryingObjectStore`` also returns True
        when an earlier attempt of the same call landed but its answer was lost, which it tells by
        comparing the stored bytes with ``data``: make ``data`` identify its writer (epoch, writer
        id) so that two writers never offer identical bytes.
        """
        ...

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        """Stream a local file up (multipart when large); return its size in bytes."""
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object."""
        ...

    def get_to_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        """Stream the object into ``local_path`` (replaced atomically); return its size in bytes."""
        ...

    def head(self, key: str) -> ObjectMeta:
        """Return the object's metadata without its content."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """Yield every object under ``prefix``, in no particular order.

        The prefix matches whole segments: ``"a/b"`` lists ``a/b/c`` but not ``a/bc``.
        """
        ...

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""
        ...

    def exists(self, key: str) -> bool:
        """True if an object is at ``key``."""
        ...
