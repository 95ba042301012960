"""The package's shape: every command belongs to its stage's module, and imports run one way."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from clsr.cli import COMMANDS, load_command

PACKAGE = Path(__file__).resolve().parents[1] / "clsr"


def _import_graph() -> dict[str, set[str]]:
    """module -> the clsr modules it imports anywhere (lazy imports in functions included)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                edges.update(t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in modules)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
        graph[name] = edges - {name, "clsr"}  # `from clsr import __version__` is no cycle
    return graph


def test_no_import_cycles():
    graph = _import_graph()
    assert "clsr.options" in graph and graph["clsr.options"] == {"clsr.errors"}
    assert not any("clsr.cli" in edges for edges in graph.values())
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            pytest.fail("import cycle: " + " -> ".join(visiting[visiting.index(module):] + [module]))
        if module in done:
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_every_command_is_owned_by_a_stage_and_named_alike():
    from clsr.cli import build_parser

    for name, (module, attribute, _) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name and command.description
        assert getattr(importlib.import_module(module), attribute) is command
        build_parser([name])  # its arguments, shared groups included, do not clash


@pytest.mark.parametrize("module", ["clsr.index", "clsr.search", "clsr.fusion", "clsr.evaluate", "clsr.explain"])
def test_python_dash_m_runs_each_stage(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: ")


def test_evaluate_does_not_load_torch():
    code = "import sys; from clsr.cli import build_parser; build_parser(['evaluate']); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
