"""Sorted entries into SST files (SstFileWriter), cut at a target size, for ingestion as one level.

Entries must arrive in strictly increasing key order; the files then cover disjoint key ranges, so
RocksDB ingests them all into the bottommost level of an empty column family: no compaction is
left to do, and no tombstone is written (dropped entries are simply not written).
"""
from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterable

import rocksdict

DEFAULT_TARGET_FILE_BYTES = 64 << 20


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
