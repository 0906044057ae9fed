"""The import graph of gateway/, computed from the source: acyclic, with no hidden imports.

Every `import` counts, at module level or inside a function: a function-level import is how a
cycle hides, so one is allowed only for an optional extra, named below with its reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import gateway

ROOT = Path(gateway.__file__).parent

#: Modules that may be imported inside a function: optional extras a trimmed install lacks.
LAZY_ALLOWED = {
    "uvloop": "optional extra: the faster event loop, used when installed",
    "amqtt": "optional extra (embedded-broker): only `python -m gateway.embedded_broker` needs it",
    "simulators": "optional package: absent from a trimmed install; `iotgw simulate`/`demo` say so",
    "gateway.store.postgres": "optional extra (postgres): asyncpg, picked by history.backend",
}


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module, e.g. gateway.ws
    target: str  # what it imports, resolved to a module where it names one
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def gateway_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """Every import in one module; `from package import module` resolves to the module."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                found.extend(Import(name, a.name, child.lineno, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the importing module's package
                    package = name.split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    package = package[: len(package) - child.level + 1]
                    base = ".".join([*package, base] if base else package)
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    target = submodule if submodule in known else base
                    found.append(Import(name, target, child.lineno, nested))
            visit(child, nested)

    visit(tree, False)
    return found


def all_imports() -> list[Import]:
    modules = gateway_modules()
    known = set(modules)
    return [i for name, path in modules.items() for i in imports_of(name, path, known)]


def import_graph() -> dict[str, set[str]]:
    """gateway module -> the gateway modules it imports (module or function level)."""
    known = set(gateway_modules())
    graph: dict[str, set[str]] = {name: set() for name in known}
    for imp in all_imports():
        if imp.target in known and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_import_graph_finder_sees_a_cycle():
    """The cycle finder itself: a two-module loop and a three-module loop are both reported."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_function_level_imports_are_seen(tmp_path):
    """An import inside a function body is found and marked as such (the way cycles hide)."""
    path = tmp_path / "probe.py"
    path.write_text("import os\n\ndef f():\n    from gateway.app import RUNTIME\n")
    found = imports_of("gateway.probe", path, {"gateway.app"})
    assert [(i.target, i.in_function) for i in found] == [("os", False), ("gateway.app", True)]


def test_gateway_import_graph_is_acyclic():
    """No group of gateway modules imports itself round, counting imports inside functions."""
    assert cycles(import_graph()) == []


def test_no_function_level_imports_but_optional_extras():
    """Imports sit at module level; inside a function only the optional extras listed above."""
    hidden = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in all_imports()
        if i.in_function and not _lazy_allowed(i.target)
    ]
    assert hidden == []


def _lazy_allowed(target: str) -> bool:
    return any(target == name or target.startswith(name + ".") for name in LAZY_ALLOWED)


def test_no_imports_by_name_at_run_time():
    """Nothing imports a module by a name computed at run time (importlib.import_module,
    __import__): that would hide an edge from the graph above."""
    dynamic = [
        f"{path.relative_to(ROOT.parent)}:{node.lineno}"
        for path in sorted(ROOT.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
        )
    ]
    assert dynamic == []


def test_the_client_imports_nothing_of_the_server():
    """gateway.client depends on aiohttp, orjson and the protocol's frame shapes only: every
    gateway module it imports is one of its own, so it can never reach into the server."""
    reaching = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in all_imports()
        if i.module.startswith("gateway.client")
        and i.target.startswith("gateway")
        and not (i.target == "gateway.client" or i.target.startswith("gateway.client."))
    ]
    assert reaching == []
    assert any(i.module.startswith("gateway.client") for i in all_imports()), "no client found"
