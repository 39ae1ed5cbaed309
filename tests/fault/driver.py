"""One seeded fault trial: a stream job on real nodes and a real store, against a pure model.

``run_trial(seed, cluster, work_dir)`` derives everything from ``seed``: the shards (3 or 4 over
32 key groups, held by 2 operator subtasks), the writes (every state kind and merge operator),
the checkpoints, and the faults, injected at random points:

    kill:writes / kill:sync / kill:upload / kill:commit / kill:after_commit
                     SIGKILL of a node while the job writes, in a checkpoint's sync phase, while
                     its uploads run, around and after the commit; the node restarts on its data dir
    kill:idle        SIGKILL after a flush; the job then resumes its shards without a restore (it
                     knows exactly what it wrote) or restores as usual
    power:upload / power:commit / power:after_commit
                     a power loss of a node (``file://`` only; on S3 a plain kill): SIGKILL, then the
                     store loses what that node wrote since its start and did not fsync (data,
                     names, directories: ``support.power_loss``); a commit the job was told of
                     must still be there (or a later one), and every committed checkpoint restores
    store:<mode>     object-store errors, outages (beyond the node's retries), timeouts, lost
                     answers, slow calls, at the node's store boundary (support.fault_store)
    competitor:older / :equal / :newer
                     a writer of an earlier attempt, a second owner at the job's epoch, a newer
                     attempt; their writes carry a marker and must never reach a committed checkpoint
    gc               ``stateserver gc --retain 1..3`` as a subprocess while the job runs (the nodes'
                     own retention runs after every commit: ``--retained-checkpoints 2``); with
                     ``--min-age 0`` it runs between two steps (finished before the job goes on:
                     with no minimum age, gc racing a commit may take what it names, by contract),
                     with the default minimum age also in the background
    rollback         the job restarts from an older committed checkpoint
    rollback_gc      the window of defect 2: checkpoints with many writes until a compaction retired
                     an SST of the checkpoint before the latest; a rollback to that one; ``gc
                     --retain 1`` (min age 0 or the default) finished; then a checkpoint. The gc must
                     keep the checkpoint the job restored (its owners may reuse its files), the
                     commit must not be refused for missing files, and it must restore exactly
    fresh_start      a new job on the same namespace, from empty state

On any StateServerError the job recovers as a stream engine would: a new, higher epoch, every
shard reopened with ``restore="latest"`` (a fresh start if nothing is committed), the model
reset to that checkpoint. Reads along the way compare with the model; after the trial
``fault.checks`` holds every committed checkpoint against the model and the store after gc.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stateserver.client import InvalidArgumentError, StateClient, StateServerError, Writer
from stateserver.client.checkpointing import first_checkpoint_id
from fault import checks
from fault.cluster import FaultCluster, start_cli
from fault.model import STATES, Model, Op, fenced_op, random_op
from stateserver.snapshot.catalog import CheckpointCatalog
from stateserver.protocol import placement
from stateserver.protocol.keygroups import KeyGroupRange, key_group_for

MAX_KEY_GROUPS = 32
KEYS = [f"k{i}" for i in range(24)]
RECOVERY_ATTEMPTS = 6
# Names tried for a placement the seed draws: 6 orders of 3 nodes per shard, 4 shards at most,
# so 1,296 names on average; this bound fails about once in 10^67 trials.
PLACEMENT_ATTEMPTS = 200_000
JOB_TIMEOUT_S = 15.0
COMPETITOR_TIMEOUT_S = 5.0

KILL_PHASES = ("writes", "sync", "upload", "commit", "after_commit", "idle")
POWER_PHASES = ("upload", "commit", "after_commit")
CHURN_ROUNDS = 6  # rollback_gc: at most this many checkpoints to wait for a compaction
STORE_MODES = ("errors", "outage", "timeouts", "lost_answers", "slow")
FAULT_WEIGHTS: dict[str, float] = {
    **{f"kill:{phase}": 1.0 for phase in KILL_PHASES},
    "power:upload": 1.0, "power:commit": 1.0, "power:after_commit": 2.5,
    **{f"store:{mode}": 1.0 for mode in STORE_MODES},
    "competitor:older": 1.0, "competitor:equal": 1.0, "competitor:newer": 1.0,
    "gc": 1.5, "rollback": 1.0, "rollback_gc": 1.5, "fresh_start": 1.0,
}


class TrialFailure(AssertionError):
    pass


@dataclasses.dataclass
class TrialResult:
    seed: int
    store: str
    namespace: str
    seconds: float = 0.0
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failures: list[str] = dataclasses.field(default_factory=list)
    trace: list[str] = dataclasses.field(default_factory=list)
    checkpoints_checked: int = 0
    owner_records_after_gc: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def replay_command(seed: int) -> str:
    return f".venv/bin/python -m pytest tests/fault --fault-seed {seed}"


def store_for_seed(seed: int) -> str:
    """Even seeds run on file://, odd seeds on SeaweedFS S3: one seed says everything."""
    return "file" if seed % 2 == 0 else "s3"


