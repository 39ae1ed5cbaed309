"""The packages import only downwards, every import of our own code sits at module top, and the
shared contract (``stateserver.protocol``) and the client import no storage library.

Layers, low to high: protocol < store < shard < ownership < snapshot < restore < node < supervisor < cli.
``config`` (settings) sits beside them: it may import protocol; only node, supervisor and cli import it.
``compaction`` may import protocol, store, shard, snapshot and restore; only cli imports it. The
client (``stateserver.client``) imports the contract and nothing else of the node.

A function-level import of our own modules is how a cycle gets dodged instead of removed, so it
fails here; imports for annotations under ``if TYPE_CHECKING:`` are fine.

Checked on the code before the layering fix (commit 7861975): it failed on
``stateserver.node.state_service`` importing ``stateserver.node.checkpointing`` inside a function
(``_restore_target``), and ``stateserver.node.checkpointing`` importing ``stateserver.restore``
inside ``restore_target``.
"""
from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> source folder (pyproject's package-dir maps client/ and compaction/ under stateserver)
SOURCES = {"stateserver": ROOT / "stateserver", "stateserver.client": ROOT / "client",
           "stateserver.compaction": ROOT / "compaction"}

LAYERS = ("protocol", "store", "shard", "ownership", "snapshot", "restore", "node", "supervisor", "cli")
MAY_IMPORT: dict[str, set[str]] = {layer: set(LAYERS[:rank]) for rank, layer in enumerate(LAYERS)}
MAY_IMPORT["node"] |= {"config"}
MAY_IMPORT["supervisor"] |= {"config"}
MAY_IMPORT["cli"] |= {"config", "compaction"}
MAY_IMPORT["config"] = {"protocol"}
MAY_IMPORT["compaction"] = {"protocol", "store", "shard", "snapshot", "restore"}
MAY_IMPORT["client"] = {"protocol"}

# What only the node needs: the contract and the client must install and import without it.
NODE_LIBRARIES = {"rocksdict", "obstore", "lz4", "prometheus_client"}
WITHOUT_NODE_LIBRARIES = {"protocol", "client"}


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (for ``from package import name``, package.name)
    line: int
    in_function: bool  # inside a function or class body
    type_only: bool  # under ``if TYPE_CHECKING:``

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line}"


def source_modules() -> Iterator[tuple[str, Path]]:
    for root_name, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            if ".venv" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([root_name, *parts]), path


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(module: str, path: Path) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(module, alias.name, node.lineno, in_function, type_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                # ``from stateserver import client`` imports stateserver.client: name the submodule
                target = f"{base}.{alias.name}" if base == "stateserver" else base
                found.append(Import(module, target, node.lineno, in_function, type_only))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, in_function, True)
            for child in node.orelse:
                visit(child, in_function, type_only)
        else:
            nested = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            for child in ast.iter_child_nodes(node):
                visit(child, in_function or nested, type_only)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)
    return found


def package_of(module: str) -> str | None:
    """The layer a module of ours belongs to (``protocol``, ``client``...), None for the root."""
    parts = module.split(".")
    return parts[1] if parts[0] == "stateserver" and len(parts) > 1 else None


def all_imports() -> list[Import]:
    return [found for module, path in source_modules() for found in imports_of(module, path)]


def upward_imports(imports: list[Import]) -> list[str]:
    problems = []
    for found in imports:
        if not found.target.startswith("stateserver"):
            continue
        mine, theirs = package_of(found.module), package_of(found.target)
        if mine is None or theirs is None or mine == theirs:
            continue
        if theirs not in MAY_IMPORT.get(mine, set()):
            problems.append(f"{found.where} ({mine}) imports {found.target} ({theirs})")
    return problems


def function_level_imports(imports: list[Import]) -> list[str]:
    return [f"{found.where} imports {found.target} inside a function or class"
            for found in imports
            if found.target.startswith("stateserver") and found.in_function and not found.type_only]


def node_library_imports(imports: list[Import]) -> list[str]:
    return [f"{found.where} imports {found.target}" for found in imports
            if package_of(found.module) in WITHOUT_NODE_LIBRARIES
            and found.target.split(".")[0] in NODE_LIBRARIES]


def test_the_walk_sees_every_package() -> None:
    packages = {package_of(module) for module, _ in source_modules()}
    assert set(MAY_IMPORT) <= packages, "a layer named here has no modules: rename it here too"
    assert packages - {None} <= set(MAY_IMPORT), "a package has no place in the layers: give it one here"


def test_no_package_imports_a_higher_one() -> None:
    assert upward_imports(all_imports()) == []


def test_our_modules_are_imported_at_module_top() -> None:
    assert function_level_imports(all_imports()) == []


def test_the_contract_and_the_client_import_no_node_library() -> None:
    assert node_library_imports(all_imports()) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """Each rule fails on a module that breaks it (so an empty list above means something)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\n"
                   "import rocksdict\n"
                   "from stateserver.node import registry\n"
                   "if TYPE_CHECKING:\n"
                   "    from stateserver.cli import main\n"
                   "def later():\n"
                   "    from stateserver.protocol import errors\n")
    imports = imports_of("stateserver.protocol.bad", bad)
    assert upward_imports(imports) == ["stateserver.protocol.bad:3 (protocol) imports stateserver.node (node)",
                                       "stateserver.protocol.bad:5 (protocol) imports stateserver.cli (cli)"]
    assert function_level_imports(imports) == [
        "stateserver.protocol.bad:7 imports stateserver.protocol inside a function or class"]
    assert node_library_imports(imports) == ["stateserver.protocol.bad:2 imports rocksdict"]
