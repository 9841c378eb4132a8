"""Training runs as the store records them (`training_runs`), copied from their run folders.

A training run never opens the store: it writes its folder. `training` reads the folders and
hands the store one row per run; the store keeps them so snapshots, runs and evaluations can
be listed together. A row is rewritten only when what its folder says has changed, so
`recorded_at` says when the store last learnt something new about the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

# The columns of a run row, in table order (`recorded_at`, set by the store, follows them).
RUN_COLUMNS = ("id", "snapshot_id", "snapshot_hash", "base_model", "config", "state",
               "created_by", "created_at", "ended_at", "steps", "final_loss",
               "leakage_overridden_by", "evaluation")


class RunQueries:
    """The `training_runs` table (mixed into `Store`)."""

    def record_runs(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """Record runs, one row per run with the values of `RUN_COLUMNS` in that order
        (`config` and `evaluation` as JSON text or None, times as naive UTC datetimes).
        A row equal to the stored one is left alone; a new or changed one replaces it, with
        `recorded_at` now, all in one transaction. The ids written, in `rows` order."""
        stored = {tuple(r) for r in self.cursor().execute(
            "SELECT * EXCLUDE (recorded_at) FROM training_runs").fetchall()}
        changed = [list(r) for r in rows if tuple(r) not in stored]
        if changed:
            with self.transaction() as tx:
                tx.execute("DELETE FROM training_runs WHERE id IN (SELECT unnest(?))",
                           [[r[0] for r in changed]])
                tx.executemany("INSERT INTO training_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                               "?, ?, ?, current_timestamp)", changed)
        return [r[0] for r in changed]

    def recorded_runs(self, *, snapshot_id: str | None = None) -> list[dict[str, Any]]:
        """The runs the store has recorded (all, or those trained on `snapshot_id`), newest
        first, each a dict of `RUN_COLUMNS` and `recorded_at`, `config` and `evaluation`
        parsed (None where absent)."""
        cur = self.cursor().execute(
            "SELECT * FROM training_runs WHERE ? IS NULL OR snapshot_id = ? "
            "ORDER BY created_at DESC, id DESC", [snapshot_id, snapshot_id])
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            item = dict(zip(names, row))
            for key in ("config", "evaluation"):
                item[key] = orjson.loads(item[key]) if item[key] else None
            out.append(item)
        return out
