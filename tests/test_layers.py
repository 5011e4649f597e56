"""The layers of the code, stated once and checked on every run.

``docs/architecture.md`` draws them::

    converters  <-  common  <-  worker
         ^            ^
         +---- backend ---- (worker only on the inline path)

- ``converters`` imports nothing of ours: pure functions over the prediction type;
- ``common`` imports only ``converters``: settings, logs, metric definitions,
  the job contract and the Label Studio client, needed by both sides;
- ``worker`` imports ``converters`` and ``common``: the model side (torch);
- ``backend`` imports ``converters`` and ``common``, and ``worker`` only inside
  the functions listed in :data:`INLINE_PATH` (the model run in this process);
- nothing imports in a cycle, and importing the backend app loads no torch.

Imports are read from the source with ``ast``: every ``import`` statement,
at module level or inside a function, counts. A module loaded by name at run
time (``importlib``, RQ's dotted job paths) is not an import statement; the
last test catches those by importing the backend in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {
    "converters": frozenset(),
    "common": frozenset({"converters"}),
    "worker": frozenset({"converters", "common"}),
    "backend": frozenset({"converters", "common"}),
}
"""Which of our packages each package may import (itself always)."""

INLINE_PATH = {
    "backend.queue.in_process_problem": "without REDIS_URL the backend runs the "
    "model itself, so it asks the engine registry whether the engine is installed "
    "(InProcessRunner then loads worker.jobs by its dotted name)",
    "backend.bulk.executors.InlineExecutor": "`prelabel --inline` runs chunks "
    "in this process",
    "backend.commands.predict": "`rexlabel predict` runs the model on files",
    "backend.commands.worker": "`rexlabel worker` starts a worker process",
    "backend.commands.finetune": "`rexlabel finetune` trains the model in this "
    "process (the training worker runs this command as a child process)",
    "backend.commands.make_test_model": "`rexlabel make-test-model` trains the "
    "tiny model",
    "backend.doctor": "`rexlabel doctor` checks the worker install (engine "
    "packages, GPU, SAM checkpoint) where it exists",
}
"""Where the backend may import ``worker``: a module or a function/class
(dotted, prefix match), with why. Everywhere else is a layer violation."""

HEAVY_MODULES = ("torch", "transformers", "vllm", "segment_anything")
"""What importing the backend must not load: the backend image has none."""


@dataclass(frozen=True)
class Import:
    module: str
    """Our module that imports (``backend.queue``)."""
    scope: str
    """Where the import statement stands: the module, or ``module.func``."""
    target: str
    """The module it names (``worker.jobs``), resolved to a file of ours."""
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _our_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in LAYERS
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imports(modules: dict[str, Path]) -> Iterator[Import]:
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        yield from _walk(tree, module, module, is_package, modules)


def _walk(
    node: ast.AST, module: str, scope: str, is_package: bool, modules: dict
) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield from _walk(
                child, module, f"{scope}.{child.name}", is_package, modules
            )
            continue
        names: list[str] = []
        if isinstance(child, ast.Import):
            names = [alias.name for alias in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(child.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # ``from pkg import name``: the submodule when name is one
            names = [f"{base}.{alias.name}" for alias in child.names] or [base]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                yield Import(module, scope, target, child.lineno)
        if not isinstance(child, ast.Import | ast.ImportFrom):
            yield from _walk(child, module, scope, is_package, modules)


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def _on_inline_path(scope: str) -> bool:
    return any(scope == p or scope.startswith(p + ".") for p in INLINE_PATH)


def test_each_package_imports_only_the_layers_below_it():
    modules = _our_modules()
    crossings = set()
    for imp in _imports(modules):
        source, target = _package(imp.module), _package(imp.target)
        if target == source or target in LAYERS[source]:
            continue
        if source == "backend" and target == "worker" and _on_inline_path(imp.scope):
            continue
        path = modules[imp.module].relative_to(ROOT)
        crossings.add(f"{path}:{imp.line} ({imp.scope}) imports {imp.target}")
    assert not crossings, "layer crossings:\n" + "\n".join(sorted(crossings))


def test_the_inline_path_list_names_code_that_exists():
    modules = _our_modules()
    scopes = {imp.scope for imp in _imports(modules)} | set(modules)
    stale = [
        p
        for p in INLINE_PATH
        if not any(s == p or s.startswith(p + ".") for s in scopes)
    ]
    assert not stale, f"INLINE_PATH names code that is gone: {stale}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_in_a_cycle():
    modules = _our_modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in _imports(modules):
        # a package's __init__ importing its own submodules is how it re-exports
        if not imp.target.startswith(imp.module + "."):
            edges[imp.module].add(imp.target)
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_importing_the_backend_loads_no_torch_and_no_worker_code():
    code = (
        "import json, sys\n"
        "import backend.app, backend.cli\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{set(HEAVY_MODULES) | {'worker'}!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == []
