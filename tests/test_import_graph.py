"""The package's imports point one way: no circle among the imports a module runs when it loads, and each import of
the package inside a function is listed below with its reason (a slow library kept off a start-up path, or a circle
still to undo, named as one), so none silently dodges a circle. The imports are read from the source with ``ast``."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import cosmos_assets
from cosmos_assets.models.names import MODEL_NAMES
from cosmos_assets.models.registry import backends

PACKAGE = Path(cosmos_assets.__file__).parent
CLI = "cosmos_assets.cli"  # each subcommand imports what it needs: `cosmos-assets --help` loads no Dagster or PyAV

# Function-local imports, (importer, imported module) -> why it is inside the function.
START_UP = {
    ("cosmos_assets.defs.resources.hosts", "cosmos_assets.machines.local"): "paramiko, through machines/preflight.py",
    ("cosmos_assets.defs.resources.hosts", "cosmos_assets.machines.ssh_host"): "paramiko; only for an SSH host",
    (
        "cosmos_assets.defs.resources.hosts",
        "cosmos_assets.machines.ssh_host_settings",
    ): "paramiko (host_facts); only for an SSH host",
    ("cosmos_assets.defs.resources.hosts", "cosmos_assets.machines.ssh_target"): "paramiko; only for an SSH host",
    ("cosmos_assets.models.cosmos3", "cosmos_assets.media"): "PyAV; only when a spec is built",
    ("cosmos_assets.models.cosmos3_serve", "cosmos_assets.media"): "PyAV; only when a request is built",
}
# Function-local imports that close a circle: none (each went when its cause moved; a new one is listed here with
# the cause that has to move).
CIRCLES: dict[tuple[str, str], str] = {}
# Function-local imports with neither reason (nothing slow, no circle): none; such an import goes to the top.
MOVABLE: set[tuple[str, str]] = set()
# Type-only imports (``if TYPE_CHECKING:``) never run, but one that closes a circle is still a wrong-way dependency.
TYPE_ONLY_CIRCLES = {
    ("cosmos_assets.runs.record_rules", "cosmos_assets.runs.record"): "a record's rules name the record type",
    ("cosmos_assets.runs.record_index", "cosmos_assets.runs.record"): "the index's rows are made from the record type",
    ("cosmos_assets.machines.docker_engine", "cosmos_assets.machines.docker"): "the container state docker.py reads",
}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = _module_names()


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> Iterator[str]:
    """The package modules an import statement loads (``from pkg import submodule`` loads the submodule)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name.split(".")[0] == "cosmos_assets")
        return
    base = node.module or ""
    if node.level:
        here = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] == "cosmos_assets":
        for alias in node.names:
            yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _imports(module: str) -> Iterator[tuple[str, str]]:
    """(where, imported module) for each import of the package in ``module``; where: top, local or type_only."""

    def walk(nodes: Iterable[ast.AST], where: str) -> Iterator[tuple[str, str]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield from ((where, imported) for imported in _imported(node, module))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(ast.iter_child_nodes(node), "type_only" if where == "type_only" else "local")
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.body, "type_only")
                yield from walk(node.orelse, where)
            else:
                yield from walk(ast.iter_child_nodes(node), where)

    yield from walk([ast.parse(MODULES[module].read_text(encoding="utf-8"))], "top")


IMPORTS = {module: sorted(set(_imports(module))) for module in MODULES}


def _runs_first(importer: str, imported: str) -> Iterator[str]:
    """``imported`` and the packages above it that load first, except the importer's own (already loading)."""
    parts = imported.split(".")
    for end in range(2, len(parts) + 1):
        name = ".".join(parts[:end])
        if name != importer and not (end < len(parts) and importer.startswith(name + ".")):
            yield name


def _circles(kinds: set[str], leave_out: set[tuple[str, str]] = frozenset()) -> list[list[str]]:
    edges = {module: set() for module in MODULES}
    for importer, found in IMPORTS.items():
        for where, imported in found:
            if where in kinds and (importer, imported) not in leave_out:
                edges[importer].update(_runs_first(importer, imported))
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for nxt in sorted(edges.get(module, ())):
            if state.get(nxt) == "open":
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_circle_among_the_imports_a_module_runs_when_it_loads() -> None:
    circles = _circles({"top"})
    assert not circles, f"import circles: {circles}"


def test_a_function_local_import_of_the_package_has_a_reason_listed_here() -> None:
    listed = START_UP.keys() | CIRCLES.keys() | MOVABLE
    local = {
        (importer, imported)
        for importer, found in IMPORTS.items()
        if importer != CLI and not importer.startswith(CLI + ".")
        for where, imported in found
        if where == "local"
    }
    unlisted, stale = sorted(local - listed), sorted(listed - local)
    assert not unlisted, f"move these to the top of their modules, or list them here with the reason: {unlisted}"
    assert not stale, f"these are no longer function-local imports: take them off the lists: {stale}"


def test_only_the_listed_circles_are_dodged_inside_functions() -> None:
    circles = _circles({"top", "local"}, set(CIRCLES))
    assert not circles, f"function-local imports that close a circle, not in CIRCLES: {circles}"
    circles = _circles({"top", "local", "type_only"}, set(CIRCLES) | set(TYPE_ONLY_CIRCLES))
    assert not circles, f"type-only imports that close a circle, not in TYPE_ONLY_CIRCLES: {circles}"


def test_the_model_names_are_the_backends_names_in_order() -> None:
    assert tuple(backends()) == MODEL_NAMES
