"""The node process's garbage collector, set for a server that lives long and answers fast.

After start-up the process holds tens of thousands of objects that live as long as it does
(modules, gRPC and protobuf descriptors, metrics): a full collection walks all of them, tens of
milliseconds on a loaded core, and lands on whichever request is running, as a latency spike.
``gc.freeze`` moves them out of the collector's reach. A request allocates a few dozen tracked
containers, so the default first-generation threshold (700) runs a young collection every few
requests; a higher one runs it every few hundred at about the same cost each (it walks the young
objects only, and most are gone by then).
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def freeze_startup_objects() -> None:
    """Call once the node serves: what exists now is never collected, and young collections are rarer."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
