"""NodeMetrics, the request interceptor and the shard collector, in this process."""
from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stateserver.node.interceptors import InFlightRequests, RequestMetricsInterceptor
from stateserver.protocol.limits import Limits
from stateserver.node.metrics import NodeMetrics
from stateserver.node.metrics_shards import ShardCollector
from stateserver.node.registry import ShardRegistry
from stateserver.shard.rocks import RocksResources, RocksTuning
from stateserver.protocol.states import StateDescriptor, StateKind

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: NodeMetrics) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(metrics.exposition()) for s in family.samples}


def value(metrics: NodeMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_nodes_in_one_process_keep_their_own_figures() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.record_write_batch(ops=10, payload_bytes=300)
    first.record_read(keys=4, payload_bytes=40)
    assert value(first, "stateserver_keys_written_total") == 10
    assert value(first, "stateserver_bytes_written_total") == 300
    assert value(first, "stateserver_keys_read_total") == 4
    assert value(first, "stateserver_bytes_read_total") == 40
    assert value(first, "stateserver_batch_ops_sum") == 10
    assert value(second, "stateserver_keys_written_total") == 0


def test_checkpoint_and_restore_figures() -> None:
    metrics = NodeMetrics()
    metrics.observe_checkpoint_sync(0.02)
    metrics.observe_checkpoint_async(3.0, uploaded_bytes=1000, reused_bytes=5000)
    metrics.observe_checkpoint_async(1.0, uploaded_bytes=10, reused_bytes=0)
    metrics.observe_restore(12.5, restored_bytes=1 << 20)
    assert value(metrics, "stateserver_checkpoint_sync_seconds_count") == 1
    assert value(metrics, "stateserver_checkpoint_async_seconds_sum") == 4.0
    assert value(metrics, "stateserver_checkpoint_uploaded_bytes_total") == 1010
    assert value(metrics, "stateserver_checkpoint_reused_bytes_total") == 5000
    assert value(metrics, "stateserver_restore_seconds_count") == 1
    assert value(metrics, "stateserver_restore_bytes_total") == 1 << 20


# -- the interceptor, on a tiny service -------------------------------------------------------

def _ok(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _not_found(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort raises")


def _crash(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("a bug")


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield from (b"a", b"b")


@pytest.fixture
def tiny_server() -> Iterator[tuple[grpc.Channel, NodeMetrics, InFlightRequests]]:
    metrics, in_flight = NodeMetrics(), InFlightRequests()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4),
                         interceptors=[RequestMetricsInterceptor(metrics), in_flight])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Tiny", {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok),
        "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
        "Crash": grpc.unary_unary_rpc_method_handler(_crash),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, metrics, in_flight
    channel.close()
    server.stop(None)


def test_requests_are_counted_by_method_and_status(tiny_server: tuple[grpc.Channel, NodeMetrics, InFlightRequests]) -> None:
    channel, metrics, in_flight = tiny_server
    for _ in range(3):
        assert channel.unary_unary("/test.Tiny/Ok")(b"x", timeout=5) == b"x"
    for method, code in (("NotFound", grpc.StatusCode.NOT_FOUND), ("Crash", grpc.StatusCode.UNKNOWN)):
        with pytest.raises(grpc.RpcError) as failure:
            channel.unary_unary(f"/test.Tiny/{method}")(b"x", timeout=5)
        assert failure.value.code() is code
    assert list(channel.unary_stream("/test.Tiny/Stream")(b"x", timeout=5)) == [b"a", b"b"]

    assert value(metrics, "stateserver_requests_total", method="Ok", code="OK") == 3
    assert value(metrics, "stateserver_requests_total", method="NotFound", code="NOT_FOUND") == 1
    assert value(metrics, "stateserver_requests_total", method="Crash", code="UNKNOWN") == 1
    assert value(metrics, "stateserver_requests_total", method="Stream", code="OK") == 1
    assert value(metrics, "stateserver_request_seconds_count", method="Ok") == 3
    assert in_flight.wait_idle(5) == 0


# -- the shard collector, on a real shard -----------------------------------------------------

def test_shard_collector_reads_rocksdb_figures_and_skips_closed_shards(tmp_path: Path) -> None:
    registry = ShardRegistry(tmp_path, RocksResources(RocksTuning()), Limits())
    metrics = NodeMetrics()
    metrics.add_collector(ShardCollector(registry.open_shards))
    registry.create_namespace("ns", 8)
    shard = registry.open_shard("ns", 0, 3, 1, [StateDescriptor(name="v", kind=StateKind.VALUE)])
    registry.open_shard("ns", 4, 7, 1, [])
    table = shard.states["v"].table
    for i in range(500):
        table[b"key-%d" % i] = b"x" * 100
    labels = {"namespace": "ns", "shard": "0-3"}
    assert value(metrics, "stateserver_shards", namespace="ns") == 2
    assert value(metrics, "stateserver_rocksdb_memtable_bytes", **labels) > 0  # type: ignore[operator]
    assert value(metrics, "stateserver_rocksdb_l0_files", **labels) is not None

    shard.db.flush()
    table.flush()
    for _ in range(2):
        for i in range(500):
            assert table[b"key-%d" % i] == b"x" * 100
    assert value(metrics, "stateserver_rocksdb_l0_files", **labels) >= 1  # type: ignore[operator]
    assert value(metrics, "stateserver_rocksdb_block_cache_hits_total", **labels) > 0  # type: ignore[operator]
    assert value(metrics, "stateserver_shard_disk_bytes", **labels) > 10_000  # type: ignore[operator]
    assert value(metrics, "stateserver_rocksdb_pending_compaction_bytes", **labels) is not None
    del table

    registry.close_shard("ns", 0, 3, 1)
    assert value(metrics, "stateserver_shards", namespace="ns") == 1
    assert value(metrics, "stateserver_rocksdb_memtable_bytes", **labels) is None
    registry.close_all()
    assert value(metrics, "stateserver_shards", namespace="ns") is None
