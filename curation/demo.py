"""The demo workspace: the support-ticket dataset (`curation/demo_data/`, also reached as
`data/demo/`), half-way through review.

The dataset is imported as pending; then, deterministically, about one example in seven of
each label moves to the eval split and about two in five of the rest are accepted, so the
Overview page shows a review in progress. The review guidelines (`guidelines.md`) and a
description of each label (`label_descriptions.json`) are saved first, so the decisions are
made under them and the Guidelines page has something to show. Three new, labelled tickets
without an answer
(`unanswered.jsonl`) come in last, with `--unanswered`: the prompts that need an answer,
which the Review queue "Needs answer" holds. Every change is an ordinary audited update by the
acting user (an admin: loading the demo is an import). What is planted in the data
(duplicates, mislabels, a thin label) is listed in `data/README.md`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from curation import guidelines
from curation.auth import User
from curation.importer import ImportReport, import_file
from curation.store import Store

DEMO_FILE = Path(__file__).resolve().parent / "demo_data" / "support_tickets.jsonl"
UNANSWERED_FILE = DEMO_FILE.with_name("unanswered.jsonl")
GUIDELINES_FILE = DEMO_FILE.with_name("guidelines.md")
LABEL_DESCRIPTIONS_FILE = DEMO_FILE.with_name("label_descriptions.json")


def load_demo(store: Store, *, user: User, path: Path = DEMO_FILE) -> ImportReport:
    """Import the demo dataset and bring it to a realistic mid-review state (an import:
    `user` must be an admin)."""
    if path == DEMO_FILE and guidelines.current(store) is None:
        guidelines.save(store, user, GUIDELINES_FILE.read_text(encoding="utf-8"),
                        note="the demo's guidelines")
        labels = json.loads(LABEL_DESCRIPTIONS_FILE.read_text(encoding="utf-8"))
        for label, (description, example) in labels.items():
            guidelines.set_label_description(store, user, label, description, example)
    report = import_file(store, path, source="demo", user=user)
    actor = user.name
    created = store.find()
    seen_per_label: dict[str | None, int] = {}
    for example in created:
        position = seen_per_label.get(example.label, 0)
        seen_per_label[example.label] = position + 1
        if position % 7 == 3:
            store.update(example.id, base_version=example.version, actor=actor, split="eval",
                         reason="demo: held out for evaluation")
        elif _fraction(example.external_id or str(example.id)) < 0.4:
            store.update(example.id, base_version=example.version, actor=actor,
                         status="accepted")
    if path == DEMO_FILE:
        import_file(store, UNANSWERED_FILE, source="demo", user=user, unanswered=True)
    return report


def _fraction(key: str) -> float:
    """A stable pseudo-random number in [0, 1) from a key."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x100000000
