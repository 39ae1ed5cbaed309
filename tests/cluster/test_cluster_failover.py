"""Acceptance of the cluster issue: failover after SIGKILL, and fencing of a node that comes back."""
from __future__ import annotations

import random

import grpc
import pytest

from stateserver.client import INT64, FencedError, StateClient, StateServerError, ranges_for_parallelism
from stateserver.protocol import placement
from stateserver.store import open_store
from stateserver.protocol.v1 import state_pb2 as pb
from stateserver.protocol.v1 import state_pb2_grpc
from support.cluster import Cluster, expected_counts

NAMESPACE = "counts"
MAX_KEY_GROUPS = 128
SHARDS = 8
EVENTS = 12_000
CHECKPOINT_EVERY = 1_500
KILL_AFTER = 7_000  # between two checkpoints, with writes of the next one in flight
RESTART_ATTEMPTS = 5

pytestmark = pytest.mark.timeout(240)


def _events() -> list[str]:
    generator = random.Random(7)
    return [f"key-{generator.randrange(400)}" for _ in range(EVENTS)]


class CountingJob:
    """A keyed count over 8 shards, checkpointing every CHECKPOINT_EVERY events, as an engine
    would run it: on a failure it restarts from the latest committed checkpoint with a higher
    epoch and replays its source from that checkpoint's offset."""

    def __init__(self, state: StateClient, events: list[str]) -> None:
        self.state = state
        self.events = events
        self.ranges = ranges_for_parallelism(MAX_KEY_GROUPS, SHARDS)
        self.epoch = 0
        self.offsets: dict[int, int] = {}  # committed checkpoint -> source offset
        self.next_checkpoint = 1
        self.restarts = 0

    def start(self, restore: str | None) -> int:
        self.epoch += 1
        self.writer = self.state.open_writer(NAMESPACE, key_groups=self.ranges, epoch=self.epoch, restore=restore)
        self.counts = self.writer.aggregating_state("count", merge_operator="sum_int64")
        return self.offsets[max(self.offsets)] if restore else 0

    def checkpoint(self, offset: int) -> None:
        checkpoint_id = self.next_checkpoint
        self.next_checkpoint += 1
        self.writer.snapshot(checkpoint_id)
        handles = self.writer.await_snapshot(checkpoint_id)
        self.state.commit_checkpoint(NAMESPACE, checkpoint_id, handles, writers=[self.writer])
        self.offsets[checkpoint_id] = offset
        self.writer.notify_checkpoint_complete(checkpoint_id)

    def run(self, on_offset: object = None) -> None:
        offset = self.start(restore=None)
        self.checkpoint(0)  # checkpoint 1: the empty state at offset 0
        while offset < len(self.events):
            try:
                for position in range(offset, len(self.events)):
                    if callable(on_offset):
                        on_offset(position)
                    self.counts.merge(self.events[position], 1)
                    if (position + 1) % CHECKPOINT_EVERY == 0:
                        self.checkpoint(position + 1)
                offset = len(self.events)
                self.writer.flush()
            except StateServerError:
                self.restarts += 1
                offset = self.restart()

    def restart(self) -> int:
        """``start(restore="latest")`` until it works, as an engine retries a failed recovery: a node
        lost may be several members (its workers), and the client finds them down one at a time."""
        for _ in range(RESTART_ATTEMPTS - 1):
            try:
                return self.start(restore="latest")
            except StateServerError:
                self.restarts += 1
        return self.start(restore="latest")

    def read_counts(self, keys: list[str]) -> dict[str, int]:
        return {key: value for key, value in zip(keys, self.counts.get_many(keys)) if value is not None}


def _nodes_hosting(job: CountingJob) -> set[str]:
    """The members (nodes, or with several workers per node, workers) that hold the job's shards."""
    return {session.connection.address for session in job.writer.sessions}


def test_a_killed_node_fails_over_and_the_job_ends_with_exact_counts(cluster: Cluster) -> None:
    events = _events()
    with StateClient(cluster.addresses) as state:
        state.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
        job = CountingJob(state, events)
        victim: list[str] = []

        def kill_once(position: int) -> None:
            if position == KILL_AFTER and not victim:
                victim.append(cluster.node_of(sorted(_nodes_hosting(job))[0]))
                cluster.kill(victim[0])

        job.run(on_offset=kill_once)
        assert victim and job.restarts >= 1
        assert not _nodes_hosting(job) & set(cluster.workers_of(victim[0])), \
            "the lost node's shards moved to the next nodes"
        assert job.read_counts(sorted(set(events))) == expected_counts(events)


def test_a_restarted_stale_node_can_neither_take_writes_nor_commit(cluster: Cluster) -> None:
    events = _events()[:3000]
    with StateClient(cluster.addresses) as state:
        state.create_namespace(NAMESPACE, MAX_KEY_GROUPS)
        job = CountingJob(state, events)
        job.run()
        stale_writer = job.writer
        stale_epoch = job.epoch
        victim = sorted(_nodes_hosting(job))[0]
        stale_session = next(s for s in stale_writer.sessions if s.connection.address == victim)
        # A snapshot the stale writer made durable before the crash but never committed.
        stale_writer.snapshot(100)
        stale_handles = stale_writer.await_snapshot(100)
        cluster.kill(cluster.node_of(victim))
        for member in cluster.workers_of(cluster.node_of(victim)):  # the operator marks the node down
            state.mark_unavailable(member)
        offset = job.start(restore="latest")  # failover: a new epoch, shards on the next nodes
        assert offset == len(events) and job.epoch == stale_epoch + 1
        assert not _nodes_hosting(job) & set(cluster.workers_of(cluster.node_of(victim)))
        keys = sorted(set(events))
        before = job.read_counts(keys)
        assert before == expected_counts(events)

        cluster.start(cluster.node_of(victim))  # back on its old data directory, its shards live elsewhere
        store = open_store(cluster.snapshot_url)
        objects_before = {m.key: m.size for m in store.list(NAMESPACE)}

        ref = stale_session.ref
        stub_channel = grpc.insecure_channel(victim)
        try:
            stub = state_pb2_grpc.StateServiceStub(stub_channel)
            with pytest.raises(grpc.RpcError) as opened:
                stub.OpenShard(pb.OpenShardRequest(shard=ref), timeout=10)
            assert opened.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "fenced" in opened.value.details()
            with pytest.raises(grpc.RpcError) as written:
                stub.WriteBatch(pb.WriteBatchRequest(shard=ref, states=["count"], ops=b"\x03", keys=b"k",
                                                     key_lengths=[1], values=INT64.dumps(1), value_lengths=[8]),
                                timeout=10)
            assert written.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            stub_channel.close()

        with StateClient([victim]) as stale_client:
            with pytest.raises(FencedError):
                stale_client.commit_checkpoint(NAMESPACE, 100, stale_handles, writers=[stale_writer])
        objects_after = {m.key: m.size for m in store.list(NAMESPACE)}
        assert objects_after == objects_before, "the stale node wrote or overwrote nothing"
        assert 100 not in [int(k.split("/")[2]) for k in objects_after if k.endswith("metadata.pb")]
        assert job.read_counts(keys) == before
        assert placement.owner(str(stale_session.shard_id), cluster.members) == victim
