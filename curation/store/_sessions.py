"""Sign-in sessions and saved views: what `curation.sessions` reads and writes.

Sessions are keyed by the SHA-256 of their token (the token itself is never stored); a row
names the account, when the session started and expires, and when it was signed out. Saved
views are rows `(owner, page, name, params JSON)`; saving a name again replaces the view in
one transaction. The store checks nothing: `curation.sessions` decides.
"""

from __future__ import annotations

from datetime import datetime


class SessionQueries:
    """The `sessions` and `saved_views` tables (mixed into `Store`)."""

    def insert_session(self, token_hash: str, user_name: str, created_at: datetime,
                       expires_at: datetime) -> None:
        self.cursor().execute("INSERT INTO sessions VALUES (?, ?, ?, ?, NULL)",
                              [token_hash, user_name, created_at, expires_at])

    def session_row(self, token_hash: str) -> tuple | None:
        """(name, role, email, expires_at, revoked_at) of the session with this token hash,
        joined with its account (None when either is missing)."""
        return self.cursor().execute(
            "SELECT u.name, u.role, u.email, s.expires_at, s.revoked_at FROM sessions s "
            "JOIN users u ON u.name = s.user_name WHERE s.token_hash = ?",
            [token_hash]).fetchone()

    def revoke_session(self, token_hash: str, at: datetime) -> bool:
        """Mark one session signed out; False when no open session has this hash."""
        return self.cursor().execute(
            "UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL "
            "RETURNING 1", [at, token_hash]).fetchone() is not None

    def revoke_user_sessions(self, user_name: str, at: datetime) -> int:
        """Sign out every open session of one account; how many were open."""
        return len(self.cursor().execute(
            "UPDATE sessions SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL "
            "RETURNING 1", [at, user_name]).fetchall())

    def delete_sessions_before(self, cutoff: datetime) -> int:
        """Forget sessions that expired (or were signed out) before `cutoff`."""
        return len(self.cursor().execute(
            "DELETE FROM sessions WHERE expires_at < ? OR revoked_at < ? RETURNING 1",
            [cutoff, cutoff]).fetchall())

    def open_sessions(self, now: datetime) -> list[tuple]:
        """(user name, created_at, expires_at) of every session neither expired nor signed
        out, newest first."""
        return self.cursor().execute(
            "SELECT user_name, created_at, expires_at FROM sessions WHERE revoked_at IS NULL "
            "AND expires_at > ? ORDER BY created_at DESC", [now]).fetchall()

    # --- saved views ------------------------------------------------------------------------

    def put_saved_view(self, owner: str, page: str, name: str, params: str,
                       saved_at: datetime) -> None:
        with self.transaction() as cur:
            cur.execute("DELETE FROM saved_views WHERE owner = ? AND page = ? AND name = ?",
                        [owner, page, name])
            cur.execute("INSERT INTO saved_views VALUES (?, ?, ?, ?, ?)",
                        [owner, page, name, params, saved_at])

    def saved_view_rows(self, owner: str, page: str | None = None) -> list[tuple]:
        """(page, name, params JSON, saved_at) of one person's views, by page and name."""
        return self.cursor().execute(
            "SELECT page, name, params, saved_at FROM saved_views WHERE owner = ? "
            "AND (? IS NULL OR page = ?) ORDER BY page, name",
            [owner, page, page]).fetchall()

    def delete_saved_view(self, owner: str, page: str, name: str) -> bool:
        return self.cursor().execute(
            "DELETE FROM saved_views WHERE owner = ? AND page = ? AND name = ? RETURNING 1",
            [owner, page, name]).fetchone() is not None
