"""Request size limits a node enforces before it touches storage."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    max_key_bytes: int = 64 << 10
    max_value_bytes: int = 16 << 20
    max_batch_ops: int = 100_000
    max_iterate_page: int = 10_000
    # A whole list read in one reply must fit into a gRPC message; longer lists are paged.
    max_read_reply_bytes: int = 48 << 20
