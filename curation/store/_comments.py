"""Comments on examples: a short thread per example, each with its author and time.

`curation.comments` checks who may comment and what a comment may hold; this module only
reads and writes rows. A comment is not a change to the example: it bumps no version and
writes no audit event (so it never counts as review activity), but its row keeps who wrote
it and when, and rows are only ever added. Searching by comment text is part of the example
filter (`_filters.where_clause`, `ExampleFilter.comment`).
"""

from __future__ import annotations

from datetime import datetime


class CommentQueries:
    """The `comments` table (mixed into `Store`)."""

    def insert_comment(self, example_id: int, author: str, created_at: datetime,
                       text: str) -> int:
        """Store one comment; its id."""
        return self.cursor().execute(
            "INSERT INTO comments VALUES (nextval('comment_id_seq'), ?, ?, ?, ?) RETURNING id",
            [example_id, author, created_at, text]).fetchone()[0]

    def comment_rows(self, example_id: int) -> list[tuple]:
        """(id, example_id, author, created_at, text) of one example's comments, oldest
        first."""
        return self.cursor().execute(
            "SELECT id, example_id, author, created_at, text FROM comments "
            "WHERE example_id = ? ORDER BY id", [example_id]).fetchall()

    def comment_counts(self, example_ids: list[int]) -> dict[int, int]:
        """{example id: number of comments} of the given examples that have any."""
        return dict(self.cursor().execute(
            "SELECT example_id, count(*) FROM comments "
            "WHERE list_contains(?::BIGINT[], example_id) GROUP BY example_id",
            [list(example_ids)]).fetchall())
