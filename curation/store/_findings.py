"""What the curation checks keep: their runs, their findings, and SMEs' decisions on them.

`curation.checks` runs the checks and decides what a finding means; this module is its
storage: `check_runs` (one row per check: fingerprint of its input, summary, who ran it and
when), `findings` (per example, with the version it was computed on) and
`finding_decisions` ("not duplicates", "label is right"...). Also the two counts the coverage
check needs cheaply on every Overview load. A check reads the examples that are not deleted
and not rejected (`_CHECKED`); coverage counts the same ones, so both agree on "thin".
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from curation.store._filters import where_clause

if TYPE_CHECKING:
    from curation.query import ExampleFilter

_CHECKED = "NOT deleted AND status <> 'rejected'"  # the examples a check reads


class FindingQueries:
    """The `check_runs`, `findings` and `finding_decisions` tables (mixed into `Store`)."""

    def check_input(self, where: ExampleFilter) -> list[tuple]:
        """(id, version, messages JSON, label, split, status, content hash) of the examples
        `where` selects that a check reads (not rejected), by id."""
        condition, params = where_clause(where)
        return self.cursor().execute(
            "SELECT id, version, messages, label, split, status, content_hash FROM examples "
            f"WHERE {condition} AND status <> 'rejected' ORDER BY id", params).fetchall()

    def check_run(self, name: str) -> dict[str, Any] | None:
        """The last run of a check: {"fingerprint", "summary", "run_by", "run_at"}, or None."""
        row = self.cursor().execute("SELECT fingerprint, summary, run_by, run_at FROM "
                                    "check_runs WHERE check_name = ?", [name]).fetchone()
        return None if row is None else {"fingerprint": row[0], "summary": orjson.loads(row[1]),
                                         "run_by": row[2], "run_at": row[3]}

    def save_check_run(self, name: str, findings: list, versions: dict[int, int], *,
                       fingerprint: str, summary: dict[str, Any], run_by: str,
                       run_at: datetime) -> None:
        """Replace a check's findings (objects with example_id, score, is_issue, reason and
        details; each stored with the version in `versions`) and record its run, in one
        transaction."""
        import pyarrow as pa

        rows = pa.table({  # one columnar insert: executemany takes seconds at 10,000 findings
            "check_name": pa.array([name] * len(findings), pa.string()),
            "example_id": pa.array([f.example_id for f in findings], pa.int64()),
            "version": pa.array([versions[f.example_id] for f in findings], pa.int32()),
            "score": pa.array([f.score for f in findings], pa.float64()),
            "is_issue": pa.array([bool(f.is_issue) for f in findings], pa.bool_()),
            "reason": pa.array([f.reason for f in findings], pa.string()),
            "details": pa.array([orjson.dumps(f.details).decode() for f in findings],
                                pa.string())})
        with self.transaction() as tx:
            tx.execute("DELETE FROM findings WHERE check_name = ?", [name])
            tx.register("new_findings", rows)
            tx.execute("INSERT INTO findings SELECT * FROM new_findings")
            tx.unregister("new_findings")
            tx.execute("INSERT OR REPLACE INTO check_runs VALUES (?, ?, ?, ?, ?)",
                       [name, fingerprint, orjson.dumps(summary).decode(), run_by, run_at])

    def findings(self, name: str, *, issues_only: bool = True) -> list[tuple]:
        """(example id, score, is issue, reason, details) of a check's last run, worst first."""
        rows = self.cursor().execute(
            "SELECT example_id, score, is_issue, reason, details FROM findings "
            f"WHERE check_name = ? {'AND is_issue' if issues_only else ''} ORDER BY score, "
            "example_id", [name]).fetchall()
        return [(*r[:4], orjson.loads(r[4])) for r in rows]

    def issues_on(self, example_ids: list[int]) -> list[tuple[str, int, str]]:
        """(check, example id, reason) of every stored issue on these examples, by check."""
        return self.cursor().execute(
            "SELECT check_name, example_id, reason FROM findings WHERE is_issue AND "
            "list_contains(?::BIGINT[], example_id) ORDER BY check_name, example_id, score",
            [list(example_ids)]).fetchall()

    def add_finding_decisions(self, name: str, subjects: list[str], decision: str,
                              decided_by: str, decided_at: datetime) -> None:
        """Record one decision on each subject (an example id, or a pair "a-b")."""
        with self.transaction() as tx:
            tx.executemany("INSERT INTO finding_decisions VALUES (?, ?, ?, ?, ?)",
                           [[name, s, decision, decided_by, decided_at] for s in subjects])

    def remove_finding_decisions(self, name: str, subjects: list[str], *,
                                 decided_by: str) -> int:
        """Delete `decided_by`'s decisions on these subjects of check `name`; how many."""
        return len(self.cursor().execute(
            "DELETE FROM finding_decisions WHERE check_name = ? AND decided_by = ? AND "
            "list_contains(?::VARCHAR[], subject) RETURNING subject",
            [name, decided_by, list(subjects)]).fetchall())

    def finding_decisions(self, decision: str | None = None, *, check: str | None = None,
                          exclude: str | None = None) -> list[tuple[str, str, str]]:
        """(subject, decision, decided by) of the decisions of one kind (`decision`), or of
        one check other than `exclude`, oldest first."""
        return self.cursor().execute(
            "SELECT subject, decision, decided_by FROM finding_decisions "
            "WHERE (? IS NULL OR decision = ?) AND (? IS NULL OR check_name = ?) "
            "AND (? IS NULL OR decision <> ?) ORDER BY decided_at",
            [decision, decision, check, check, exclude, exclude]).fetchall()

    def label_split_counts(self) -> list[tuple[str, str, int]]:
        """(label, split, count) over the examples a check reads, labelled ones only."""
        return self.cursor().execute(
            f"SELECT label, split, count(*) FROM examples WHERE {_CHECKED} AND label IS NOT "
            "NULL GROUP BY label, split").fetchall()

    def queue_against_labels(self, check: str, labels: list[str]) -> tuple[int, int, int]:
        """(examples the check's last run flagged, examples of `labels` it did not flag,
        flagged examples not of `labels`): whether its queue matches those labels now."""
        return self.cursor().execute(
            "WITH q AS (SELECT example_id FROM findings WHERE check_name = ? AND is_issue), "
            f"t AS (SELECT id FROM examples WHERE {_CHECKED} AND "
            "list_contains(?::VARCHAR[], label)) "
            "SELECT (SELECT count(*) FROM q), "
            "(SELECT count(*) FROM t ANTI JOIN q ON q.example_id = t.id), "
            "(SELECT count(*) FROM q ANTI JOIN t ON q.example_id = t.id)",
            [check, labels]).fetchone()
