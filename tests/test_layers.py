r"""The layers hold. The picture (an arrow: may import):

    app.py, curate.cli, curate.ui   the interfaces: gather input, call the facade, render
                 |
         curate.workspace           the facade
             /        \
      training  -->  curation       LoRA runs and evaluation --> the data core
                        |
                 curation.store     the only place that runs SQL

Three rules, checked by parsing each module's source with `ast` (nothing is imported for a
scan, so the pages, which run when imported, are covered too); rules 2 and 3 over every module
of `curation`, `training`, `curate` and `app.py`, rule 1 over the two lower packages:

1. Imports point down. `curation` imports neither `training`, the application (`curate`),
   click nor streamlit; `training` imports neither the application, click nor streamlit.
   Every import statement counts, also those inside functions (they run later); a second
   check imports every module of the two packages and looks at what got loaded.
2. No SQL outside `curation/store/`. Flagged is what only SQL code does: a call of
   `.execute`/`.executemany` (a DuckDB cursor's), a call of `.sql`/`.query` whose first
   argument is literal text (DuckDB's relational API; datasketch's `lsh.query(m)` passes a
   MinHash and is not flagged), `duckdb.connect(...)`, and a string literal (plain or the
   literal head of an f-string) that reads as SQL: it starts with a statement keyword in
   capitals, or holds two different SQL clause keywords in capitals (a WHERE fragment such as
   "NOT deleted AND status <> 'rejected'"). Docstrings are prose and are skipped; so is prose
   in general, since it does not write SELECT or NOT ... AND in capitals. Catching
   `duckdb.Error` is not SQL.
3. Errors in one place. Every public `CurateError` subclass is defined in
   `curation/errors.py` and exported by `curation`; every one, private ones included, has a
   docstring.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import curation
from curation import errors
from tests.conftest import PROJECT_ROOT

SCANNED: tuple[str, ...] = ("curation", "training", "curate", "app.py")
STORE = "curation/store"  # the one place SQL may live
ERRORS = "curation/errors.py"  # the one place a public CurateError is defined
FORBIDDEN = {  # package -> what none of its modules may import
    "curation": {"training", "curate", "click", "streamlit"},
    "training": {"curate", "click", "streamlit"},
}


def scanned_modules() -> list[Path]:
    """Every module of the scanned packages (and app.py)."""
    modules = []
    for name in SCANNED:
        path = PROJECT_ROOT / name
        modules += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return modules


# --- 1. imports point down -------------------------------------------------------------------

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


# --- 2. no SQL outside the store -------------------------------------------------------------

_STATEMENT = re.compile(
    r"^\s*(SELECT\s|INSERT\s+(OR\s+\w+\s+)?INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|"
    r"CREATE\s+(OR\s+REPLACE\s+)?(TABLE|SEQUENCE|INDEX|VIEW|TEMP|MACRO)\b|WITH\s+\w+\s+AS\s*\(|"
    r"ALTER\s+TABLE\s|DROP\s+(TABLE|SEQUENCE|INDEX|VIEW)\s|ATTACH\s|DETACH\s|COPY\s|"
    r"CHECKPOINT\b|PRAGMA\s|BEGIN\s+TRANSACTION\b|COMMIT\b|ROLLBACK\b)")
_CLAUSE = re.compile(r"\b(FROM|WHERE|JOIN|GROUP BY|ORDER BY|LIMIT|VALUES|LIKE|IS (?:NOT )?NULL|"
                     r"NOT|AND|OR|IN \(|CASE WHEN|DISTINCT)\b")
_CALLS_ALWAYS = {"execute", "executemany"}
_CALLS_WITH_TEXT = {"sql", "query"}


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, str))


def _reads_as_sql(text: str) -> bool:
    return bool(_STATEMENT.match(text)) or len(set(_CLAUSE.findall(text))) >= 2


def sql_in(source: str) -> list[tuple[int, str]]:
    """(line, what) for each piece of SQL in a module's source."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in _CALLS_ALWAYS or (name in _CALLS_WITH_TEXT and node.args
                                         and _is_text(node.args[0])):
                found.append((node.lineno, f"calls .{name}()"))
            elif name == "connect" and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id == "duckdb":
                found.append((node.lineno, "opens a DuckDB connection"))
        elif isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            if isinstance(head, ast.Constant) and _reads_as_sql(head.value):
                found.append((node.lineno, f"SQL text {head.value[:40]!r}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings and _reads_as_sql(node.value):
            found.append((node.lineno, f"SQL text {node.value[:40]!r}"))
    return sorted(set(found))


def test_no_module_outside_the_store_runs_sql():
    outside = [path for path in scanned_modules()
               if not path.relative_to(PROJECT_ROOT).as_posix().startswith(STORE + "/")]
    offenders = [f"{path.relative_to(PROJECT_ROOT)}:{line}: {what}" for path in outside
                 for line, what in sql_in(path.read_text(encoding="utf-8"))]
    assert {p.relative_to(PROJECT_ROOT).parts[0] for p in outside} == set(SCANNED)
    assert not offenders, ("SQL outside curation/store/ (move it behind a Store method):\n"
                           + "\n".join(offenders))


@pytest.mark.parametrize("source", [
    'cur.execute("SELECT 1")',
    'store.cursor().executemany(query, rows)',
    'con.sql("SELECT * FROM examples")',
    'rows = duckdb.connect()',
    'X = "SELECT id FROM examples"',
    'X = f"SELECT {columns} FROM examples WHERE {condition}"',
    'X = ("INSERT INTO events VALUES "\n     "(?, ?)")',
    'X = "INSERT OR REPLACE INTO settings VALUES (?, ?)"',
    'X = "WITH q AS (SELECT 1) SELECT * FROM q"',
    'X = "CHECKPOINT"',
    'keep = "reason NOT LIKE \'suggested keeper%\'"',
    'CHECKED = "NOT deleted AND status <> \'rejected\'"',
])
def test_the_scan_finds_sql(source):
    assert sql_in(source), source


@pytest.mark.parametrize("source", [
    '"""SELECT the examples to export, then INSERT them; NOT deleted AND so on."""',
    'def f():\n    """Examples that are NOT deleted AND not rejected."""',
    'msg = "Select the examples to review, then update their labels."',
    'msg = f"no example has id #{example_id}"',
    'msg = "the import was rolled back; nothing was written"',
    'for j in lsh.query(m):\n    pass',
    'help = "Create a table of results or drop it"',
])
def test_the_scan_passes_prose_and_other_apis(source):
    assert sql_in(source) == [], source


# --- 3. errors in one place ------------------------------------------------------------------

def _error_classes_in(tree: ast.Module, known: set[str]) -> list[ast.ClassDef]:
    """The classes of a module that derive from one of the `known` error class names (a base
    written `CurateError` or `errors.CurateError` alike)."""
    def base_name(node: ast.expr) -> str | None:
        return node.id if isinstance(node, ast.Name) else \
            node.attr if isinstance(node, ast.Attribute) else None
    return [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any(base_name(base) in known for base in node.bases)]


def misplaced_errors(sources: dict[str, str]) -> list[str]:
    """What breaks rule 3 in `sources` (a module's relative path -> its text): a public
    CurateError subclass outside curation/errors.py, or one without a docstring. Subclasses of
    subclasses count: the names are collected until no module adds one."""
    trees = {path: ast.parse(text) for path, text in sources.items()}
    known, classes = {"CurateError"}, {}
    while True:
        found = {(path, node.name): node for path, tree in trees.items()
                 for node in _error_classes_in(tree, known)}
        if set(found) == set(classes):
            break
        classes = found
        known |= {name for _, name in found}
    problems = []
    for (path, name), node in sorted(classes.items()):
        if path != ERRORS and not name.startswith("_"):
            problems.append(f"{path}:{node.lineno}: {name} is not defined in {ERRORS}")
        if ast.get_docstring(node) is None:
            problems.append(f"{path}:{node.lineno}: {name} has no docstring")
    return problems


def test_every_curate_error_is_defined_in_curation_errors_with_a_docstring():
    sources = {path.relative_to(PROJECT_ROOT).as_posix(): path.read_text(encoding="utf-8")
               for path in scanned_modules()}
    assert not misplaced_errors(sources), "\n".join(misplaced_errors(sources))


def test_every_curate_error_is_exported_by_curation():
    def subclasses(cls: type) -> set[type]:
        return {c for s in cls.__subclasses__() for c in {s} | subclasses(s)}

    defined = {c.__name__ for c in subclasses(errors.CurateError)
               if c.__module__ == "curation.errors"}
    assert {"PermissionDenied", "LeakageUnresolved", "RunAlreadyActive",
            "ModelUnavailable"} <= defined
    assert defined | {"CurateError"} <= set(curation.__all__)
    assert all(getattr(curation, name) is getattr(errors, name) for name in defined)


@pytest.mark.parametrize("sources, problem", [
    ({"curation/auth.py": 'class Oops(CurateError):\n    """Doc."""'},
     "Oops is not defined in curation/errors.py"),
    ({"training/data.py": 'class Empty(errors.InvalidValue):\n    """Doc."""',
      ERRORS: 'class InvalidValue(CurateError):\n    """Doc."""'},
     "Empty is not defined in curation/errors.py"),
    ({"a.py": 'class Deep(Middle):\n    """Doc."""',
      "b.py": 'class Middle(CurateError):\n    """Doc."""'},
     "Deep is not defined in curation/errors.py"),
    ({ERRORS: "class Bare(CurateError):\n    pass"}, "Bare has no docstring"),
    ({"curation/importer.py": "class _Died(CurateError):\n    pass"}, "_Died has no docstring"),
])
def test_the_error_scan_finds_misplaced_and_undocumented_errors(sources, problem):
    assert any(problem in line for line in misplaced_errors(sources)), misplaced_errors(sources)


def test_the_error_scan_passes_private_documented_errors_and_other_exceptions():
    sources = {"curation/importer.py": 'class _Died(CurateError):\n    """Doc."""',
               "curation/formats.py": 'class RecordError(Exception):\n    """Doc."""',
               ERRORS: 'class CurateError(Exception):\n    """Doc."""'}
    assert misplaced_errors(sources) == []