def fresh_start(client: StateClient, namespace: str, ranges: list[list[str]], epoch: int) -> list[Writer]:
    """Open the job's shards empty, whatever the namespace held before (a new job on it)."""
    return [client.open_writer(namespace, key_groups=r, epoch=epoch, restore="empty") for r in ranges]


def state_handles(writer: Writer) -> dict[str, Any]:
    handles: dict[str, Any] = {}
    for name, (kind, operator) in STATES.items():
        if kind == "value":
            handles[name] = writer.value_state(name)
        elif kind == "list":
            handles[name] = writer.list_state(name)
        elif kind == "map":
            handles[name] = writer.map_state(name)
        else:
            handles[name] = writer.aggregating_state(name, merge_operator=operator)
    return handles


def send(handles: dict[str, Any], op: Op) -> None:
    handle = handles[op.state]
    if op.kind == "put":
        handle.put(op.key, op.value)
    elif op.kind == "delete":
        handle.delete(op.key)
    elif op.kind == "clear":
        handle.clear(op.key)
    elif op.kind == "merge":
        handle.merge(op.key, op.value)
    elif op.kind == "add":
        handle.add(op.key, op.value)
    elif op.kind == "map_put":
        handle.put(op.key, op.map_key, op.value)
    elif op.kind == "map_remove":
        handle.remove(op.key, op.map_key)
    else:
        raise ValueError(op.kind)


def read(handles: dict[str, Any], state: str, key: str) -> Any:
    kind = STATES[state][0]
    handle = handles[state]
    if kind == "map":
        return dict(handle.items(key)) or None
    if kind == "list":
        return handle.get(key) or None
    return handle.get(key)


@dataclasses.dataclass
class Attempt:
    """One (re)start of the job, or a competing writer: its client, epoch and writers."""

    client: StateClient
    epoch: int
    writers: list[Writer]
    handles: list[dict[str, Any]]
    label: str


