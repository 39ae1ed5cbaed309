"""A power loss of one node on a ``file://`` store: what it wrote and did not make durable is lost.

Two halves, for tests only:

In the node (``support.fault_node`` with ``FAULT_POWER_LOG`` set) ``install_recorder`` wraps
``os.fsync``, ``os.mkdir``, ``os.replace``, ``os.rename`` and ``os.link``, and ``RecordingStore``
wraps the object store, so that every write the node makes under the store's root leaves a line
in one log shared by all nodes (``O_APPEND``: one ``write`` per line, so the file's order is the
order of the calls across processes):

    <pid> begin <key>            a put / put_if_absent / put_file reaches the store
    <pid> end <key> <outcome>    it returned: ok, refused (create-only, the name existed) or error
    <pid> mkdir <path>           a directory was created
    <pid> rename <src> <dst>     os.replace / os.rename / os.link returned ("link" for a link)
    <pid> fsync-file <path>      an fsync of a file returned (path from /proc/self/fd)
    <pid> fsync-dir <path>       an fsync of a directory returned

Events are logged after the call returns: a node killed inside an fsync did not make anything
durable. Writes that do not go through Python (obstore's own ``LocalStore``) log only begin/end,
and so count as never synced, which is what they are.

In the test, ``apply_power_loss`` (after the node was SIGKILLed) does to the store what a power
loss may do to what that process wrote since it started and did not make durable:

- a file it wrote whose data no fsync covered after the write began is truncated to 0 bytes
  (the data of a staging file ``<name>#<digits>`` that was fsynced and renamed into place counts);
- a name it created (rename, link, or a write that made it) whose directory was not fsynced
  after the name appeared, by any process, is removed;
- a directory it created whose parent was not fsynced after the mkdir is removed, contents and all;
- its staging files left behind are removed.

Not modelled (and why): deletes that come back (the store's deletes are not synced, and a
journaling file system orders them anyway); older contents of an overwritten name (the store
overwrites no object a checkpoint names); other nodes' unsynced writes (they did not lose power).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from stateserver.store import ObjectMeta, ObjectStore



# -- in the node ---------------------------------------------------------------------------------


class _Log:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()

    def write(self, *fields: str) -> None:
        os.write(self._fd, ("\t".join((str(self._pid), *fields)) + "\n").encode())


_log: _Log | None = None


def install_recorder(log_path: Path, root: Path) -> None:
    """Log the node's mkdirs, renames, links and fsyncs under ``root`` (its parent's fsync included)."""
    global _log
    log = _log = _Log(log_path)
    under = os.path.realpath(root)
    lock = threading.Lock()

    def watched(path: str) -> bool:
        return path == under or path.startswith(under + os.sep) or path == os.path.dirname(under)

    def absolute(path: object) -> str:
        return os.path.abspath(os.fsdecode(os.fspath(path)))  # type: ignore[arg-type]

    original_fsync, original_mkdir = os.fsync, os.mkdir
    original_replace, original_rename, original_link = os.replace, os.rename, os.link

    def fsync(fd: int) -> None:
        original_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if watched(path):
            with lock:
                log.write("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file", path)

    def mkdir(path: object, *args: object, **kwargs: object) -> None:
        original_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]
        if watched(absolute(path)):
            log.write("mkdir", absolute(path))

    def moved(original: object, event: str) -> object:
        def move(src: object, dst: object, *args: object, **kwargs: object) -> None:
            original(src, dst, *args, **kwargs)  # type: ignore[operator]
            if watched(absolute(dst)):
                log.write(event, absolute(src), absolute(dst))
        return move

    os.fsync = fsync  # type: ignore[assignment]
    os.mkdir = mkdir  # type: ignore[assignment]
    os.replace = moved(original_replace, "rename")  # type: ignore[assignment]
    os.rename = moved(original_rename, "rename")  # type: ignore[assignment]
    os.link = moved(original_link, "link")  # type: ignore[assignment]


class RecordingStore:
    """Logs the begin and end of every write that reaches ``inner`` (the store's own object)."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner

    @property
    def url(self) -> str:
        return self._inner.url

    def __repr__(self) -> str:
        return f"RecordingStore({self._inner!r})"

    def _write(self, key: str, call: object) -> object:
        assert _log is not None
        _log.write("begin", key)
        outcome = "error"
        try:
            result = call()  # type: ignore[operator]
            outcome = "refused" if result is False else "ok"
            return result
        finally:
            _log.write("end", key, outcome)

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda: self._inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return bool(self._write(key, lambda: self._inner.put_if_absent(key, data)))

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return int(self._write(key, lambda: self._inner.put_file(key, local_path)))  # type: ignore[call-overload]

    def get(self, key: str) -> bytes:
        return self._inner.get(key)

    def get_to_file(self, key: str, local_path: str | os.PathLike[str]) -> int:
        return self._inner.get_to_file(key, local_path)

    def head(self, key: str) -> ObjectMeta:
        return self._inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self._inner.list(prefix)

    def delete(self, key: str) -> None:
        self._inner.delete(key)

    def exists(self, key: str) -> bool:
        return self._inner.exists(key)


# -- in the test -----------------------------------------------------------------------------------


@dataclasses.dataclass
class PowerLoss:
    """What one power loss did to the store (paths relative to its root)."""

    truncated: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    removed_dirs: list[str] = dataclasses.field(default_factory=list)
    writes: int = 0  # writes the node made since it started

    def summary(self) -> str:
        if not (self.truncated or self.removed or self.removed_dirs):
            return f"nothing lost ({self.writes} writes since the node started were durable)"
        return (f"of {self.writes} writes: truncated {self.truncated[:4]}, removed {self.removed[:4]}, "
                f"removed directories {self.removed_dirs[:3]}")


@dataclasses.dataclass(frozen=True)
class _Event:
    seq: int
    pid: int
    kind: str
    args: tuple[str, ...]


def _read_events(log_path: Path, offset: int) -> list[_Event]:
    with open(log_path, "rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").split("\n")
    events = []
    for seq, line in enumerate(lines[:-1]):  # the last piece is '' or a line being written
        pid, kind, *args = line.split("\t")
        events.append(_Event(seq, int(pid), kind, tuple(args)))
    return events


def log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except FileNotFoundError:
        return 0


def apply_power_loss(log_path: Path, root: Path, pid: int, *, offset: int = 0) -> PowerLoss:
    """Lose what process ``pid`` (SIGKILLed already) wrote under ``root`` and did not make durable.

    ``offset``: where the log stood before that process started (earlier lines do not matter)."""
    root = root.resolve()
    events = _read_events(log_path, offset)
    dir_syncs: dict[str, list[int]] = {}
    file_syncs: dict[str, list[tuple[str, int]]] = {}  # by directory: (file name, seq)
    for event in events:
        if event.kind == "fsync-dir":
            dir_syncs.setdefault(event.args[0], []).append(event.seq)
        elif event.kind == "fsync-file":
            file_syncs.setdefault(os.path.dirname(event.args[0]), []).append(
                (os.path.basename(event.args[0]), event.seq))

    def synced_after(syncs: dict[str, list[int]], path: str, seq: int) -> bool:
        return any(s > seq for s in syncs.get(path, ()))

    mine = [e for e in events if e.pid == pid]
    begins: dict[str, int] = {}
    outcomes: dict[str, str] = {}
    for event in mine:
        if event.kind == "begin":
            begins[event.args[0]] = event.seq
            outcomes.pop(event.args[0], None)
        elif event.kind == "end":
            outcomes[event.args[0]] = event.args[1]
    later_writers = {e.args[0]: e.seq for e in events if e.kind == "begin" and e.pid != pid}
    placed = {e.args[1]: e.seq for e in mine if e.kind in ("rename", "link")}
    loss = PowerLoss(writes=len(begins))

    for key, began in sorted(begins.items()):
        if outcomes.get(key) == "refused" or later_writers.get(key, -1) > began:
            continue  # the name is another writer's
        path = root.joinpath(*key.split("/"))
        directory, name = str(path.parent), path.name
        staging = re.compile(re.escape(name) + r"#\d+$")
        for leftover in (p for p in _entries(path.parent) if staging.match(p.name) and p.name.startswith(f"{name}#{pid}")):
            leftover.unlink(missing_ok=True)
        if not path.is_file():
            continue
        # The object's own name, or the staging file renamed (or linked) into it.
        data_synced = any(seq > began and (synced == name or staging.match(synced))
                          for synced, seq in file_syncs.get(directory, ()))
        created = max([s for dst, s in placed.items() if dst == str(path) and s > began], default=began)
        if not synced_after(dir_syncs, directory, created):
            path.unlink(missing_ok=True)
            loss.removed.append(key)
        elif not data_synced:
            os.truncate(path, 0)
            loss.truncated.append(key)

    for event in mine:
        if event.kind != "mkdir":
            continue
        created_dir = Path(event.args[0])
        if created_dir == root or root not in created_dir.parents:
            continue
        if not synced_after(dir_syncs, str(created_dir.parent), event.seq) and created_dir.exists():
            shutil.rmtree(created_dir, ignore_errors=True)
            loss.removed_dirs.append(str(created_dir.relative_to(root)))
    return loss


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []
