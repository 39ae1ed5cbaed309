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
import base64
import concurrent.futures
import dataclasses
import datetime
import pathlib
import sys

from tqdm import tqdm  # type: ignore[import-untyped]

from stateserver.shard import clean_close
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.cli.support import (
    Refused,
    checkpoint_argument,
    fail,
    duration,
    format_millis,
    guarded,
    human_size,
    key_group_range,
    open_snapshot_store,
    positive_int,
    store_arguments,
)
from stateserver.snapshot.gc import collect_garbage
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.protocol.limits import Limits
from stateserver.node.registry import ShardRegistry
from stateserver.node.shard_open import shard_directory
from stateserver.restore import plan_restore, restore_shards
from stateserver.node.server import NodeStartError, lock_data_dir
from stateserver.shard.rocks import RocksResources, RocksTuning
from stateserver.shard.shard import ShardId
from stateserver.protocol.states import StateKind
from stateserver.protocol.v1 import state_pb2 as pb



def register_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the ``stateserver`` parser."""
    store = store_arguments()
    checkpoints = commands.add_parser("checkpoints", help="list and show committed checkpoints")
    actions = checkpoints.add_subparsers(dest="checkpoints_command", required=True)
    listing = actions.add_parser("list", parents=[store], help="every committed checkpoint of the namespace")
    listing.set_defaults(run=guarded(_list))
    show = actions.add_parser("show", parents=[store], help="a checkpoint's shards, files, sizes and states")
    checkpoint_argument(show)
    show.set_defaults(run=guarded(_show))

    verify = commands.add_parser("verify", parents=[store], help="check that every file of a checkpoint is intact")
    checkpoint_argument(verify)
    verify.add_argument("--checksums", action="store_true", help="read every file back and compare checksums too")
    verify.set_defaults(run=guarded(_verify))

    restore = commands.add_parser("restore", parents=[store],
                                  help="restore a checkpoint into a data directory that `stateserver serve` serves")
    checkpoint_argument(restore)
    restore.add_argument("--data-dir", required=True, type=pathlib.Path, help="the node's data directory")
    restore.add_argument("--key-groups", type=key_group_range, metavar="A-B",
                         help="restore only these key groups, as one shard (rescaling if needed); "
                              "default: every shard of the checkpoint as it is")
    restore.add_argument("--parallelism", type=positive_int, default=8, help="files downloaded at once (default 8)")
    restore.set_defaults(run=guarded(_restore))

    gc = commands.add_parser("gc", parents=[store], help="delete expired checkpoints, unreferenced files and "
                             "superseded ownership records (keeps checkpoints a current shard owner restored)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    gc.add_argument("--retain", type=positive_int, default=2, metavar="K",
                    help="committed checkpoints to keep (default 2: a node that has not yet heard of the "
                         "latest may still reuse the files of the one before)")
    gc.add_argument("--min-age", type=duration, default=datetime.timedelta(hours=1), metavar="AGE",
                    help="objects no committed checkpoint names are deleted only when older, whatever "
                         "checkpoint id they carry (e.g. 90s, 30m, 1h, 2d; default 1h)")
    gc.set_defaults(run=guarded(_gc))


# -- arguments -----------------------------------------------------------------------------------




# -- errors ------------------------------------------------------------------------------------------


# -- checkpoints list / show ---------------------------------------------------------------------------


def _list(options: argparse.Namespace) -> int:
    catalog = CheckpointCatalog(open_snapshot_store(options))
    ids = catalog.committed_ids(options.namespace)
    if not ids:
        print(f"namespace {options.namespace!r} has no committed checkpoint in {options.snapshot_url}",
              file=sys.stderr)
        return 0
    print(f"{'checkpoint':>10}  {'committed (UTC)':<23}  {'shards':>6}  {'bytes':>10}")
    for checkpoint_id in ids:
        metadata = catalog.load(options.namespace, checkpoint_id)
        print(f"{checkpoint_id:>10}  {format_millis(metadata.committed_at_millis):<23}  {len(metadata.shards):>6}  "
              f"{human_size(sum(h.state_bytes for h in metadata.shards)):>10}")
    return 0


def _show(options: argparse.Namespace) -> int:
    metadata = CheckpointCatalog(open_snapshot_store(options)).resolve(options.namespace, options.checkpoint)
    total = sum(h.state_bytes for h in metadata.shards)
    print(f"checkpoint {metadata.checkpoint_id} of namespace {metadata.namespace!r}")
    print(f"  committed   {format_millis(metadata.committed_at_millis)} UTC")
    print(f"  key groups  0-{metadata.max_key_groups - 1} in {len(metadata.shards)} shards, {human_size(total)}")
    print(f"  metadata    {_operator_metadata(metadata.operator_metadata)}")
    for handle in metadata.shards:
        files = [("shared", f) for f in handle.shared_files] + [("private", f) for f in handle.private_files]
        print(f"shard {handle.key_group_start}-{handle.key_group_end}: writer epoch {handle.writer_epoch}, "
              f"{human_size(handle.state_bytes)} in {len(files)} files, manifest {handle.manifest_key}")
        print("  states   " + (", ".join(_state(s) for s in handle.states) or "none"))
        for kind, stored in files:
            print(f"  {kind:<8} {stored.local_name:<24} {human_size(stored.size):>10}  {stored.object_key}")
    return 0


def _operator_metadata(blob: bytes) -> str:
    """The operator's checkpoint metadata, saying how it is shown: text when it is printable
    UTF-8, else base64."""
    if not blob:
        return "none"
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return f"{len(blob)} bytes, utf-8 text: {text}"
    return f"{len(blob)} bytes, base64: {base64.b64encode(blob).decode('ascii')}"


def _state(state: pb.StateDescriptor) -> str:
    details = [StateKind(state.kind).name.lower()]
    if state.merge_operator:
        details.append(state.merge_operator)
    if state.ttl_ms:
        details.append(f"ttl {state.ttl_ms} ms")
    return f"{state.name} ({', '.join(details)})"


# -- verify ------------------------------------------------------------------------------------------------


def _verify(options: argparse.Namespace) -> int:
    catalog = CheckpointCatalog(open_snapshot_store(options))
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
    return fail(f"checkpoint {metadata.checkpoint_id} of namespace {metadata.namespace!r}: {len(problems)} of "
                 f"{count} files are missing or damaged ({', '.join(p.object_key for p in problems[:3])}"
                 f"{', ...' if len(problems) > 3 else ''})")


# -- restore -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
    key_groups: KeyGroupRange
    directory: pathlib.Path


def _restore(options: argparse.Namespace) -> int:
    store = open_snapshot_store(options)
    namespace: str = options.namespace
    metadata = CheckpointCatalog(store).resolve(namespace, options.checkpoint)
    data_dir: pathlib.Path = options.data_dir.absolute()
    ranges = ([options.key_groups] if options.key_groups is not None
              else [KeyGroupRange(h.key_group_start, h.key_group_end) for h in metadata.shards])
    targets = [_Target(r, shard_directory(data_dir, ShardId(namespace, r))) for r in ranges]
    plans = [plan_restore(metadata, target.key_groups) for target in targets]  # InvalidInput before any I/O
    try:
        # Held while restoring: a node started meanwhile refuses the directory, as this refuses a node's.
        lock = lock_data_dir(data_dir)
    except NodeStartError as exc:
        raise Refused(f"refusing to restore into {data_dir}: {exc}; stop the node first") from None
    with lock:
        _refuse_existing_shards(data_dir, namespace, targets)
        resources = RocksResources(RocksTuning())
        # The registry owns the data directory's layout: it writes namespace.json, or refuses a
        # namespace that exists there with another number of key groups.
        ShardRegistry(data_dir, resources, Limits()).create_namespace(namespace, metadata.max_key_groups)
        total = sum(plan.download_bytes for plan in plans)
        with concurrent.futures.ThreadPoolExecutor(options.parallelism, thread_name_prefix="restore") as executor, \
                tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False,
                     desc=f"restore {namespace} checkpoint {metadata.checkpoint_id}", disable=None) as bar:
            results = restore_shards(store, metadata, [(t.key_groups, t.directory) for t in targets],
                                     resources=resources, executor=executor, progress=bar.update)
        for target in targets:
            # Exactly the checkpoint, owned by nobody yet: the first writer may open it as it is.
            clean_close.write(target.directory, clean_close.CleanClose(
                namespace=namespace, key_groups=target.key_groups, epoch=None, owner_id=None,
                restored_from=metadata.checkpoint_id))
    for target, result in zip(targets, results):
        how = "rescaled" if result.rescaled else "full"
        rate = result.bytes_downloaded / result.seconds if result.seconds > 0 else 0.0
        print(f"restored key groups {result.key_groups} of checkpoint {result.checkpoint_id} into "
              f"{target.directory} ({how}, {result.files_downloaded} files, {human_size(result.bytes_downloaded)} "
              f"in {result.seconds:.2f} s, {human_size(int(rate))}/s)")
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
                raise Refused(f"refusing to restore key groups {target.key_groups}: shard directory {path} "
                               "already holds some of them; move it away first")


# -- gc ------------------------------------------------------------------------------------------------------


def _gc(options: argparse.Namespace) -> int:
    report = collect_garbage(open_snapshot_store(options), options.namespace, retain=options.retain, min_age=options.min_age,
                             now=datetime.datetime.now(datetime.timezone.utc), dry_run=options.dry_run)
    verb = "would delete" if report.dry_run else "deleted"
    for item in report.deleted:
        print(f"{verb} {item.key} ({human_size(item.size)}): {item.reason}")
    for note in report.notes:
        print(f"stateserver: warning: {note}", file=sys.stderr)
    retained = ", ".join(map(str, report.retained)) or "none"
    pinned = (f"; kept checkpoints {', '.join(map(str, report.pinned))} (a current shard owner restored them)"
              if report.pinned else "")
    print(f"gc of namespace {report.namespace!r}: {verb} {len(report.deleted)} objects "
          f"({len(report.owner_records)} superseded ownership records), "
          f"{human_size(report.bytes_deleted)}; retained checkpoints: {retained}{pinned}; "
          f"kept {len(report.kept_young)} young objects of checkpoints that may still commit")
    return 0


# -- formatting ------------------------------------------------------------------------------------------------


