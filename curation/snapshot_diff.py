"""What changed in the data between two snapshots, by label: which curation changed a score.

Two training runs are compared on their data as well as their metrics: the examples added,
removed, relabelled (same example, another label) and edited (same label, other text) from
one snapshot to the other, counted per label. An example counts under its label in the later
snapshot (added, edited, relabelled "in") and under its earlier label when it left it
(removed, relabelled "out"), so each label's row says how its training data moved.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from curation.store import Store

CHANGES = ("added", "removed", "relabelled_in", "relabelled_out", "edited", "unchanged")


@dataclass(frozen=True)
class LabelChange:
    """How one label's examples moved between the snapshots."""

    label: str | None
    before: int
    after: int
    added: int = 0
    removed: int = 0
    relabelled_in: int = 0
    relabelled_out: int = 0
    edited: int = 0


@dataclass(frozen=True)
class SnapshotDiff:
    """The data diff of two snapshots: totals, per label, and the example ids of each kind."""

    before: str
    after: str
    totals: dict[str, int]
    by_label: list[LabelChange]
    ids: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> str:
        t = self.totals
        return (f"{t['added']} added, {t['removed']} removed, {t['relabelled']} relabelled, "
                f"{t['edited']} edited, {t['unchanged']} unchanged")

    def to_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "totals": self.totals,
                "by_label": [vars(c) for c in self.by_label], "ids": self.ids}


def diff_snapshots(store: Store, before: str, after: str) -> SnapshotDiff:
    """The data diff from snapshot `before` to snapshot `after`."""
    ids: dict[str, list[int]] = {k: [] for k in ("added", "removed", "relabelled", "edited")}
    counts: dict[str, Counter] = {k: Counter() for k in CHANGES}
    size_before, size_after = Counter(), Counter()
    unchanged = 0
    for example_id, label_a, label_b, hash_a, hash_b in store.snapshot_pairs(before, after):
        if hash_a is not None:
            size_before[label_a] += 1
        if hash_b is not None:
            size_after[label_b] += 1
        if hash_a is None:
            ids["added"].append(example_id)
            counts["added"][label_b] += 1
        elif hash_b is None:
            ids["removed"].append(example_id)
            counts["removed"][label_a] += 1
        elif label_a != label_b:
            ids["relabelled"].append(example_id)
            counts["relabelled_out"][label_a] += 1
            counts["relabelled_in"][label_b] += 1
        elif hash_a != hash_b:
            ids["edited"].append(example_id)
            counts["edited"][label_b] += 1
        else:
            unchanged += 1
    labels = sorted(set(size_before) | set(size_after), key=lambda lab: (lab is None, lab or ""))
    by_label = [LabelChange(lab, size_before[lab], size_after[lab],
                            **{k: counts[k][lab] for k in CHANGES if k != "unchanged"})
                for lab in labels]
    totals = {k: len(v) for k, v in ids.items()} | {"unchanged": unchanged}
    return SnapshotDiff(before, after, totals, by_label, ids)
