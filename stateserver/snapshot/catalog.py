"""The checkpoints of a namespace in the snapshot store: list, load, commit, verify.

A checkpoint exists once its metadata object does; the metadata is written last, with a
create-only write, after checking that every shard manifest it names is in the store, that
every file those manifests name is there with its size (a HEAD each: invariant 10), and that
the shards tile the namespace's key groups (invariant 2). A checkpoint id at or below the
latest committed one can no longer commit: it is subsumed, as in Flink.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable

from stateserver.store import paths
from stateserver.store.checksums import bytes_checksum
from stateserver.protocol.errors import AlreadyExists, CorruptData, InvalidInput, NotFound, Unavailable
from stateserver.store import ObjectNotFound, ObjectStore, StoreError, StoreUnavailable
from stateserver.protocol.v1 import checkpoint_pb2 as cpb

FORMAT_VERSION = 1
# Operator metadata (source offsets, watermarks) rides in the checkpoint's metadata object, which
# every restore and retention pass reads: it must stay small.
MAX_OPERATOR_METADATA_BYTES = 1 << 20


def check_operator_metadata(operator_metadata: bytes) -> None:
    if len(operator_metadata) > MAX_OPERATOR_METADATA_BYTES:
        raise InvalidInput(f"checkpoint metadata is {len(operator_metadata)} bytes; the limit is "
                           f"{MAX_OPERATOR_METADATA_BYTES} (1 MiB): keep source offsets there, not state")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileProblem:
    object_key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.object_key}: {self.problem}"


class CheckpointCatalog:
    def __init__(self, store: ObjectStore, clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.store = store
        self.clock_ms = clock_ms

    def committed_ids(self, namespace: str) -> list[int]:
        ids = []
        for meta in _listing(self.store, paths.checkpoints_prefix(namespace)):
            if paths.is_metadata(meta.key):
                checkpoint_id = paths.checkpoint_id_of(meta.key)
                if checkpoint_id is not None:
                    ids.append(checkpoint_id)
        return sorted(ids)

    def load(self, namespace: str, checkpoint_id: int) -> cpb.CheckpointMetadata:
        key = paths.checkpoint_metadata(namespace, checkpoint_id)
        try:
            data = self.store.get(key)
        except ObjectNotFound:
            raise NotFound(f"checkpoint {checkpoint_id} of namespace {namespace!r} does not exist "
                           f"(no {key} in {self.store.url})") from None
        except StoreUnavailable as exc:
            raise Unavailable(str(exc)) from exc
        metadata = cpb.CheckpointMetadata()
        try:
            metadata.ParseFromString(data)
        except Exception as exc:
            raise CorruptData(f"checkpoint metadata {key} cannot be read: {exc}") from None
        if metadata.namespace != namespace or metadata.checkpoint_id != checkpoint_id:
            raise CorruptData(f"checkpoint metadata {key} names {metadata.namespace}/{metadata.checkpoint_id}")
        return metadata

    def latest(self, namespace: str) -> cpb.CheckpointMetadata:
        ids = self.committed_ids(namespace)
        if not ids:
            raise NotFound(f"namespace {namespace!r} has no committed checkpoint in {self.store.url}")
        return self.load(namespace, ids[-1])

    def resolve(self, namespace: str, checkpoint: int | str) -> cpb.CheckpointMetadata:
        """``checkpoint`` is an id or ``"latest"``."""
        if checkpoint == "latest":
            return self.latest(namespace)
        return self.load(namespace, int(checkpoint))

    def commit(self, namespace: str, checkpoint_id: int, shards: Iterable[cpb.ShardSnapshotHandle],
               *, executor: concurrent.futures.Executor | None = None, operator_metadata: bytes = b"") -> str:
        """Write the checkpoint metadata, create-only, once every object it names is confirmed in
        the store with its size (invariant 10); returns its key. ``executor`` runs the checks in parallel.
        ``operator_metadata`` is stored as given, for whoever restores the checkpoint."""
        check_operator_metadata(operator_metadata)
        handles = sorted(shards, key=lambda h: h.key_group_start)
        if not handles:
            raise InvalidInput(f"checkpoint {checkpoint_id} names no shard snapshot")
        max_key_groups = handles[0].max_key_groups
        _check_tiling(checkpoint_id, handles, max_key_groups)
        for handle in handles:
            if handle.namespace != namespace or handle.checkpoint_id != checkpoint_id:
                raise InvalidInput(f"shard snapshot {handle.manifest_key} belongs to "
                                   f"{handle.namespace}/{handle.checkpoint_id}, not {namespace}/{checkpoint_id}")
            self._check_manifest(handle)
        committed = self.committed_ids(namespace)
        if committed and committed[-1] >= checkpoint_id:
            if committed[-1] == checkpoint_id:
                raise AlreadyExists(f"checkpoint {checkpoint_id} of namespace {namespace!r} is already committed")
            raise InvalidInput(f"checkpoint {checkpoint_id} is subsumed: checkpoint {committed[-1]} is already committed")
        self._check_objects(checkpoint_id, handles, executor)
        metadata = cpb.CheckpointMetadata(namespace=namespace, checkpoint_id=checkpoint_id, max_key_groups=max_key_groups,
                                          shards=handles, committed_at_millis=self.clock_ms(),
                                          format_version=FORMAT_VERSION, operator_metadata=operator_metadata)
        key = paths.checkpoint_metadata(namespace, checkpoint_id)
        try:
            created = self.store.put_if_absent(key, metadata.SerializeToString())
        except StoreUnavailable as exc:
            raise Unavailable(f"committing checkpoint {checkpoint_id}: {exc}") from exc
        if not created:
            raise AlreadyExists(f"checkpoint {checkpoint_id} of namespace {namespace!r} is already committed")
        return key

    def _check_objects(self, checkpoint_id: int, handles: list[cpb.ShardSnapshotHandle],
                       executor: concurrent.futures.Executor | None) -> None:
        """A HEAD of every file the handles name: a manifest's word is not proof that its files are there
        (garbage collection, or an operator, may have removed a file a snapshot reused)."""
        files = list({f.object_key: f for h in handles for f in (*h.shared_files, *h.private_files)}.values())
        try:
            found = list(executor.map(self._presence_problem, files) if executor is not None
                         else map(self._presence_problem, files))
        except StoreUnavailable as exc:
            raise Unavailable(f"committing checkpoint {checkpoint_id}: {exc}") from exc
        problems = [f"{stored.object_key}: {problem}" for stored, problem in zip(files, found) if problem is not None]
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise InvalidInput(f"checkpoint {checkpoint_id} is not committed: {len(problems)} of the {len(files)} "
                               f"files it names are not in the store as named ({shown}); take a new checkpoint")

    def verify(self, metadata: cpb.CheckpointMetadata, *, checksums: bool = False,
               executor: concurrent.futures.Executor | None = None) -> list[FileProblem]:
        """Every file the checkpoint names: present with its size (and checksum, if asked).

        With ``executor``, files are checked in parallel (reading every byte back is slow one
        object at a time); problems come back in the metadata's order either way.
        """
        files = [stored for handle in metadata.shards for stored in (*handle.shared_files, *handle.private_files)]
        check = functools.partial(self._file_problem, checksums=checksums)
        found = executor.map(check, files) if executor is not None else map(check, files)
        return [FileProblem(object_key=stored.object_key, problem=problem)
                for stored, problem in zip(files, found) if problem is not None]

    def _check_manifest(self, handle: cpb.ShardSnapshotHandle) -> None:
        try:
            stored = self.store.get(handle.manifest_key)
        except ObjectNotFound:
            raise InvalidInput(f"shard manifest {handle.manifest_key} is not in the store; the shard snapshot is not durable") from None
        if stored != handle.SerializeToString():
            raise InvalidInput(f"shard manifest {handle.manifest_key} differs from the handle given")

    def _presence_problem(self, stored: cpb.StoredFile) -> str | None:
        """Like ``_file_problem`` without checksums, but a store that cannot answer is not an answer."""
        try:
            meta = self.store.head(stored.object_key)
        except ObjectNotFound:
            return "missing"
        return None if meta.size == stored.size else f"size is {meta.size} bytes, the manifest says {stored.size}"

    def _file_problem(self, stored: cpb.StoredFile, checksums: bool) -> str | None:
        try:
            meta = self.store.head(stored.object_key)
            if meta.size != stored.size:
                return f"size is {meta.size} bytes, the manifest says {stored.size}"
            if checksums and bytes_checksum(self.store.get(stored.object_key)) != stored.checksum:
                return "checksum does not match the manifest (the object is corrupt)"
        except ObjectNotFound:
            return "missing"
        except StoreError as exc:
            return f"cannot be read: {exc}"
        return None


def _check_tiling(checkpoint_id: int, handles: list[cpb.ShardSnapshotHandle], max_key_groups: int) -> None:
    expected_start = 0
    for handle in handles:
        if handle.max_key_groups != max_key_groups:
            raise InvalidInput(f"checkpoint {checkpoint_id}: shards disagree on the number of key groups")
        if handle.key_group_start != expected_start:
            raise InvalidInput(f"checkpoint {checkpoint_id}: key groups from {expected_start} are not covered "
                               f"exactly once (next shard starts at {handle.key_group_start})")
        expected_start = handle.key_group_end + 1
    if expected_start != max_key_groups:
        raise InvalidInput(f"checkpoint {checkpoint_id}: key groups {expected_start}-{max_key_groups - 1} have no shard")


def _listing(store: ObjectStore, prefix: str) -> list:  # type: ignore[type-arg]
    try:
        return list(store.list(prefix))
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
