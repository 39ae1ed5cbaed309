"""Which failures of RocksDB and the file system mean the node ran out of a resource.

RocksDB reports an IO error as a plain ``Exception`` whose message carries the OS's words
("IO error: No space left on device: While appending to file: ..."); the file system raises
``OSError`` with an errno. Both are recognised here, so the boundary can answer
RESOURCE_EXHAUSTED (retry once the resource is freed) instead of INTERNAL.
"""
from __future__ import annotations

import errno

_RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# strerror() of the errnos above, as they appear inside RocksDB's messages.
_RESOURCE_WORDS = ("No space left on device", "Disk quota exceeded", "Too many open files",
                   "Cannot allocate memory")
_MAX_CAUSE_CHARS = 300


def resource_cause(exc: BaseException) -> str | None:
    """What ran out, in the failure's own words; None if ``exc`` is not a resource failure."""
    if isinstance(exc, OSError):
        return _shortened(str(exc)) if exc.errno in _RESOURCE_ERRNOS else None
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc)
    if any(words in text for words in _RESOURCE_WORDS):
        return _shortened(text)
    return None


def _shortened(text: str) -> str:
    return text if len(text) <= _MAX_CAUSE_CHARS else text[: _MAX_CAUSE_CHARS - 4] + " ..."
