"""CLI command for offline compaction: ``stateserver compact`` (the ``compaction`` package).

    stateserver compact --snapshot-url URL --namespace NS --checkpoint N|latest
                        [--shards K | --key-groups A-B,C-D,...] [--drop-expired-before now|EPOCH_MS]
                        [--to-checkpoint M] [--dry-run] [--work-dir DIR] [--parallelism P]

Rewrites a committed checkpoint into a new one (id: the latest committed plus one, or M), never
touching existing objects. Meant for a stopped job: a running job committing the same id makes
one of the two commits fail; if it is the compaction's, it says so, and `stateserver gc` reclaims
what it uploaded. Exit status and error style as the other snapshot-store commands
(``cli_checkpoints``): 0 done, 1 failed, 2 bad arguments; one line on stderr, no traceback.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import pathlib
import sys
import tempfile
import time

from tqdm import tqdm  # type: ignore[import-untyped]

from stateserver.compaction import (
    CompactionPlan,
    ShardCompaction,
    compact_checkpoint,
    even_ranges,
    parse_ranges,
    plan_compaction,
    target_checkpoint_id,
)
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.cli.support import (
    checkpoint_argument,
    format_millis,
    guarded,
    human_size,
    open_snapshot_store,
    positive_int,
    store_arguments,
)
from stateserver.protocol.keygroups import KeyGroupRange
from stateserver.shard.rocks import RocksResources, RocksTuning


def register_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``compact`` to the ``stateserver`` parser."""
    compact = commands.add_parser(
        "compact", parents=[store_arguments()],
        help="rewrite a checkpoint into a new one: TTL cleanup, fully compacted SSTs, other shards",
        description="Rewrite a committed checkpoint into a new committed checkpoint: drop expired entries, "
                    "write every shard as sorted SST files in one level, and optionally split the key groups "
                    "into other shards. Existing objects are never modified. Run it on the checkpoint of a "
                    "stopped job: a running job may commit the same checkpoint id, and then one of the two "
                    "commits fails.")
    checkpoint_argument(compact)
    shards = compact.add_mutually_exclusive_group()
    shards.add_argument("--shards", type=positive_int, metavar="K",
                        help="split the key groups evenly into K shards, as a job of parallelism K does "
                             "(default: the input checkpoint's shards)")
    shards.add_argument("--key-groups", type=_ranges, metavar="A-B,C-D,...",
                        help="the output shards' key-group ranges; they must cover 0..max_key_groups-1 once")
    compact.add_argument("--drop-expired-before", type=_moment, metavar="now|EPOCH_MS",
                         help="drop entries whose TTL expires at or before this time (default: drop nothing)")
    compact.add_argument("--to-checkpoint", type=positive_int, metavar="M",
                         help="the new checkpoint's id, above every committed one (default: latest + 1)")
    compact.add_argument("--dry-run", action="store_true", help="print what would be read and written; write nothing")
    compact.add_argument("--work-dir", type=pathlib.Path, metavar="DIR",
                         help="local scratch space, up to a few input shards' size (default: a temporary directory)")
    compact.add_argument("--parallelism", type=positive_int, default=8, help="files transferred at once (default 8)")
    compact.set_defaults(run=guarded(_compact))


def _ranges(text: str) -> list[KeyGroupRange]:
    try:
        return parse_ranges(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (expected A-B,C-D,...)") from None


def _moment(text: str) -> str | int:
    if text == "now":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected now or milliseconds since the epoch, got {text!r}")


def _compact(options: argparse.Namespace) -> int:
    store = open_snapshot_store(options)
    catalog = CheckpointCatalog(store)
    source = catalog.resolve(options.namespace, options.checkpoint)
    target = target_checkpoint_id(catalog.committed_ids(options.namespace), options.to_checkpoint)
    ranges = even_ranges(source.max_key_groups, options.shards) if options.shards else options.key_groups
    plan = plan_compaction(source, ranges, target_checkpoint_id=target)
    expire_before_ms = (time.time_ns() // 1_000_000 if options.drop_expired_before == "now"
                        else options.drop_expired_before)
    _describe(plan, expire_before_ms, dry_run=options.dry_run)
    if options.dry_run:
        return 0
    with tempfile.TemporaryDirectory(prefix="stateserver-compact-", dir=options.work_dir) as work_dir, \
            concurrent.futures.ThreadPoolExecutor(options.parallelism, thread_name_prefix="compact") as executor, \
            tqdm(total=plan.input_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                 leave=False, desc=f"compact {plan.namespace} checkpoint {source.checkpoint_id}",
                 disable=None) as bar:
        def shard_done(done: ShardCompaction) -> None:
            bar.write(f"  shard {done.key_groups}: {done.entries_in} entries in, {done.entries_out} out, "
                      f"{done.expired} expired dropped, from {done.source_shards} input shards, "
                      f"{human_size(done.bytes_out)} uploaded", file=sys.stdout)

        result = compact_checkpoint(store, plan, expire_before_ms=expire_before_ms, work_dir=pathlib.Path(work_dir),
                                    resources=RocksResources(RocksTuning()), executor=executor,
                                    catalog=catalog, on_shard=shard_done, progress=bar.update)
    print(f"compacted checkpoint {result.source_checkpoint_id} of namespace {result.namespace!r} into checkpoint "
          f"{result.checkpoint_id}: shards {result.shards_in} -> {len(result.shards)}, entries {result.entries_in} "
          f"-> {result.entries_out} ({result.expired} expired dropped), {human_size(result.bytes_in)} -> "
          f"{human_size(result.bytes_out)}, in {result.seconds:.2f} s")
    return 0


def _describe(plan: CompactionPlan, expire_before_ms: int | None, *, dry_run: bool) -> None:
    expiry = ("keeping every entry" if expire_before_ms is None
              else f"dropping entries that expire at or before {format_millis(expire_before_ms)} UTC ({expire_before_ms})")
    print(f"{'dry run: would compact' if dry_run else 'compacting'} checkpoint {plan.source.checkpoint_id} of "
          f"namespace {plan.namespace!r} ({len(plan.source.shards)} shards, {human_size(plan.input_bytes)}) into "
          f"checkpoint {plan.target_checkpoint_id} ({len(plan.outputs)} shards), {expiry}")
    if dry_run:
        for output in plan.outputs:
            inputs = ", ".join(f"{h.key_group_start}-{h.key_group_end}" for h in output.sources)
            print(f"  shard {output.key_groups} from input shards {inputs} ({human_size(output.source_bytes)} to read)")
        print("nothing was written")
