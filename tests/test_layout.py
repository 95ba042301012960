"""The package's shape: a package per stage owns its commands, library code never sees the command line, and
imports run one way."""

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
                submodules = {f"{target}.{a.name}" for a in node.names} & modules.keys()
                # `from package import module` depends on the module; the package only if a name is its own
                whole = target in modules and len(submodules) < len(node.names)
                edges.update(submodules | ({target} if whole else set()))
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
        graph[name] = edges - {name, "clsr"}  # `from clsr import __version__` is no cycle
    return graph


STAGES = ("encode", "sae", "index", "search", "fusion", "evaluate", "interpret")
COMMAND_LAYER = {"clsr.cli", "clsr.options", "clsr.demo"}  # besides each stage's command and __main__ modules


def _is_command_layer(module: str) -> bool:
    return module in COMMAND_LAYER or module.rpartition(".")[2] in ("command", "__main__")


def test_no_import_cycles():
    graph = _import_graph()
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


def test_library_code_never_reads_the_command_line():
    """Only the command layer (clsr.options, each stage's command module) imports clsr.options or handles an
    argparse.Namespace; library functions take typed configs."""
    graph = _import_graph()
    library = sorted(m for m in graph if not _is_command_layer(m))
    assert len(library) > 30
    leaks = {m: sorted(t for t in graph[m] if _is_command_layer(t)) for m in library}
    assert {m: t for m, t in leaks.items() if t} == {}
    for module in library:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        path = path if path.exists() else path.with_suffix("") / "__init__.py"
        source = path.read_text()
        assert "Namespace" not in source and "_from_args" not in source, module


def test_options_imports_only_errors_at_module_level():
    """So `clsr evaluate --help` loads no torch: the config types are imported where a flag group is read."""
    tree = ast.parse((PACKAGE / "options.py").read_text())
    top = {node.module for node in tree.body
           if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clsr")}
    assert top == {"clsr.errors"}


def test_the_tree_shows_the_pipeline():
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").exists() and (PACKAGE / stage / "__main__.py").exists(), stage
    flat = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__", "cli", "cpu", "data", "demo", "errors", "jvm", "options", "progress"]


def test_every_command_is_owned_by_a_stage_and_named_alike():
    from clsr.cli import build_parser

    for name, (module, attribute, _) in COMMANDS.items():
        assert module == "clsr.demo" or (module.split(".")[1] in STAGES and module.endswith(".command")), name
        command = load_command(name)
        assert command.name == name and command.description
        assert getattr(importlib.import_module(module), attribute) is command
        build_parser([name])  # its arguments, shared groups included, do not clash


@pytest.mark.parametrize("stage", STAGES)
def test_python_dash_m_runs_each_stage(stage):
    result = subprocess.run([sys.executable, "-m", f"clsr.{stage}", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m clsr.{stage}")


def test_evaluate_does_not_load_torch():
    code = "import sys; from clsr.cli import build_parser; build_parser(['evaluate']); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
