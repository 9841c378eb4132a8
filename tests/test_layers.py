"""The layers hold: no module outside the store's package (`curation.store`) runs SQL.

The scan parses each module with `ast` (no import, no regular expression over the source) and
flags what only SQL code does: a call of `.execute`/`.executemany` (a DuckDB cursor's), a call
of `.sql`/`.query` whose first argument is literal text (DuckDB's relational API; datasketch's
`lsh.query(m)` passes a MinHash and is not flagged), `duckdb.connect(...)`, and a string
literal (plain or the literal head of an f-string) that reads as SQL: it starts with a
statement keyword in capitals, or holds two different SQL clause keywords in capitals (a
WHERE fragment such as "NOT deleted AND status <> 'rejected'"). Docstrings are prose and are
skipped; so is prose in general, since it does not write SELECT or NOT ... AND in capitals.

`SCANNED` lists the packages scanned (the lead extends it: training, the CLI, the pages);
`EXEMPT` lists modules not scanned yet.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED: tuple[str, ...] = ("curation",)
STORE = "curation/store"  # the one place SQL may live
# Owned by the other helpers' moves of issue 10 (training out of the CLI, generation out of
# fill.py); the lead removes this exception once they are merged.
EXEMPT: frozenset[str] = frozenset({"curation/cli.py", "curation/fill.py"})

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


def scanned_modules() -> list[Path]:
    modules = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(STORE + "/") or relative in EXEMPT:
                continue
            modules.append(path)
    return modules


def test_no_module_outside_the_store_runs_sql():
    offenders = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in scanned_modules()
                 for line, what in sql_in(path.read_text(encoding="utf-8"))]
    assert scanned_modules(), "the scan found no modules to check"
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
