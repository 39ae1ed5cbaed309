"""CLI commands over the snapshot store: checkpoints list/show, verify, restore, gc.

    stateserver checkpoints list  --snapshot-url URL --namespace NS
    stateserver checkpoints show  --snapshot-url URL --namespace NS --checkpoint N|latest
    stateserver verify            --snapshot-url URL --namespace NS --checkpoint N|latest [--checksums]
    stateserver restore           --snapshot-url URL --namespace NS --checkpoint N|latest --data-dir D
                                  [--key-groups A-B]
    stateserver gc                --snapshot-url URL --namespace NS [--dry-run] [--retain K] [--min-age 1h]

Every command takes ``--snapshot-option KEY=VALUE`` (repeatable: endpoint, region, access_key_id,
...); the usual AWS_* variables are honoured as well. Exit status: 0 done; 1 a checkpoint or an
object is missing or damaged, the store refused or could not be reached (for verify: a bad
object); 2 the command line or the store URL is wrong. Errors are one line on stderr, without a
traceback: what went wrong and, where it helps, what to do.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import os
import pathlib
import re
import shutil
import sys
import urllib.parse
from collections.abc import Callable

from tqdm import tqdm  # type: ignore[import-untyped]

from stateserver.checkpoints import CheckpointCatalog
from stateserver.errors import InvalidInput, StateServerError
from stateserver.gc import collect_garbage
from stateserver.keygroups import KeyGroupRange
from stateserver.limits import Limits
from stateserver.names import check_name
from stateserver.objectstore import InvalidStoreUrl, ObjectStore, RetryingObjectStore, StoreError, open_store
from stateserver.registry import ShardRegistry, shard_directory
from stateserver.restore import RestoreResult, plan_restore, restore_shard
from stateserver.rocks import RocksResources, RocksTuning
from stateserver.shard import ShardId
from stateserver.states import StateKind
from stateserver.v1 import state_pb2 as pb

EXIT_FAILED = 1
EXIT_USAGE = 2
Command = Callable[[argparse.Namespace], int]


class _Refused(Exception):
    """A command declines to go on; the message says why and ends the command with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def register_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the ``stateserver`` parser."""
    store = _store_arguments()
    checkpoints = commands.add_parser("checkpoints", help="list and show committed checkpoints")
    actions = checkpoints.add_subparsers(dest="checkpoints_command", required=True)
    listing = actions.add_parser("list", parents=[store], help="every committed checkpoint of the namespace")
    listing.set_defaults(run=_guarded(_list))
    show = actions.add_parser("show", parents=[store], help="a checkpoint's shards, files, sizes and states")
    _checkpoint_argument(show)
    show.set_defaults(run=_guarded(_show))

    verify = commands.add_parser("verify", parents=[store], help="check that every file of a checkpoint is intact")
    _checkpoint_argument(verify)
    verify.add_argument("--checksums", action="store_true", help="read every file back and compare checksums too")
    verify.set_defaults(run=_guarded(_verify))

    restore = commands.add_parser("restore", parents=[store],
                                  help="restore a checkpoint into a data directory that `stateserver serve` serves")
    _checkpoint_argument(restore)
    restore.add_argument("--data-dir", required=True, type=pathlib.Path, help="the node's data directory")
    restore.add_argument("--key-groups", type=_key_groups, metavar="A-B",
                         help="restore only these key groups, as one shard (rescaling if needed); "
                              "default: every shard of the checkpoint as it is")
    restore.add_argument("--parallelism", type=_positive, default=8, help="files downloaded at once (default 8)")
    restore.set_defaults(run=_guarded(_restore))

    gc = commands.add_parser("gc", parents=[store], help="delete expired checkpoints and unreferenced files")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    gc.add_argument("--retain", type=_positive, default=2, metavar="K",
                    help="committed checkpoints to keep (default 2: a node that has not yet heard of the "
                         "latest may still reuse the files of the one before)")
    gc.add_argument("--min-age", type=_duration, default=datetime.timedelta(hours=1), metavar="AGE",
                    help="objects of checkpoints that may still commit are deleted only when older "
                         "(e.g. 90s, 30m, 1h, 2d; default 1h)")
    gc.set_defaults(run=_guarded(_gc))


# -- arguments -----------------------------------------------------------------------------------


def _store_arguments() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("snapshot store")
    group.add_argument("--snapshot-url", required=True, metavar="URL",
                       help="file:///abs/path or s3://bucket[/prefix]")
    group.add_argument("--snapshot-option", action="append", default=[], type=_option, metavar="KEY=VALUE",
                       dest="snapshot_options", help="a store option such as endpoint=... or region=... (repeatable)")
    group.add_argument("--namespace", required=True, type=_namespace, metavar="NS")
    return common


def _checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=_checkpoint, metavar="N|latest",
                        help="a checkpoint id, or latest")


def _checkpoint(text: str) -> int | str:
    if text == "latest":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a checkpoint id (1, 2, ...) or latest, got {text!r}")


def _namespace(text: str) -> str:
    try:
        return check_name("namespace", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _key_groups(text: str) -> KeyGroupRange:
    try:
        return KeyGroupRange.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> datetime.timedelta:
    """``90s``, ``30m``, ``1h30m``, ``2d``, or plain seconds."""
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return datetime.timedelta(seconds=float(text))
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 1h or 2d, got {text!r}")
    return datetime.timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


# -- errors ------------------------------------------------------------------------------------------


def _guarded(command: Command) -> Command:
    """Run ``command``, turning every expected failure into one line on stderr and an exit code."""

    def run(options: argparse.Namespace) -> int:
        try:
            return command(options)
        except _Refused as exc:
            return _fail(str(exc), exc.code)
        except InvalidStoreUrl as exc:
            return _fail(str(exc), EXIT_USAGE)
        except InvalidInput as exc:
            return _fail(str(exc), EXIT_USAGE)
        except (StoreError, StateServerError) as exc:  # access denied and unreachable say what to check
            return _fail(str(exc))
        except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED
        except OSError as exc:  # the local disk: a data directory that cannot be written, ...
            return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except KeyboardInterrupt:
            return _fail("interrupted", 130)

    return run


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"stateserver: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _open(options: argparse.Namespace) -> ObjectStore:
    url: str = options.snapshot_url
    if url.startswith("file:"):
        # open_store creates a missing directory, which would hide a mistyped path behind
        # "no checkpoint"; a store we only read from must already exist.
        path = pathlib.Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        if url.startswith("file:///") and not path.is_dir():
            raise _Refused(f"no snapshot store at {url}: {path} is not a directory")
    return RetryingObjectStore(open_store(url, options=dict(options.snapshot_options) or None))


# -- checkpoints list / show ---------------------------------------------------------------------------


def _list(options: argparse.Namespace) -> int:
    catalog = CheckpointCatalog(_open(options))
    ids = catalog.committed_ids(options.namespace)
    if not ids:
        print(f"namespace {options.namespace!r} has no committed checkpoint in {options.snapshot_url}",
              file=sys.stderr)
        return 0
    print(f"{'checkpoint':>10}  {'committed (UTC)':<23}  {'shards':>6}  {'bytes':>10}")
    for checkpoint_id in ids:
        metadata = catalog.load(options.namespace, checkpoint_id)
        print(f"{checkpoint_id:>10}  {_time(metadata.committed_at_millis):<23}  {len(metadata.shards):>6}  "
              f"{_size(sum(h.state_bytes for h in metadata.shards)):>10}")
    return 0


def _show(options: argparse.Namespace) -> int:
    metadata = CheckpointCatalog(_open(options)).resolve(options.namespace, options.checkpoint)
    total = sum(h.state_bytes for h in metadata.shards)
    print(f"checkpoint {metadata.checkpoint_id} of namespace {metadata.namespace!r}")
    print(f"  committed   {_time(metadata.committed_at_millis)} UTC")
    print(f"  key groups  0-{metadata.max_key_groups - 1} in {len(metadata.shards)} shards, {_size(total)}")
    for handle in metadata.shards:
        files = [("shared", f) for f in handle.shared_files] + [("private", f) for f in handle.private_files]
        print(f"shard {handle.key_group_start}-{handle.key_group_end}: writer epoch {handle.writer_epoch}, "
              f"{_size(handle.state_bytes)} in {len(files)} files, manifest {handle.manifest_key}")
        print("  states   " + (", ".join(_state(s) for s in handle.states) or "none"))
        for kind, stored in files:
            print(f"  {kind:<8} {stored.local_name:<24} {_size(stored.size):>10}  {stored.object_key}")
    return 0


def _state(state: pb.StateDescriptor) -> str:
    details = [StateKind(state.kind).name.lower()]
    if state.merge_operator:
        details.append(state.merge_operator)
    if state.ttl_ms:
        details.append(f"ttl {state.ttl_ms} ms")
    return f"{state.name} ({', '.join(details)})"


# -- verify ------------------------------------------------------------------------------------------------


def _verify(options: argparse.Namespace) -> int:
    catalog = CheckpointCatalog(_open(options))
    metadata = catalog.resolve(options.namespace, options.checkpoint)
    with concurrent.futures.ThreadPoolExecutor(8) as executor:
        problems = catalog.verify(metadata, checksums=options.checksums, executor=executor)
    count = sum(len(h.shared_files) + len(h.private_files) for h in metadata.shards)
    checked = "sizes and checksums" if options.checksums else "sizes"
    if not problems:
        print(f"checkpoint {metadata.checkpoint_id} of namespace {metadata.namespace!r}: all {count} files "
              f"present, {checked} match")
        return 0
    for problem in problems:
        print(f"bad object {problem.object_key}: {problem.problem}")
    return _fail(f"checkpoint {metadata.checkpoint_id} of namespace {metadata.namespace!r}: {len(problems)} of "
                 f"{count} files are missing or damaged ({', '.join(p.object_key for p in problems[:3])}"
                 f"{', ...' if len(problems) > 3 else ''})")


# -- restore -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
    key_groups: KeyGroupRange
    directory: pathlib.Path


def _restore(options: argparse.Namespace) -> int:
    store = _open(options)
    namespace: str = options.namespace
    metadata = CheckpointCatalog(store).resolve(namespace, options.checkpoint)
    data_dir: pathlib.Path = options.data_dir.absolute()
    ranges = ([options.key_groups] if options.key_groups is not None
              else [KeyGroupRange(h.key_group_start, h.key_group_end) for h in metadata.shards])
    targets = [_Target(r, shard_directory(data_dir, ShardId(namespace, r))) for r in ranges]
    plans = [plan_restore(metadata, target.key_groups) for target in targets]  # InvalidInput before any I/O
    _refuse_existing_shards(data_dir, namespace, targets)
    resources = RocksResources(RocksTuning())
    # The registry owns the data directory's layout: it writes namespace.json, or refuses a
    # namespace that exists there with another number of key groups.
    ShardRegistry(data_dir, resources, Limits()).create_namespace(namespace, metadata.max_key_groups)
    total = sum(plan.download_bytes for plan in plans)
    with concurrent.futures.ThreadPoolExecutor(options.parallelism, thread_name_prefix="restore") as executor, \
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False,
                 desc=f"restore {namespace} checkpoint {metadata.checkpoint_id}", disable=None) as bar:
        results: list[RestoreResult] = []
        try:
            for target in targets:
                results.append(restore_shard(store, metadata, target.key_groups, target.directory,
                                             resources=resources, executor=executor, progress=bar.update))
        except BaseException:
            # All or nothing: shards restored before the failure would refuse a rerun.
            for target in targets[:len(results)]:
                shutil.rmtree(target.directory, ignore_errors=True)
            raise
    for target, result in zip(targets, results):
        how = "rescaled" if result.rescaled else "full"
        rate = result.bytes_downloaded / result.seconds if result.seconds > 0 else 0.0
        print(f"restored key groups {result.key_groups} of checkpoint {result.checkpoint_id} into "
              f"{target.directory} ({how}, {result.files_downloaded} files, {_size(result.bytes_downloaded)} "
              f"in {result.seconds:.2f} s, {_size(int(rate))}/s)")
    print(f"serve it with: stateserver serve --data-dir {data_dir}")
    return 0


def _refuse_existing_shards(data_dir: pathlib.Path, namespace: str, targets: list[_Target]) -> None:
    """Never overwrite a shard, nor put one beside another holding some of the same key groups."""
    shards_dir = data_dir / "namespaces" / namespace / "shards"
    existing = []
    if shards_dir.is_dir():
        for path in shards_dir.iterdir():
            try:
                existing.append((KeyGroupRange.parse(path.name), path))
            except ValueError:
                continue  # hidden build directories and anything else that is not a shard
    for target in targets:
        for key_groups, path in existing:
            if key_groups.overlaps(target.key_groups):
                raise _Refused(f"refusing to restore key groups {target.key_groups}: shard directory {path} "
                               "already holds some of them; move it away first")


# -- gc ------------------------------------------------------------------------------------------------------


def _gc(options: argparse.Namespace) -> int:
    report = collect_garbage(_open(options), options.namespace, retain=options.retain, min_age=options.min_age,
                             now=datetime.datetime.now(datetime.timezone.utc), dry_run=options.dry_run)
    verb = "would delete" if report.dry_run else "deleted"
    for item in report.deleted:
        print(f"{verb} {item.key} ({_size(item.size)}): {item.reason}")
    for note in report.notes:
        print(f"stateserver: warning: {note}", file=sys.stderr)
    retained = ", ".join(map(str, report.retained)) or "none"
    print(f"gc of namespace {report.namespace!r}: {verb} {len(report.deleted)} objects, "
          f"{_size(report.bytes_deleted)}; retained checkpoints: {retained}; "
          f"kept {len(report.kept_young)} young objects of checkpoints that may still commit")
    return 0


# -- formatting ------------------------------------------------------------------------------------------------


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _time(millis: int) -> str:
    moment = datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"