class Trial:
    def __init__(self, seed: int, cluster: FaultCluster, work_dir: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.cluster = cluster
        self.work_dir = work_dir
        self.ranges = self._layout()
        self.namespace = self._placed_namespace()
        self.result = TrialResult(seed=seed, store=cluster.target.kind, namespace=self.namespace)
        self.model = Model()
        self.catalog = CheckpointCatalog(cluster.store)
        self.subtask_of_key = {key: self._subtask_of(key) for key in KEYS}
        self.highest_epoch = 0
        self.checkpoints_taken = 0
        self.job: Attempt | None = None
        self.zombies: list[Attempt] = []
        self.store_rules: list[dict[str, object]] = []
        self.gc_runs: list[Any] = []
        self.restored_from: int | None = None  # the checkpoint the job's last (re)start restored
        self.started = time.monotonic()

    # -- set-up ----------------------------------------------------------------------------

    def _layout(self) -> list[list[str]]:
        shards = self.rng.choice([3, 4])
        cuts = sorted(self.rng.sample(range(1, MAX_KEY_GROUPS), shards - 1))
        bounds = [0, *cuts, MAX_KEY_GROUPS]
        ranges = [f"{bounds[i]}-{bounds[i + 1] - 1}" for i in range(shards)]
        split = self.rng.randint(1, shards - 1)
        return [ranges[:split], ranges[split:]]

    def _placed_namespace(self) -> str:
        """A namespace (new in this session's store) whose shards meet the nodes in the order the
        seed draws. Placement hashes the nodes' addresses, which are random ports, so a name alone
        would place the shards differently in every run, and a replay (``--fault-seed``) would kill
        other nodes' shards than the run it replays. The node list is in port order, so "the first
        node" is one node too. The draws have their own generator: the trial's own stay as they were."""
        draw = random.Random(f"placement-{self.seed}")
        addresses = self.cluster.addresses
        shards = [r for ranges in self.ranges for r in ranges]
        wanted = [draw.sample(range(len(addresses)), len(addresses)) for _ in shards]
        prefix = f"fault-{self.seed}-{uuid.uuid4().hex[:6]}"
        for attempt in range(PLACEMENT_ATTEMPTS):
            name = f"{prefix}-{attempt}"
            orders = [[addresses.index(node) for node in placement.placement_order(f"{name}/{r}", addresses)]
                      for r in shards]
            if orders == wanted:
                return name
        raise AssertionError(f"no namespace of {PLACEMENT_ATTEMPTS} places the shards as seed {self.seed} draws")

    def _subtask_of(self, key: str) -> int:
        group = key_group_for(key.encode(), MAX_KEY_GROUPS)
        for index, ranges in enumerate(self.ranges):
            if any(group in KeyGroupRange.parse(r) for r in ranges):
                return index
        raise AssertionError(f"key group {group} has no shard")

    def note(self, text: str) -> None:
        self.result.trace.append(f"{time.monotonic() - self.started:6.2f}s {text}")

    def _next_epoch(self) -> int:
        self.highest_epoch += 1
        return self.highest_epoch

    def _plan(self) -> list[str]:
        steps = [self.rng.choices(["write", "read", "checkpoint"], weights=[5, 1.5, 2.5])[0]
                 for _ in range(self.rng.randint(10, 16))]
        names, weights = list(FAULT_WEIGHTS), list(FAULT_WEIGHTS.values())
        for _ in range(self.rng.randint(1, 3)):
            fault = self.rng.choices(names, weights=weights)[0]
            position = self.rng.randint(2, len(steps))
            steps.insert(position, fault)
            if fault.startswith("store:"):
                steps.insert(min(len(steps), position + self.rng.randint(2, 6)), "store:off")
        return steps

    # -- the trial ---------------------------------------------------------------------------

    def run(self) -> TrialResult:
        started = time.monotonic()
        try:
            self._run()
        except TrialFailure as exc:
            self.result.failures.append(str(exc))
        except Exception:
            self.result.failures.append("the driver met an error that is no StateServerError:\n"
                                        + traceback.format_exc(limit=8))
        finally:
            self._stop_everything()
        if not self.result.failures:
            self.note("final checks")
            self._final_checks()
            self.note("done")
        self.result.faults.update(f"store:{event}" for event, n in self._store_events().items() for _ in range(n))
        self.result.seconds = time.monotonic() - started
        return self.result

    def _run(self) -> None:
        self._events_before = self.cluster.fault_events()
        client = StateClient(self.cluster.addresses, timeout=JOB_TIMEOUT_S)
        client.create_namespace(self.namespace, MAX_KEY_GROUPS)
        self._start(client, "fresh", self._fresh)
        for step in self._plan():
            try:
                self._step(step)
            except StateServerError as exc:
                self.note(f"  {type(exc).__name__}: {str(exc)[:160]}")
                self._recover(f"{step} failed")
        self._zombie_sweep()
        if self.job is not None:
            self._close(self.job)
            self.job = None

    def _step(self, step: str) -> None:
        self.note(step)
        if step == "write":
            self._write(self.rng.randint(1, 12))
        elif step == "read":
            self._read_check()
        elif step == "checkpoint":
            self._checkpoint()
        elif step.startswith(("kill:", "power:")):
            phase = step.split(":", 1)[1]
            # On file:// a power loss (explicit, or half of the kills where it can lose a write); on S3 a kill.
            power = self.cluster.target.kind == "file" and phase in POWER_PHASES and (
                step.startswith("power:") or self.rng.random() < 0.5)
            self.result.faults[f"{'power' if power else 'kill'}:{phase}"] += 1
            self._kill(phase, power=power)
        elif step.startswith("store:"):
            self._store_faults(step.split(":", 1)[1])
        elif step.startswith("competitor:"):
            self.result.faults[step] += 1
            self._competitor(step.split(":", 1)[1])
        elif step == "gc":
            self.result.faults[step] += 1
            retain = self.rng.randint(1, 3)
            min_age = self.rng.choice(["0", None])
            run = self._start_gc(retain, min_age)
            # An operator's gc that finishes between two checkpoints; with no minimum age always, since
            # a gc that may delete any uncommitted upload must not race a commit (its contract).
            if min_age is not None or self.rng.random() < 0.5:
                self._finish_gc(run)
            else:
                self.gc_runs.append(run)
                self.note(f"  stateserver gc --retain {retain} in the background")
        elif step == "rollback_gc":
            self.result.faults[step] += 1
            self._rollback_gc()
        elif step == "rollback":
            committed = self.catalog.committed_ids(self.namespace)
            if len(committed) < 2:
                self.note("  nothing older to roll back to")
                return
            self.result.faults[step] += 1
            target = self.rng.choice(committed[:-1])
            self._recover("rollback", restore=target)
            if self.rng.random() < 0.5 and self.restored_from == target:  # gc before the owners commit
                self._gc_after_rollback(target, retain=self.rng.randint(1, 2))
        elif step == "fresh_start":
            self.result.faults[step] += 1
            self._recover("fresh start", restore=None)
        else:
            raise AssertionError(step)

    def _start_gc(self, retain: int, min_age: str | None) -> Any:
        self.note(f"  stateserver gc --retain {retain}{f' --min-age {min_age}' if min_age else ''}")
        return start_cli("gc", *self.cluster.target.cli_args, "--namespace", self.namespace, "--retain", str(retain),
                         *(["--min-age", min_age] if min_age is not None else []))

    def _finish_gc(self, run: Any) -> None:
        output, _ = run.communicate(timeout=120)
        if run.returncode != 0:
            raise TrialFailure(f"stateserver gc failed with exit code {run.returncode}: {output.strip()[-400:]}")
        self.note(f"  gc done: {output.strip().splitlines()[-1][:200] if output.strip() else ''}")

    def _shared_files(self, checkpoint_id: int) -> set[str]:
        metadata = self.catalog.load(self.namespace, checkpoint_id)
        return {f.object_key for h in metadata.shards for f in h.shared_files}

    def _gc_after_rollback(self, target: int, retain: int) -> None:
        """A finished gc right after a rollback to ``target``: it must keep ``target`` (the restored_from pin)."""
        for run in self.gc_runs:  # a background run planned before the rollback may not know the pin
            self._finish_gc(run)
        self.gc_runs = []
        self.result.faults["gc_after_rollback"] += 1
        self._finish_gc(self._start_gc(retain, self.rng.choice(["0", None])))
        if target not in self.catalog.committed_ids(self.namespace):
            raise TrialFailure(f"stateserver gc --retain {retain} retired checkpoint {target}, which the job's current "
                               "owners restored from and have not committed past (the restored_from pin): "
                               "the files only it names were theirs to reuse")

    def _rollback_gc(self) -> None:
        """Defect 2's window: roll back to a checkpoint whose SSTs the latest no longer names, let gc
        expire it before the rolled-back owners commit, and hold the commit and the gc to account."""
        assert self.job is not None
        for run in self.gc_runs:  # nothing else may touch the store in this window
            self._finish_gc(run)
        self.gc_runs = []
        if self.store_rules:
            self.store_rules = []
            self.cluster.set_faults(self.seed, [])
        for _ in range(CHURN_ROUNDS):
            committed = self.catalog.committed_ids(self.namespace)
            if len(committed) >= 2 and self._shared_files(committed[-2]) - self._shared_files(committed[-1]):
                break
            self._write(self.rng.randint(60, 120))
            self._checkpoint(check_probability=0.0)
        committed = self.catalog.committed_ids(self.namespace)
        if len(committed) < 2:
            self.note("  nothing older to roll back to")
            return
        target = committed[-2]
        only_there = self._shared_files(target) - self._shared_files(committed[-1])
        self.note(f"  checkpoint {target} has {len(only_there)} SSTs that {committed[-1]} does not name")
        self._recover("rollback before gc", restore=target)
        if self.restored_from != target:
            self.note(f"  the rollback restored {self.restored_from}, not {target}")
            return
        self._gc_after_rollback(target, retain=1)
        self._write(self.rng.randint(5, 20))
        try:
            checkpoint_id = self._checkpoint(check_probability=0.0)
        except InvalidArgumentError as exc:
            raise TrialFailure(f"after a rollback to checkpoint {target} and a finished gc, with no fault "
                               f"active, the job's commit was refused: {exc}") from exc
        problems = checks.checkpoint_problems(self.cluster, self.namespace, self.model, checkpoint_id,
                                              self.work_dir, checksums=True)
        if problems:
            raise TrialFailure(f"the first checkpoint after a rollback to {target} and gc: " + "; ".join(problems))

    # -- the job's work -----------------------------------------------------------------------

    def _write(self, count: int) -> None:
        assert self.job is not None
        for _ in range(count):
            op = random_op(self.rng, KEYS)
            send(self.job.handles[self.subtask_of_key[op.key]], op)
            self.model.write(op)

    def _read_check(self) -> None:
        assert self.job is not None
        for _ in range(3):
            state, key = self.rng.choice(list(STATES)), self.rng.choice(KEYS)
            got = read(self.job.handles[self.subtask_of_key[key]], state, key)
            want = self.model.live.get(state, {}).get(key)
            if got != want:
                raise TrialFailure(f"the job reads {state}[{key}] = {got!r}; it wrote {want!r} "
                                   f"(epoch {self.job.epoch}, after: {self.result.trace[-6:]})")

    def _read_all_check(self, why: str) -> None:
        """Every key of every state, read through the job's writers, against the model."""
        assert self.job is not None
        wrong = []
        for index, handles in enumerate(self.job.handles):
            keys = [key for key in KEYS if self.subtask_of_key[key] == index]
            for state, (kind, _operator) in STATES.items():
                if kind in ("value", "aggregating"):
                    got = dict(zip(keys, handles[state].get_many(keys)))
                else:
                    got = {key: read(handles, state, key) for key in keys}
                for key in keys:
                    want = self.model.live.get(state, {}).get(key)
                    if got[key] != want:
                        wrong.append(f"{state}[{key}] = {got[key]!r}, written {want!r}")
        if wrong:
            raise TrialFailure(f"{why}, the job reads other state than it wrote: {'; '.join(wrong[:6])}"
                               f"{f' (and {len(wrong) - 6} more)' if len(wrong) > 6 else ''}")

    def _checkpoint(self, kill_phase: str | None = None, victim: str | None = None, power: bool = False,
                    check_probability: float = 0.25) -> int:
        job = self.job
        assert job is not None
        self.checkpoints_taken += 1
        checkpoint_id = first_checkpoint_id(job.epoch) + self.checkpoints_taken
        self.note(f"  checkpoint {checkpoint_id} at epoch {job.epoch}")
        try:
            with self._killing(victim if kill_phase == "sync" else None, power=power):
                for writer in job.writers:
                    writer.snapshot(checkpoint_id)
            self.model.snapshot_taken(checkpoint_id)
            with self._killing(victim if kill_phase == "upload" else None, delay=(0.0, 0.15), power=power):
                handles = [h for writer in job.writers for h in writer.await_snapshot(checkpoint_id, timeout=JOB_TIMEOUT_S)]
            with self._killing(victim if kill_phase == "commit" else None, delay=(0.0, 0.01), power=power):
                job.client.commit_checkpoint(self.namespace, checkpoint_id, handles, writers=job.writers)
        except BaseException:
            for writer in job.writers:
                with contextlib.suppress(StateServerError):
                    writer.notify_checkpoint_aborted(checkpoint_id)
            raise
        self.model.committed.add(checkpoint_id)
        if kill_phase == "after_commit" and victim is not None:
            self._kill_now(victim, power)
            self.note(f"  killed {victim}{' (power loss)' if power else ''}; restarting it")
            self.cluster.restart_dead()
            self._check_commits_kept(f"after the {'power loss' if power else 'kill'} of {victim}")
        for writer in job.writers:
            writer.notify_checkpoint_complete(checkpoint_id)
        if self.rng.random() < check_probability:  # check it now, before retention retires it
            problems = checks.checkpoint_problems(self.cluster, self.namespace, self.model, checkpoint_id,
                                                  self.work_dir, checksums=False)
            if problems:
                raise TrialFailure("; ".join(problems))
        return checkpoint_id

    def _check_commits_kept(self, why: str) -> None:
        """A commit the job was told of stays committed, or a later one is (retention keeps the latest)."""
        if not self.model.committed:
            return
        acknowledged = max(self.model.committed)
        committed = self.catalog.committed_ids(self.namespace)
        if not committed or committed[-1] < acknowledged:
            raise TrialFailure(f"{why}, the latest committed checkpoint is {committed[-1] if committed else 'none'}; "
                               f"the commit of checkpoint {acknowledged} was acknowledged (a commit lost)")

    # -- faults ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _killing(self, victim: str | None, delay: tuple[float, float] = (0.0, 0.02), power: bool = False
                 ) -> Iterator[None]:
        """SIGKILL ``victim`` (or cut its power) from another thread, a seeded moment into the block;
        restart it after."""
        if victim is None:
            yield
            return
        timer = threading.Timer(self.rng.uniform(*delay), self._kill_now, [victim, power])
        timer.start()
        try:
            yield
        finally:
            timer.join()
            self.note(f"  killed {victim}{' (power loss)' if power else ''}; restarting it")
            self.cluster.restart_dead()
            if power:
                self._check_commits_kept(f"after the power loss of {victim}")

    def _kill_now(self, victim: str, power: bool) -> None:
        if not power:
            self.cluster.kill(victim)
            return
        loss = self.cluster.power_loss(victim)
        if loss is not None:
            self.result.faults["power:objects_lost"] += len(loss.truncated) + len(loss.removed)
            self.note(f"  power loss of {victim}: {loss.summary()}")

    def _shard_nodes(self) -> list[str]:
        assert self.job is not None
        return sorted({s.connection.address for writer in self.job.writers for s in writer.sessions})

    def _kill(self, phase: str, power: bool = False) -> None:
        assert self.job is not None
        nodes = self._shard_nodes()
        victim = self.rng.choice(nodes)
        if phase in ("commit", "after_commit") and self.rng.random() < 0.5:  # the node that commits
            victim = min(a for a in self.cluster.addresses if a not in self.job.client.unavailable)
        self.note(f"  victim {victim}")
        if phase == "writes":
            with self._killing(victim, delay=(0.0, 0.03)):
                self._write(self.rng.randint(100, 300))
                for writer in self.job.writers:
                    writer.flush()
        elif phase == "idle":
            self._write(self.rng.randint(10, 60))  # writes no checkpoint holds yet: what a crash loses
            for writer in self.job.writers:
                writer.flush()
            self.cluster.kill(victim)
            self.cluster.restart_dead()
            if self.rng.random() < 0.6:
                self._resume()
        elif phase == "upload":
            # Slow uploads, so that the kill lands while they run.
            self.cluster.set_faults(self.seed, [*self.store_rules, {"ops": ["put_file"], "kind": "slow",
                                                                     "probability": 1.0, "delay_ms": 60}])
            try:
                self._checkpoint("upload", victim, power=power)
            finally:
                self.cluster.set_faults(self.seed, self.store_rules)
        else:
            self._checkpoint(phase, victim, power=power)

    def _store_faults(self, mode: str) -> None:
        if mode == "off":
            self.store_rules = []
            self.cluster.set_faults(self.seed, [])
            return
        ops = self.rng.sample(["put_file", "put", "put_if_absent", "get", "get_to_file", "head", "list", "delete"],
                              self.rng.randint(1, 4))
        if mode == "errors":
            rule: dict[str, object] = {"ops": ops, "kind": "error", "probability": 0.3}
        elif mode == "outage":
            rule = {"ops": ops, "kind": "error", "probability": 1.0, "max_count": self.rng.randint(5, 15)}
        elif mode == "timeouts":
            rule = {"ops": ops, "kind": "timeout", "probability": 0.25, "delay_ms": self.rng.randint(50, 300)}
        elif mode == "lost_answers":
            rule = {"ops": ["put_file", "put", "put_if_absent", "delete"], "kind": "lost_answer", "probability": 0.3}
        else:
            rule = {"ops": ops, "kind": "slow", "probability": 0.5, "delay_ms": self.rng.randint(20, 200)}
        rule["key_contains"] = self.namespace
        self.store_rules = [rule]
        self.note(f"  store faults {rule}")
        self.cluster.set_faults(self.seed, self.store_rules)

    def _store_events(self) -> dict[str, int]:
        after = self.cluster.fault_events()
        return {k: n - self._events_before.get(k, 0) for k, n in after.items() if n > self._events_before.get(k, 0)}

    def _competitor(self, kind: str) -> None:
        assert self.job is not None
        if kind == "older":
            # The last zombie may be a newer competitor that took the shards over: not fenced.
            older = [z for z in self.zombies if z.epoch < self.job.epoch]
            if not older:
                self._recover("make an older writer")
                assert self.job is not None
                older = [z for z in self.zombies if z.epoch < self.job.epoch]
            self._fenced_work(older[-1])
            return
        epoch = self.job.epoch if kind == "equal" else self._next_epoch()
        client = StateClient(self.cluster.addresses, timeout=COMPETITOR_TIMEOUT_S)
        try:
            writers = [client.open_writer(self.namespace, key_groups=r, epoch=epoch,
                                          restore=None if kind == "equal" else "latest") for r in self.ranges]
        except StateServerError as exc:
            self.note(f"  the {kind} competitor cannot open: {type(exc).__name__}")
            client.close()
            return
        competitor = Attempt(client, epoch, writers, [state_handles(w) for w in writers], f"{kind}{epoch}")
        self.note(f"  a competitor opened at epoch {epoch} ({kind})")
        self.zombies.append(competitor)
        self._fenced_writes(competitor)

    def _fenced_writes(self, attempt: Attempt) -> bool:
        """Writes with the fenced marker; True if the nodes took them."""
        try:
            for _ in range(self.rng.randint(1, 6)):
                op = fenced_op(self.rng, KEYS, attempt.label)
                send(attempt.handles[self.subtask_of_key[op.key]], op)
            for writer in attempt.writers:
                writer.flush()
            return True
        except StateServerError:
            return False

    def _fenced_work(self, attempt: Attempt) -> None:
        """A writer that should be fenced writes, snapshots and tries to commit: the commit must fail."""
        if self._fenced_writes(attempt):
            self.note(f"  writes of {attempt.label} were taken by a node")
        checkpoint_id = first_checkpoint_id(attempt.epoch) + 1000 + self.rng.randint(0, 999)
        try:
            for writer in attempt.writers:
                writer.snapshot(checkpoint_id)
            handles = [h for w in attempt.writers for h in w.await_snapshot(checkpoint_id, timeout=COMPETITOR_TIMEOUT_S)]
            attempt.client.commit_checkpoint(self.namespace, checkpoint_id, handles, writers=attempt.writers)
        except StateServerError as exc:
            self.note(f"  {attempt.label} cannot commit: {type(exc).__name__}")
            return
        raise TrialFailure(f"the fenced writer {attempt.label} (epoch {attempt.epoch}) committed checkpoint "
                           f"{checkpoint_id} while the job is at epoch {self.job.epoch if self.job else '?'}")

    def _zombie_sweep(self) -> None:
        for zombie in self.zombies[-3:]:
            if self.job is not None and zombie.epoch >= self.job.epoch:
                continue  # an equal-epoch impostor: judged by what the checkpoints hold
            self._fenced_work(zombie)

    # -- starting and recovering ----------------------------------------------------------------

    def _fresh(self, client: StateClient, epoch: int) -> list[Writer]:
        writers = fresh_start(client, self.namespace, self.ranges, epoch)
        self.model.reset_to(None)
        return writers

    def _start(self, client: StateClient, label: str, open_writers: Any) -> None:
        epoch = self._next_epoch()
        writers = open_writers(client, epoch)
        self.job = Attempt(client, epoch, writers, [state_handles(w) for w in writers], f"job{epoch}")
        self.note(f"  job at epoch {epoch} ({label}) on {self._shard_nodes()}")

    def _resume(self) -> None:
        """Reopen every shard at a new epoch without a restore: the job wrote exactly what the model holds."""
        assert self.job is not None
        self.result.faults["resume"] += 1
        self.zombies.append(self.job)
        client = StateClient(self.cluster.addresses, timeout=JOB_TIMEOUT_S)
        self._start(client, "resume without restore", lambda c, e: [
            c.open_writer(self.namespace, key_groups=r, epoch=e) for r in self.ranges])
        self._read_all_check("after its shards were resumed without a restore")

    def _recover(self, reason: str, restore: int | str | None = "latest") -> None:
        """A stream engine's restart: new epoch, every shard from a committed checkpoint (or empty)."""
        self.result.faults["recovery"] += 1
        if self.job is not None:
            self.zombies.append(self.job)
            self.job = None
        last: Exception | None = None
        for attempt in range(RECOVERY_ATTEMPTS):
            if attempt >= 2 and self.store_rules:
                self.note("  store faults off so that the job can come back")
                self.store_rules = []
                self.cluster.set_faults(self.seed, [])
            self.cluster.restart_dead()
            client = StateClient(self.cluster.addresses, timeout=JOB_TIMEOUT_S)
            try:
                self.restored_from = None
                if restore is None:
                    self._start(client, reason, self._fresh)
                    return
                committed = self.catalog.committed_ids(self.namespace)
                if not committed:
                    self._start(client, f"{reason}: nothing committed, fresh", self._fresh)
                    return
                source = committed[-1] if restore == "latest" else restore
                assert isinstance(source, int)
                if source not in self.model.checkpoints:
                    raise TrialFailure(f"checkpoint {source} is committed, but the job never took it")
                self._start(client, f"{reason}: restore {source}", lambda c, e: [
                    c.open_writer(self.namespace, key_groups=r, epoch=e, restore=restore) for r in self.ranges])
                self.model.reset_to(source)
                self.restored_from = source
                return
            except StateServerError as exc:
                last = exc
                self.note(f"  recovery attempt {attempt + 1} failed: {type(exc).__name__}: {str(exc)[:160]}")
                restore = "latest" if restore is not None else None
                time.sleep(0.2)
        raise TrialFailure(f"the job could not recover in {RECOVERY_ATTEMPTS} attempts: {last}")

    # -- the end ----------------------------------------------------------------------------------

    def _close(self, attempt: Attempt) -> None:
        for writer in attempt.writers:
            with contextlib.suppress(StateServerError):
                writer.close()

    def _stop_everything(self) -> None:
        self.store_rules = []
        self.cluster.clear_faults()
        for attempt in [*self.zombies, *([self.job] if self.job else [])]:
            attempt.client.close()
        for run in self.gc_runs:
            output, _ = run.communicate(timeout=120)
            if run.returncode != 0:
                self.result.failures.append(f"stateserver gc (run while the job ran) failed with exit code "
                                            f"{run.returncode}: {output.strip()[-400:]}")
        self.gc_runs = []
        self.cluster.restart_dead()

    def _final_checks(self) -> None:
        self._wait_for_quiet_store()
        try:
            self._check_commits_kept("at the end")
        except TrialFailure as exc:
            self.result.failures.append(str(exc))
        problems, checked = checks.committed_checkpoint_problems(self.cluster, self.namespace, self.model,
                                                                 self.work_dir)
        self.result.checkpoints_checked = checked
        self.result.failures += problems
        if not problems:
            problems, owners = checks.store_problems_after_gc(self.cluster, self.namespace)
            self.result.failures += problems
            self.result.owner_records_after_gc = owners

    def _wait_for_quiet_store(self, timeout: float = 10.0) -> None:
        """The nodes' retention may still be collecting after the last commit: wait until it is done."""
        deadline = time.monotonic() + timeout
        previous = None
        while time.monotonic() < deadline:
            listing = sorted(meta.key for meta in self.cluster.store.list(self.namespace))
            if listing == previous:
                return
            previous = listing
            time.sleep(0.1)


def run_trial(seed: int, cluster: FaultCluster, work_dir: Path) -> TrialResult:
    work_dir.mkdir(parents=True, exist_ok=True)
    return Trial(seed, cluster, work_dir).run()
