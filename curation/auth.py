"""People, roles and what each role may do, checked in the core for every action.

Design decisions:
- Three roles, each including the one before: annotator (edit, propose), reviewer (also
  accept, reject, needs work, revert), admin (also import, export, delete, manage users, train,
  back up and repair the workspace).
  `require(user, action)` is called by the core functions themselves (`curation.review`), so a
  forged request that bypasses the page's hidden buttons is still refused.
- Local accounts live in the workspace's `users` table with argon2id password hashes
  (argon2-cffi). There are no default accounts: `curate user add NAME --role ROLE` creates one.
- With an OpenID Connect provider (`st.login`), people are matched to a row of `users` by
  e-mail address; the row gives their role.
"""

from __future__ import annotations

from dataclasses import dataclass

from curation.errors import CurateError, InvalidValue
from curation.store import Store, utcnow

ROLES: tuple[str, ...] = ("annotator", "reviewer", "admin")
_MINIMUM_ROLE = {
    "view": "annotator", "edit": "annotator", "skip": "annotator",
    "decide": "reviewer", "revert": "reviewer",
    "import": "admin", "export": "admin", "delete": "admin", "manage_users": "admin",
    "train": "admin", "maintain": "admin",
}
ACTIONS: tuple[str, ...] = tuple(_MINIMUM_ROLE)
MIN_PASSWORD_CHARS = 8


class PermissionDenied(CurateError):
    """The user's role does not allow the action."""


class UnknownUser(CurateError):
    """No account has that name or e-mail address, or the password is wrong."""


@dataclass(frozen=True)
class User:
    """A signed-in person: the name recorded in the audit log and their role."""

    name: str
    role: str
    email: str | None = None

    def can(self, action: str) -> bool:
        if action not in _MINIMUM_ROLE:
            raise InvalidValue(f"unknown action {action!r}")
        return ROLES.index(self.role) >= ROLES.index(_MINIMUM_ROLE[action])


def min_role(action: str) -> str:
    """The lowest role that may do `action`."""
    if action not in _MINIMUM_ROLE:
        raise InvalidValue(f"unknown action {action!r}")
    return _MINIMUM_ROLE[action]


def require(user: User, action: str) -> None:
    """Raise PermissionDenied unless `user` may do `action`."""
    if not user.can(action):
        raise PermissionDenied(f"{user.name} is {_article(user.role)} {user.role}; "
                               f"'{action}' needs the {_MINIMUM_ROLE[action]} role or higher")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def add_user(store: Store, name: str, role: str, *, password: str | None = None,
             email: str | None = None) -> User:
    """Create an account; local sign-in needs a password, OIDC sign-in an e-mail address."""
    name = name.strip()
    if not name or any(c.isspace() for c in name):
        raise InvalidValue("a user name must be one word, without spaces")
    if role not in ROLES:
        raise InvalidValue(f"role {role!r} is not one of {', '.join(ROLES)}")
    if password is None and not email:
        raise InvalidValue("give a password (local sign-in) or an e-mail address (single "
                           "sign-on), or both")
    if password is not None and len(password) < MIN_PASSWORD_CHARS:
        raise InvalidValue(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    cur = store.cursor()
    if cur.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
        raise InvalidValue(f"user {name!r} already exists")
    hashed = _hasher().hash(password) if password is not None else None
    cur.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                [name, role, (email or "").strip().lower() or None, hashed, utcnow()])
    return User(name, role, email)


def set_role(store: Store, name: str, role: str) -> User:
    if role not in ROLES:
        raise InvalidValue(f"role {role!r} is not one of {', '.join(ROLES)}")
    row = store.cursor().execute("UPDATE users SET role = ? WHERE name = ? RETURNING name, "
                                 "role, email", [role, name]).fetchone()
    if row is None:
        raise UnknownUser(f"no user is called {name!r}")
    return User(*row)


def users(store: Store) -> list[User]:
    rows = store.cursor().execute("SELECT name, role, email FROM users ORDER BY name").fetchall()
    return [User(*r) for r in rows]


def sign_in(store: Store, name: str, password: str) -> User:
    """The local account for name and password, or UnknownUser (same message either way)."""
    from argon2.exceptions import VerificationError

    row = store.cursor().execute("SELECT name, role, email, password_hash FROM users "
                                 "WHERE name = ?", [name.strip()]).fetchone()
    try:
        if row is None or row[3] is None:
            raise VerificationError
        _hasher().verify(row[3], password)
    except VerificationError:
        raise UnknownUser("unknown user name or wrong password") from None
    return User(*row[:3])


def user_by_email(store: Store, email: str) -> User:
    """The account an identity provider's e-mail address is assigned to."""
    row = store.cursor().execute("SELECT name, role, email FROM users WHERE email = ?",
                                 [email.strip().lower()]).fetchone()
    if row is None:
        raise UnknownUser(f"{email} has no role in this workspace; an admin can add it with "
                          f"`curate user add NAME --role ROLE --email {email}`")
    return User(*row)
