"""``stateserver health``: exit 0 for a serving node, 1 with a one-line reason otherwise."""
from __future__ import annotations

from pathlib import Path

from lifecycle_node import free_port, run_cli, served


def test_health_of_a_serving_node_and_of_a_closed_port(tmp_path: Path) -> None:
    with served(tmp_path / "data") as node:
        serving = run_cli("health", "--address", node.address, "--timeout", "5")
        service = run_cli("health", "--address", node.address, "--service", "stateserver.v1.StateService")
        unknown = run_cli("health", "--address", node.address, "--service", "no.such.Service")
    assert (serving.returncode, serving.stdout, serving.stderr) == (0, f"{node.address}: SERVING\n", "")
    assert service.returncode == 0
    assert unknown.returncode == 1 and "does not know this service" in unknown.stderr

    closed = f"127.0.0.1:{free_port()}"
    result = run_cli("health", "--address", closed, "--timeout", "2")
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{closed}: unreachable (UNAVAILABLE") and "Traceback" not in result.stderr


def test_health_rejects_a_malformed_address() -> None:
    result = run_cli("health", "--address", "no-port")
    assert result.returncode == 2 and "must be HOST:PORT" in result.stderr and "Traceback" not in result.stderr
