"""Questions any node can answer go to the next node when the first one is gone."""
from __future__ import annotations

from pathlib import Path

from stateserver.client import StateClient
from support.cluster import run_cluster

NAMESPACE = "any-node"


def test_max_key_groups_is_answered_by_a_live_node_when_the_first_node_is_dead(tmp_path: Path) -> None:
    """Failed before the fix: ``max_key_groups`` (and so ``open_writer``) asked only the first node
    of the list, and raised UnavailableError while that node was dead but not yet marked down, once
    for each of its workers."""
    with run_cluster(tmp_path / "nodes", (tmp_path / "store").as_uri(), size=2) as cluster, \
            StateClient(cluster.addresses) as state:
        state.create_namespace(NAMESPACE, max_key_groups=64)
        first = sorted(state.nodes)[0]
        cluster.kill(cluster.node_of(first))
        assert state.max_key_groups(NAMESPACE) == 64
