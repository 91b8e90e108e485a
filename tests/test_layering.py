"""The architecture's layers: the library never imports the simulator or the profiler, and the numpy
core, the simulator and the traces load without torch; test modules share code through tests/helpers.py,
never by importing each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPPER = ("simulator", "profiler")


def imports_of(source: str) -> set[str]:
    """Top-level package names a module imports anywhere (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def library_modules() -> list[Path]:
    """sparksched/ without its command-line layer (sparksched/cli.py, sparksched/commands/)."""
    pkg = ROOT / "sparksched"
    return [p for p in sorted(pkg.rglob("*.py")) if p.name != "cli.py" and "commands" not in p.parts]


def test_the_library_imports_neither_the_simulator_nor_the_profiler():
    bad = {str(p.relative_to(ROOT)): sorted(imports_of(p.read_text()) & set(UPPER)) for p in library_modules()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"library modules import a layer above them: {bad}"


def test_negative_control_the_scanner_sees_a_function_level_import():
    src = "def f():\n    from simulator.engine import Engine\n    return Engine\n"
    assert "simulator" in imports_of(src)


def _torch_loaded_after(statement: str) -> bool:
    code = f"import sys\n{statement}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_the_numpy_core_the_simulator_and_the_traces_load_without_torch():
    assert not _torch_loaded_after("import sparksched, simulator.trace, traces")
    assert not _torch_loaded_after("from sparksched import schedule, StepCost, ThroughputCurve, plan_capacity\n"
                                   "import numpy as np\n"
                                   "schedule(np.full((2, 3), 0.5), ThroughputCurve.from_points([1, 8], [0.01, 0.02]))")
    assert not _torch_loaded_after("import simulator.run, simulator.engine, simulator.sweep")


def test_negative_control_a_torch_backed_name_does_load_torch():
    assert _torch_loaded_after("from sparksched import verify")


def imported_test_modules(source: str) -> set[str]:
    """The test modules (test_*, tests.test_*) a source imports, at any level."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if isinstance(node, ast.ImportFrom) and node.module in (None, "tests", ""):  # from tests import test_x
            names += [a.name for a in node.names]
        out |= {n for n in names if n.split(".")[-1].startswith("test_")}
    return out


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers.py (or conftest.py), never in a test module."""
    bad = {p.name: sorted(imported_test_modules(p.read_text())) for p in sorted((ROOT / "tests").glob("*.py"))}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"test modules import other test modules (move the shared code to tests/helpers.py): {bad}"


@pytest.mark.parametrize("src", ["from test_engine import run\n", "from tests.test_engine import run\n",
                                 "import tests.test_engine\n", "from tests import test_engine\n",
                                 "def f():\n    from . import test_engine\n"])
def test_negative_control_the_scanner_sees_a_test_module_import(src):
    assert imported_test_modules(src)
    assert not imported_test_modules("from helpers import run\nimport testing_tools\n")
