"""The package exports what its docs promise, and the error tree is the one drawn in _errors."""
from __future__ import annotations

import stateserver.store as objectstore
from stateserver.store import (
    InvalidObjectKey,
    InvalidStoreUrl,
    ObjectAlreadyExists,
    ObjectNotFound,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)

PROMISED = {
    "ObjectStore", "ObjectMeta", "open_store", "check_key", "RetryingObjectStore", "RetryPolicy",
    "StoreError", "InvalidStoreUrl", "InvalidObjectKey", "ObjectNotFound", "ObjectAlreadyExists",
    "StoreAccessDenied", "StoreUnavailable",
}


def test_all_is_exactly_the_promised_names_and_each_resolves() -> None:
    assert set(objectstore.__all__) == PROMISED
    for name in objectstore.__all__:
        assert getattr(objectstore, name) is not None


def test_error_tree_and_retriable_flags() -> None:
    for error in (InvalidStoreUrl, InvalidObjectKey, ObjectNotFound, ObjectAlreadyExists,
                  StoreAccessDenied, StoreUnavailable):
        assert issubclass(error, StoreError)
    assert issubclass(InvalidObjectKey, ValueError)
    assert StoreUnavailable.retriable
    assert not any(e.retriable for e in (StoreError, ObjectNotFound, ObjectAlreadyExists, StoreAccessDenied))
    for name in ("InvalidStoreUrl", "InvalidObjectKey", "ObjectNotFound", "ObjectAlreadyExists",
                 "StoreAccessDenied", "StoreUnavailable"):
        assert name in (objectstore._errors.__doc__ or "")


def test_real_stores_satisfy_the_protocol() -> None:
    store = objectstore.open_store("memory://")
    assert isinstance(store, objectstore.ObjectStore)
    assert isinstance(objectstore.RetryingObjectStore(store), objectstore.ObjectStore)
