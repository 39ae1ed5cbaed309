"""Key-group ranges read in key order, and sorted entries written as SST files and ingested.

Every stored key starts with its key group (two bytes, big-endian; ``layout``), so a key-group
range is the key range ``[prefix(start), prefix(end + 1))`` in every column family. Entries in
strictly increasing key order go into SST files (SstFileWriter) that cover disjoint key ranges,
so RocksDB ingests them straight into the bottommost level: about twice as fast as WriteBatches
through the memtable, nothing is compacted twice, and no tombstone is written. Restore (rescaling)
and offline compaction both build shards this way.
"""
from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterable, Iterator

import rocksdict

from stateserver.protocol.keygroups import MAX_KEY_GROUPS_LIMIT, KeyGroupRange, key_group_prefix

DEFAULT_TARGET_FILE_BYTES = 64 << 20
_READAHEAD_BYTES = 4 << 20


def scan_key_groups(table: rocksdict.Rdict, key_groups: KeyGroupRange) -> Iterator[tuple[bytes, bytes]]:
    """Every entry of ``table`` (a database or column-family view) in ``key_groups``, in key order."""
    read_options = rocksdict.ReadOptions()
    # A one-off scan must not evict hot blocks. (The stub omits the argument.)
    read_options.fill_cache(False)  # type: ignore[call-arg]
    read_options.set_readahead_size(_READAHEAD_BYTES)
    if key_groups.end + 1 < MAX_KEY_GROUPS_LIMIT:
        read_options.set_iterate_upper_bound(key_group_prefix(key_groups.end + 1))
    yield from table.items(from_key=key_group_prefix(key_groups.start), read_opt=read_options)


def write_sst_files(entries: Iterable[tuple[bytes, bytes]], directory: pathlib.Path, options: rocksdict.Options, *,
                    target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES) -> list[pathlib.Path]:
    """Write ``entries`` into new files in ``directory``; none for no entries (RocksDB cannot
    finish an empty SST). A file is cut once its uncompressed entries reach ``target_file_bytes``."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[pathlib.Path] = []
    writer: rocksdict.SstFileWriter | None = None
    written = 0
    for key, value in entries:
        if writer is None:
            files.append(directory / f"{uuid.uuid4().hex}.sst")
            writer = rocksdict.SstFileWriter(options)
            writer.open(str(files[-1]))
        writer[key] = value
        written += len(key) + len(value)
        if written >= target_file_bytes:
            writer.finish()
            writer, written = None, 0
    if writer is not None:
        writer.finish()
    return files


def ingest(table: rocksdict.Rdict, files: list[pathlib.Path]) -> None:
    """Move ``files`` into ``table`` (a hard link: they are on the same disk as the database)."""
    if files:
        options = rocksdict.IngestExternalFileOptions()
        options.set_move_files(True)
        table.ingest_external_file([str(f) for f in files], options)
