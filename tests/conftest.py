"""Shared fixtures: stores of each shape, on real DuckDB files in a temporary folder."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from curate.ui.common import page_path as page  # noqa: F401  (AppTest.switch_page(page("review")))
from curation import Store, User, import_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_FILE = PROJECT_ROOT / "data" / "demo" / "support_tickets.jsonl"


def chat(user: str, assistant: str, system: str | None = None) -> list[dict[str, str]]:
    """A single-turn conversation as chat messages."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user},
                       {"role": "assistant", "content": assistant}]


def add_legacy(store: Store, messages: list[dict[str, str]], label: str | None = None) -> int:
    """Write an example with only the columns every schema since migration 2 has, as an older
    Curate did: how a test fills a workspace of an older schema (today's `Store.add` and
    import write today's columns). Returns its id."""
    from curation.formats import content_hash

    cur = store.cursor()
    (new_id,) = cur.execute("SELECT nextval('example_id_seq')").fetchone()
    cur.execute("INSERT INTO examples (id, messages, text, label, tags, split, status, "
                "content_hash, version, created_by, created_at, updated_by, updated_at, "
                "deleted) VALUES (?, ?, ?, ?, [], 'train', 'pending', ?, 1, 't', "
                "now()::TIMESTAMP, 't', now()::TIMESTAMP, false)",
                [new_id, orjson.dumps(messages).decode(),
                 "\n".join(m["content"] for m in messages), label, content_hash(messages)])
    return new_id


def admin(name: str) -> User:
    """An admin called `name`: who sets up test data (the CLI acts as one too)."""
    return User(name, "admin")


def unescaped(markdown: str) -> str:
    """A Markdown element's text as the reader sees it (pages escape data in Markdown, and
    put an invisible word joiner after ':', '@' and 'www')."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def write_jsonl(path: Path, records: list) -> Path:
    """Write records (dicts, or raw strings written as they are) one per line."""
    with open(path, "wb") as f:
        for record in records:
            f.write(record.encode() if isinstance(record, str) else orjson.dumps(record))
            f.write(b"\n")
    return path


@pytest.fixture
def file_store(tmp_path):
    """Factory for stores on DuckDB files under tmp_path; all are closed after the test."""
    opened = []

    def make(name: str = "curate.duckdb") -> Store:
        store = Store(tmp_path / "ws" / name)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def empty_store(file_store) -> Store:
    return file_store()


@pytest.fixture
def seeded_store(empty_store, tmp_path) -> Store:
    """Six examples over three labels, two of them in eval, all pending."""
    records = [
        {"id": f"ext-{i}", "messages": chat(f"question {i} about {label}", f"answer {i}"),
         "label": label, "tags": ["seed"]}
        for i, label in enumerate(["billing", "billing", "access", "access", "bugs", "bugs"])
    ]
    write_jsonl(tmp_path / "seed.jsonl", records[:4])
    write_jsonl(tmp_path / "seed_eval.jsonl", records[4:])
    import_file(empty_store, tmp_path / "seed.jsonl", user=admin("seeder"))
    import_file(empty_store, tmp_path / "seed_eval.jsonl", split="eval", user=admin("seeder"))
    return empty_store


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One converted copy of the packaged base model for the whole test session."""
    import os

    return Path(os.environ.get("CURATE_MODEL_CACHE") or tmp_path_factory.mktemp("models"))


TRAIN_EVAL_PAIRS = {  # (train prompt, eval prompt): an exact, a near and a same-meaning copy
    "exact": ("Where can I download my invoices?", "Where can I download my invoices?!?"),
    "near": ("How do I change the email address on my account?",
             "How do I change the email adress on my account, please?"),
    "semantic": ("I forgot my password and cannot log in",
                 "I can't log in because I forgot my password"),
}


def plant_train_eval_pairs(store: Store) -> dict[str, tuple[int, int]]:
    """A train copy and an eval copy of each kind in TRAIN_EVAL_PAIRS, plus unrelated train
    examples; {kind: (train id, eval id)}. Each eval copy is the older, accepted and longer
    one, so it is the train copy only by the rule that keeps train over eval."""
    answer = "Thanks for asking: here is how."
    ids = {kind: store.add(chat(evaluated, answer), actor="planter",
                           label="account", split="eval", status="accepted").id
           for kind, (_, evaluated) in TRAIN_EVAL_PAIRS.items()}
    for kind, (trained, _) in TRAIN_EVAL_PAIRS.items():
        ids[kind] = (store.add(chat(trained, answer), actor="planter", label="account").id,
                     ids[kind])
    for text in ("The app crashes when I open settings", "Can I get a refund for last month?",
                 "Do you integrate with Slack?"):
        store.add(chat(text, "Let me check."), actor="planter", label="other")
    return ids


def open_app_page(monkeypatch, store: Store, name: str, user: User, **query: str):
    """Page `name` of the app on `store` as `user`, with query parameters, after its first
    run in AppTest (which raised nothing)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CURATE_DB", str(store.path))
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = user
    at.query_params.update(query)
    at.switch_page(page(name)).run()
    assert not at.exception, at.exception
    return at


def shown_id(at) -> int:
    """The id of the example the Review page shows."""
    [head] = [s.value for s in at.subheader if s.value.startswith("Example #")]
    return int(head.removeprefix("Example #"))


@pytest.fixture
def review_page(monkeypatch):
    """Open the Review page as `user` (default a reviewer, rita) on `store`, optionally with
    query parameters."""
    def open_page(store: Store, user: User = User("rita", "reviewer"), **query: str):
        return open_app_page(monkeypatch, store, "review", user, **query)

    return open_page

