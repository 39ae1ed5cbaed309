"""The object store's errors, grouped by what the caller should do.

    StoreError                  something else went wrong; do not retry blindly
    ├── InvalidStoreUrl         the store URL or its options are malformed or unsupported: fix the config
    ├── InvalidObjectKey        the key is not a relative '/'-separated key (also a ValueError)
    ├── ObjectNotFound          no object at the key
    ├── ObjectAlreadyExists     a create-only write found an object at the key
    ├── StoreAccessDenied       the store rejected the credentials or their rights: fix them, do not retry
    └── StoreUnavailable        transient (connection refused, timeout, 5xx, throttling): retry with backoff

Every backend translates its library's exceptions into these at one boundary, with
``raise ... from exc`` so the original stays in the traceback; nothing above this package sees an
obstore exception. ``retriable`` tells a caller whether trying again can help.
"""
from __future__ import annotations


class StoreError(Exception):
    """Base of the object store's errors; ``key`` and ``store`` say where, when known."""

    retriable = False

    def __init__(self, message: str, *, key: str | None = None, store: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.store = store


class InvalidStoreUrl(StoreError):
    """The store URL or its options cannot be used."""


class InvalidObjectKey(StoreError, ValueError):
    """The key is empty, absolute, has empty or dot segments, or characters stores reject."""


class ObjectNotFound(StoreError):
    """No object at the key."""


class ObjectAlreadyExists(StoreError):
    """A create-only write found an object at the key."""


class StoreAccessDenied(StoreError):
    """The store rejected the credentials, or they lack a permission the operation needs."""


class StoreUnavailable(StoreError):
    """A transient failure: the same call may succeed later."""

    retriable = True
