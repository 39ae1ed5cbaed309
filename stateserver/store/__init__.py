"""Object storage for snapshots: one small interface over file://, s3:// and memory:// stores.

    store = RetryingObjectStore(open_store("s3://bucket/prefix", options={"region": "eu-west-1"}))
    store.put_file("ns/shard-0001/shared/000042-1f3a.sst", "/data/000042.sst")
    committed = store.put_if_absent("ns/checkpoints/0000000007/metadata", metadata_bytes)

``open_store`` validates the URL and builds an obstore-backed store; ``RetryingObjectStore`` retries
transient failures. The errors and what to do about them are drawn in ``_errors``.
"""
from ._errors import (
    InvalidObjectKey,
    InvalidStoreUrl,
    ObjectAlreadyExists,
    ObjectNotFound,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)
from ._interface import ObjectMeta, ObjectStore
from ._keys import check_key
from ._open import open_store
from ._retrying import RetryingObjectStore, RetryPolicy

__all__ = [
    "InvalidObjectKey",
    "InvalidStoreUrl",
    "ObjectAlreadyExists",
    "ObjectMeta",
    "ObjectNotFound",
    "ObjectStore",
    "RetryPolicy",
    "RetryingObjectStore",
    "StoreAccessDenied",
    "StoreError",
    "StoreUnavailable",
    "check_key",
    "open_store",
]
