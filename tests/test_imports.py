"""The import graph of xenofeat's packages has no cycle and goes one way; a command that fails to import is an error.

The graph is read from the source with `ast`, so function-local imports and `if TYPE_CHECKING:` imports count: a
cycle hidden inside a function is still a cycle between the modules. Packages import one way:
activations <- sae_training <- features <- viewer.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.common import REPO, error_line, run_cli

PACKAGES = ("activations", "sae_training", "features", "viewer")
"""Lowest first: a module may import its own package and the packages before it, never one after it."""


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of `packages` under `root` (a package is its __init__)."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of `modules` (an imported class resolves to its module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `module` imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in (_known(name, modules) for name in targets) if t and t != module)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {m: imports_of(m, f, modules) for m, f in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def upward_imports(graph: dict[str, set[str]], packages: tuple[str, ...] = PACKAGES) -> list[str]:
    rank = {p: i for i, p in enumerate(packages)}
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if rank[b.split(".")[0]] > rank[a.split(".")[0]]
    )


def test_the_packages_have_no_import_cycle() -> None:
    graph = import_graph(REPO)
    assert "features.cli.commands" in graph and "activations.cache" in graph  # the walk found the packages
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_packages_import_one_way() -> None:
    assert upward_imports(import_graph(REPO)) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_the_checks_see_function_local_relative_and_type_checking_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/a.py": "def f():\n    from low import b\n",
            "low/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import X\n",
            "low/c.py": "import os\nfrom low.a import f as X\n",
            "high/__init__.py": "",
            "high/v.py": "from low.c import X\n",
        },
    )
    graph = import_graph(tmp_path, ("low", "high"))
    assert graph["low.a"] == {"low.b"} and graph["low.b"] == {"low.c"} and graph["high.v"] == {"low.c"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["low.a", "low.b", "low.c"]
    assert upward_imports(graph, ("low", "high")) == []
    _write(tmp_path, {"low/c.py": "import os\n", "low/d.py": "def g():\n    import high.v\n"})
    graph = import_graph(tmp_path, ("low", "high"))
    assert find_cycle(graph) is None
    assert upward_imports(graph, ("low", "high")) == ["low.d -> high.v"]


def _xenofeat_with_broken(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`xenofeat ARGS` in a process where importing `module` fails (None in sys.modules makes import raise)."""
    code = f"import sys; sys.modules[{module!r}] = None; from features.cli import entry; entry()"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("module", ["activations.synth_cli", "features.cli.definition", "features.exporters"])
def test_a_command_module_that_fails_to_import_is_an_error_not_a_missing_command(module: str) -> None:
    line = error_line(_xenofeat_with_broken(module, "definition", "show"))
    assert module in line and "cannot be loaded" in line


def test_a_broken_command_plugin_is_an_error(tmp_path: Path) -> None:
    dist = tmp_path / "xenofeat_broken_plugin-0.1.dist-info"
    _write(
        tmp_path,
        {
            f"{dist.name}/METADATA": "Metadata-Version: 2.1\nName: xenofeat-broken-plugin\nVersion: 0.1\n",
            f"{dist.name}/entry_points.txt": "[xenofeat.commands]\nbroken = xenofeat_no_such_plugin:register\n",
        },
    )
    line = error_line(run_cli("definition", "show", env={"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}))
    assert "`broken` command (xenofeat_no_such_plugin:register) cannot be loaded" in line
    assert "xenofeat_no_such_plugin" in line
    assert run_cli("definition", "show").returncode == 0  # without the plugin the same command works
