"""A batch's keys packed in stored form with the key groups the router computed.

The router hashes every key once (to find its shard); a batch reuses those key groups for the
keys' prefixes instead of hashing each key again (as ``stateserver.protocol.stored_form.stored_keys``
does, for callers that know only the keys). No Python bytecode per key.
"""
from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence

from stateserver.protocol.keygroups import KEY_GROUP_PREFIX_BYTES, KEY_GROUP_PREFIXES


def stored_keys(keys: Sequence[bytes], key_groups: Sequence[int]) -> tuple[bytes, list[int]]:
    """``keys`` behind their key-group prefixes (``key_groups[i]`` is the key group of ``keys[i]``):
    (blob, lengths), exactly as ``stored_form.stored_keys`` packs them."""
    prefixes = map(KEY_GROUP_PREFIXES.__getitem__, key_groups)
    blob = b"".join(itertools.chain.from_iterable(zip(prefixes, keys)))
    return blob, list(map(operator.add, map(len, keys), itertools.repeat(KEY_GROUP_PREFIX_BYTES)))
