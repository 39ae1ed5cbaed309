"""Copying one key-group range of a downloaded snapshot shard into the shard being rebuilt.

The ranges of different sources are disjoint, so each column family's slice is written straight
into SST files and ingested (``stateserver.shard.sst_files``).
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterable, Iterator

import rocksdict

from stateserver.protocol.errors import CorruptData
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.shard.rocks import DEFAULT_COLUMN_FAMILY, RocksResources
from stateserver.shard.shard import META_COLUMN_FAMILY, Shard
from stateserver.shard.sst_files import ingest, scan_key_groups, write_sst_files

_STATE_FAMILY_PREFIX = "state."


def copy_key_groups(source_dir: pathlib.Path, key_groups: KeyGroupRange, target: Shard, *,
                    resources: RocksResources, scratch_dir: pathlib.Path, source_name: str) -> int:
    """Copy every key of ``key_groups`` in every column family of the database at ``source_dir``
    (opened read-only) into ``target``; returns the number of entries copied. ``source_name``
    says which snapshot shard it is, for errors.

    ``_meta`` is not copied: the target has its own epoch record and state descriptors.
    """
    source = resources.open_db(source_dir, read_only=True)
    copied = 0

    def counted(entries: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        nonlocal copied
        for entry in entries:
            copied += 1
            yield entry

    try:
        for family in rocksdict.Rdict.list_cf(str(source_dir)):
            if family == META_COLUMN_FAMILY:
                continue
            destination = destination_family(target, family, resources, source_name)
            table = source if family == DEFAULT_COLUMN_FAMILY else source.get_column_family(family)
            files = write_sst_files(counted(scan_key_groups(table, key_groups)), scratch_dir, resources.options())
            del table  # a column family view must go before its database closes
            ingest(destination, files)
    finally:
        source.close()
    return copied


def destination_family(target: Shard, family: str, resources: RocksResources, source_name: str) -> rocksdict.Rdict:
    if family == DEFAULT_COLUMN_FAMILY:
        return target.db
    if family.startswith(_STATE_FAMILY_PREFIX):
        state = target.states.get(family.removeprefix(_STATE_FAMILY_PREFIX))
        if state is None:
            raise CorruptData(f"{source_name} has column family {family!r}, but its manifest declares "
                              "no such state")
        return state.table
    # Not a family stateserver makes today; copied anyway, so that nothing stored is lost.
    if family in rocksdict.Rdict.list_cf(str(target.path)):
        return target.db.get_column_family(family)
    return target.db.create_column_family(family, resources.options())
