"""The code's shape, checked: module and function sizes, no import cycles (between modules or packages), every
package importing only packages below it, no private names across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "repvgg_search"
MAX_MODULE_LINES = 500
# A loop that reads top to bottom is worth more than a short function: the cap only flags the sprawling ones.
MAX_FUNCTION_LINES = 80

# The layers, lowest first: a unit imports only units before it (function-level imports included). A unit is a
# top-level module or package of repvgg_search; every command (`cli.py`, `__main__.py`, `train.py`, `entry.py`) is
# the top unit, `cli`. The README's code map draws the same order.
ORDER = [
    "errors", "locks", "progress", "presets", "files", "typed", "schema", "tracking", "analysis",
    "models", "data", "devices", "distributed", "checkpoints", "training", "deploy", "profile", "config",
    "trial", "jobs", "sweep", "search", "cli",
]  # fmt: skip
COMMANDS = ("cli", "__main__")
TOP_COMMANDS = ("repvgg_search.train", "repvgg_search.entry")
# Deprecated names kept for one release, each resolved from a module of its new home's unit (not a dependency).
ALIASES = {"repvgg_search.engine": "training", "repvgg_search.analysis.schema": "analysis"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _code(tree: ast.Module) -> list[ast.AST]:
    """Every node of a module but those that never run as its dependencies: the body of `if __name__ ==
    "__main__":` (the module run as a command) and of a module-level `__getattr__` (a lazy deprecation alias)."""
    skipped: set[int] = set()
    for node in tree.body:
        main = (
            isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)
        )
        alias = isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
        if main or alias:
            skipped.update(id(n) for n in ast.walk(node))
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) of every import inside the package, at any depth."""
    tree = ast.parse(path.read_text())
    out = []
    for node in _code(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("repvgg_search")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            if not target.startswith("repvgg_search"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, None) if sub in modules else (target, alias.name))
    return out


def test_no_module_is_over_500_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_80_lines():
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name} ({node.end_lineno - start + 1} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_module_imports_a_private_name_of_another():
    modules = _modules()
    private = []
    for module, path in modules.items():
        for target, name in _imports(module, path, modules):
            leaf = name if name is not None else target.rsplit(".", 1)[-1]
            if leaf.startswith("_") and not leaf.startswith("__") and target != module:
                private.append(f"{module} imports {target}{'.' + name if name else ''}")
    assert not private, private


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, _ in _imports(module, path, modules):
            while target and target not in modules:  # a name from a module: the module itself
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_between_modules():
    """Counting every import (a function-level one too): a package's __init__ re-exporting its modules is the
    only edge left out, since importing a submodule runs its package first anyway."""
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def unit(module: str) -> str:
    """The layer unit of a module (see ORDER)."""
    parts = module.split(".")
    if parts[-1] in COMMANDS or module in TOP_COMMANDS:
        return "cli"
    if module in ALIASES:
        return ALIASES[module]
    return parts[1] if len(parts) > 1 else "__init__"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    rank = {u: i for i, u in enumerate(ORDER)}
    out = []
    for module, targets in graph.items():
        if module == "repvgg_search":  # the package's own lazy `from_trial`: nothing runs it on import
            continue
        for target in targets:
            a, b = unit(module), unit(target)
            if a != b and rank[b] > rank[a]:
                out.append(f"{module} ({a}) imports {target} ({b})")
    return sorted(out)


def test_every_module_belongs_to_a_layer():
    units = {unit(m) for m in _modules() if m != "repvgg_search"}
    assert units <= set(ORDER), f"units missing from ORDER: {sorted(units - set(ORDER))}"


def test_no_package_imports_a_package_above_it():
    """Function-level imports count; a command (the `cli` unit) may import anything."""
    upward = _upward(_graph())
    assert not upward, "\n".join(upward)


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if module != "repvgg_search":
            graph.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    for node in list(graph):
        graph.update({t: graph.get(t, set()) for t in graph[node]})
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_order_check_finds_an_upward_import():
    assert _upward({"repvgg_search.models.blocks": {"repvgg_search.trial.runner"}}) == [
        "repvgg_search.models.blocks (models) imports repvgg_search.trial.runner (trial)"
    ]
    assert _upward({"repvgg_search.trial.cli": {"repvgg_search.sweep.driver"}}) == []  # a command: the top


def test_analysis_report_does_not_load_torch():
    """The analysis library reads records and draws figures: importing it never loads torch (a fresh process)."""
    import subprocess
    import sys

    code = "import sys, repvgg_search.analysis.report; assert 'torch' not in sys.modules, sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_a_trial_process_does_not_load_the_statistics_stack():
    """A trial process (the train command, a sweep's job) writes per-image bits but runs no statistics: it never
    imports pandas or scipy.stats (about a second per trial, which every sweep and the demo pay per trial)."""
    import subprocess
    import sys

    code = ("import sys, repvgg_search.trial.cli, repvgg_search.trial.runner; "
            "assert not {'pandas', 'scipy.stats'} & set(sys.modules), sorted({'pandas', 'scipy.stats'} & set(sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_only_locks_takes_file_locks():
    users = [m for m, p in _modules().items() if "fcntl.flock" in p.read_text() and m != "repvgg_search.locks"]
    assert not users, f"file locks outside locks.py: {users}"


@pytest.mark.parametrize("name", ["sweep", "search"])
def test_sweep_and_search_are_packages_with_a_main(name):
    assert (PACKAGE / name / "__init__.py").exists() and (PACKAGE / name / "__main__.py").exists()
