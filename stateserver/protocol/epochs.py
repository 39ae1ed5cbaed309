"""Writer epochs: their upper bound, shared by nodes and clients.

An epoch above ``MAX_EPOCH`` would lock every later writer out for good (nothing can be
newer), and client.checkpointing numbers checkpoint ids ``epoch * 2**32 + n``, so epochs
fit in 32 bits. Every request carrying an epoch is checked against it.
"""
from __future__ import annotations

MAX_EPOCH = 2**32 - 1


def epoch_problem(epoch: int) -> str | None:
    """Why ``epoch`` is not a valid writer epoch, or None."""
    if not 0 <= epoch <= MAX_EPOCH:
        return f"epoch {epoch} is out of range: epochs run from 0 to {MAX_EPOCH} (2**32 - 1)"
    return None
