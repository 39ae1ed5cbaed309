"""Fixtures for the asyncio client against a real node process.

    node         module: one node process on a free loopback port
    namespace    a fresh namespace (128 key groups), created through a sync client
    slow_proxy   a factory of loopback TCP proxies to the node that delay every chunk of bytes
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest

from stateserver.client import StateClient
from support.node import NodeProcess, run_node, unique_namespace

MAX_KEY_GROUPS = 128


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with run_node(tmp_path_factory.mktemp("aio-node") / "data") as running:
        yield running


@pytest.fixture
def namespace(request: pytest.FixtureRequest, node: NodeProcess) -> str:
    name = unique_namespace(request.node.name)
    with StateClient(node.address) as client:
        client.create_namespace(name, max_key_groups=MAX_KEY_GROUPS)
    return name


class DelayProxy:
    """Forwards TCP connections to ``target``, delivering every chunk ``delay`` seconds after it
    arrived (in order, both ways): a node on a slow network, as the client sees it."""

    def __init__(self, target: str, delay: float) -> None:
        self.target_host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.delay = delay
        self._sockets: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop).result(10)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._sockets += [writer, upstream_writer]
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((self.loop.time() + self.delay, data))
        finally:
            chunks.put_nowait((self.loop.time() + self.delay, b""))
            with contextlib.suppress(Exception):
                await delivering

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for socket in self._sockets:  # the node sees the connections end, not hang
                socket.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def slow_proxy(node: NodeProcess) -> Iterator[Callable[[float], DelayProxy]]:
    proxies: list[DelayProxy] = []

    def start(delay: float) -> DelayProxy:
        proxies.append(DelayProxy(node.address, delay))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()
