"""A loopback TCP port in front of a real server that a test opens and closes: the server as the
network lets a node reach it, or not.

While closed, the port is bound but not listening, so a connection to it is refused at once, as
to a store whose process is down; the port stays ours, so no other process can take it meanwhile.
``open()`` starts listening and forwards every connection to the target, byte for byte.
``close()`` (also at the end of the ``with`` block) stops forwarding and drops every connection.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class TcpGate:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.accepted = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        self._listener.listen(64)
        accepting = threading.Thread(target=self._accept, name="tcp-gate-accept", daemon=True)
        accepting.start()
        self._threads.append(accepting)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
        self._listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        for thread in self._threads:
            thread.join(10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self.accepted += 1
                self._connections += [client, upstream]
                pumps = [threading.Thread(target=_pump, args=(a, b), name="tcp-gate-pump", daemon=True)
                         for a, b in ((client, upstream), (upstream, client))]
                self._threads += pumps
            for pump in pumps:
                pump.start()


def _pump(source: socket.socket, destination: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            destination.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        destination.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tcp_gate(target_host: str, target_port: int) -> Iterator[TcpGate]:
    """A closed gate to ``target_host:target_port`` for the ``with`` block."""
    gate = TcpGate(target_host, target_port)
    try:
        yield gate
    finally:
        gate.close()
