"""Accounts in the `users` table: what `curation.auth` reads and writes.

Rows go in and out as plain tuples `(name, role, email)` (with the password hash where
sign-in needs it); `curation.auth` makes them `User`s and decides who may do what, so the
store knows nothing of roles' meaning or of password hashing.
"""

from __future__ import annotations

from datetime import datetime


class UserQueries:
    """The `users` table (mixed into `Store`)."""

    def user_exists(self, name: str) -> bool:
        return self.cursor().execute("SELECT 1 FROM users WHERE name = ?",
                                     [name]).fetchone() is not None

    def insert_user(self, name: str, role: str, email: str | None, password_hash: str | None,
                    created_at: datetime) -> None:
        self.cursor().execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                              [name, role, email, password_hash, created_at])

    def set_user_role(self, name: str, role: str) -> tuple | None:
        """(name, role, email) after the change, or None when no account is called `name`."""
        return self.cursor().execute("UPDATE users SET role = ? WHERE name = ? RETURNING name, "
                                     "role, email", [role, name]).fetchone()

    def user_rows(self) -> list[tuple]:
        """(name, role, email) of every account, by name."""
        return self.cursor().execute(
            "SELECT name, role, email FROM users ORDER BY name").fetchall()

    def user_credentials(self, name: str) -> tuple | None:
        """(name, role, email, password hash) of account `name`, or None."""
        return self.cursor().execute("SELECT name, role, email, password_hash FROM users "
                                     "WHERE name = ?", [name]).fetchone()

    def user_with_email(self, email: str) -> tuple | None:
        """(name, role, email) of the account with this (lower-case) e-mail, or None."""
        return self.cursor().execute("SELECT name, role, email FROM users WHERE email = ?",
                                     [email]).fetchone()
