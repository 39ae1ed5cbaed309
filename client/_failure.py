"""A writer's session fails as a whole (DESIGN.md invariant 9).

Once a write batch of a writer fails, the node's state of its shards is a prefix of what the
operator wrote, and only a restore can bring writer and state together again. The writer's
shard sessions (sync and asyncio alike) share one ``WriterFailure``: the first failure is
kept, nothing more is sent, and every later call raises ``SessionFailedError`` chained to it.
"""
from __future__ import annotations

from stateserver.client._errors import SessionFailedError

# Times a batch refused as out of order (it overtook its predecessor on the way to the node) is
# sent again, each time after its predecessor's outcome is known.
MAX_RESENDS = 3


class WriterFailure:
    def __init__(self) -> None:
        self.cause: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.cause is not None

    def record(self, error: BaseException) -> None:
        if self.cause is None:
            self.cause = error

    def check(self) -> None:
        """Raise ``SessionFailedError`` (from the first failure) once the writer failed."""
        if self.cause is not None:
            raise SessionFailedError(
                f"a write batch of this writer failed ({self.cause}); nothing written since was sent. "
                "Reopen the writer from a checkpoint (open_writer with restore)") from self.cause
