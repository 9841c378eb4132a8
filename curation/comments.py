"""Comments: a short thread per example (who, when, text), for reviewers to talk it over.

Design decisions:
- Any signed-in role may comment (`auth` action `comment`, from annotator up): a question
  about an example is as useful from the person who labels it as from the one who accepts it.
- A comment is kept with its author and time and is never edited or deleted; it is not a
  change to the example, so it bumps no version and writes no audit event (review activity
  and progress counts are about decisions and edits). A comment on an example that does not
  exist is refused (ExampleNotFound).
- Comments are searchable through the example filter (`ExampleFilter(comment="refund")`,
  `comment="*"` for any comment), so Browse, Review queues and exports select by them the
  same way as by any other criterion.
- Comment text is data: pages show it as text, never as Markdown or HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from curation.auth import User, require
from curation.errors import InvalidValue
from curation.store import Store, utcnow

MAX_COMMENT_CHARS = 2_000


@dataclass(frozen=True)
class Comment:
    """One comment on one example."""

    id: int
    example_id: int
    author: str
    at: datetime
    text: str

    def to_dict(self) -> dict:
        return {"id": self.id, "example_id": self.example_id, "author": self.author,
                "at": self.at.isoformat(), "text": self.text}


def add_comment(store: Store, user: User, example_id: int, text: str) -> Comment:
    """Add `text` to the thread of example `example_id`, as `user`."""
    require(user, "comment")
    text = (text or "").strip()
    if not text:
        raise InvalidValue("the comment is empty: write something first")
    if len(text) > MAX_COMMENT_CHARS:
        raise InvalidValue(f"the comment has {len(text):,} characters; at most "
                           f"{MAX_COMMENT_CHARS:,} (a short note; longer guidance belongs in "
                           "the guidelines)")
    store.get(example_id)  # ExampleNotFound, naming the id
    comment_id = store.insert_comment(example_id, user.name, utcnow(), text)
    return next(c for c in comments(store, example_id) if c.id == comment_id)


def comments(store: Store, example_id: int) -> list[Comment]:
    """The thread of one example, oldest first."""
    return [Comment(*row) for row in store.comment_rows(example_id)]


def comment_counts(store: Store, example_ids: list[int]) -> dict[int, int]:
    """{example id: number of comments} for those of `example_ids` that have any."""
    return store.comment_counts(example_ids) if example_ids else {}
