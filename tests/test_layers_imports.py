"""The layers hold: each package imports only the packages below it.

    curate (cli, ui, workspace)  ->  training  ->  curation  (->  curation.store: all SQL)

`curation` (the data core) imports neither `training`, the application (`curate`), click nor
streamlit; `training` imports neither the application, click nor streamlit. Checked two
ways: statically, every import statement of every module (also those inside functions, which
run later), and at run time, by what `import curation` and `import training` load.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

FORBIDDEN = {  # package -> what none of its modules may import
    "curation": {"training", "curate", "click", "streamlit"},
    "training": {"curate", "click", "streamlit"},
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every import statement in a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_it(package):
    breaches = [f"{path.relative_to(PROJECT_ROOT)}:{line} imports {name}"
                for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
                for line, name in sorted(imported_packages(path))
                if name in FORBIDDEN[package]]
    assert not breaches, "\n".join(breaches)


def test_the_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def later():\n    from training.models import load_model\n")
    assert imported_packages(module) == {(2, "training")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_of_a_package_loads_nothing_above_it(package):
    probe = "\n".join([
        "import importlib, pkgutil, sys",
        f"import {package}",
        f"for info in pkgutil.walk_packages({package}.__path__, '{package}.'):",
        "    importlib.import_module(info.name)",
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {FORBIDDEN[package]!r}))"])
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
