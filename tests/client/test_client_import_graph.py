"""client/ has no import cycles: its modules form layers (core without I/O, then the two faces).

Fails on the code before issue 13 point 5: ``_states`` and ``_writer`` imported each other (the
first under TYPE_CHECKING, which counts here: a cycle for the reader and the type checker alike),
and so did ``aio/_states`` and ``aio/_writer``.
"""
from __future__ import annotations

import ast
import pathlib

CLIENT = pathlib.Path(__file__).resolve().parents[2] / "client"
ROOT = "stateserver.client"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(CLIENT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([ROOT, *parts])


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The client modules ``path`` imports, anywhere in it (module level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from package import module`` imports the module (and runs the package's __init__,
            # which is no edge of its own: it only re-exports)
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in CLIENT.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_client_modules_import_each_other_without_a_cycle() -> None:
    graph = _import_graph()
    assert len(graph) > 20  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_core_does_no_io() -> None:
    """The sans-IO core imports neither gRPC nor asyncio nor a face; only the faces do I/O."""
    core = ["_buffer", "_overlays", "_shard_core", "_handles", "_plans", "_writer_core", "_client_core", "_routing",
            "_failure", "_node_limits", "_positions"]
    for name in core:
        tree = ast.parse((CLIENT / f"{name}.py").read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        io = {m for m in imported if m.split(".")[0] in {"grpc", "asyncio", "concurrent", "socket"}
              or m in {f"{ROOT}._connection", f"{ROOT}._channel"} or m.startswith(f"{ROOT}.aio")}
        assert not io, f"{name} imports {sorted(io)}"
