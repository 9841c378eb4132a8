"""People, roles and what each role may do, checked in the core for every action.

Design decisions:
- Three roles, each including the one before: annotator (edit, propose), reviewer (also
  accept, reject, needs work, revert, run the checks, set coverage targets), admin (also
  import, export, delete, manage users, train, back up and repair the workspace, edit the
  guidelines and label descriptions, set the review overlap and settle disputed examples in
  adjudication). Every role may comment on examples.
- Every mutating core function takes the acting `User` (right after the store, or first when
  it has none; keyword-only where an `actor=` name used to be) and calls `require(user,
  action)` itself, so a forged request or a script that bypasses the page's hidden buttons is
  still refused. The audit actor is `user.name`. `Store`'s own methods are the layer below:
  they record the name they are given and check nothing. The CLI acts as a local admin.
- Local accounts live in the workspace's `users` table with argon2id password hashes
  (argon2-cffi). There are no default accounts: `curate user add NAME --role ROLE` creates one.
- Sign-in takes as long for an unknown name (or an account without a password) as for a wrong
  password: the password is verified against a dummy hash, so names cannot be enumerated by
  timing. Failures are counted per name and per client (`SignInThrottle`, in the server
  process): after `max_failures` in a row the name or client is locked out for a minute,
  doubling for each further lock-out up to 15 minutes; every lock-out expires, a successful
  sign-in clears the name's count, and the message says when to try again.
- With an OpenID Connect provider (`st.login`), people are matched to a row of `users` by
  e-mail address; the row gives their role.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from curation.errors import InvalidValue, PermissionDenied, TooManySignIns, UnknownUser
from curation.store import Store, utcnow
from curation.text import duration

ROLES: tuple[str, ...] = ("annotator", "reviewer", "admin")
_MINIMUM_ROLE = {
    "view": "annotator", "edit": "annotator", "skip": "annotator",
    "decide": "reviewer", "revert": "reviewer",
    "check": "reviewer", "set_targets": "reviewer",
    "import": "admin", "export": "admin", "delete": "admin", "manage_users": "admin",
    "train": "admin", "maintain": "admin",
    "comment": "annotator", "edit_guidelines": "admin",
    "set_overlap": "admin", "adjudicate": "admin",  # overlap for agreement (curation.agreement)
}
ACTIONS: tuple[str, ...] = tuple(_MINIMUM_ROLE)
MIN_PASSWORD_CHARS = 8


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
    if not isinstance(user, User):
        raise TypeError(f"the acting user must be a curation.auth.User, not {user!r}")
    if not user.can(action):
        raise PermissionDenied(f"{user.name} is {_article(user.role)} {user.role}; "
                               f"'{action}' needs the {_MINIMUM_ROLE[action]} role or higher")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def add_user(store: Store, user: User, name: str, role: str, *, password: str | None = None,
             email: str | None = None) -> User:
    """Create an account; local sign-in needs a password, OIDC sign-in an e-mail address."""
    require(user, "manage_users")
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
    if store.user_exists(name):
        raise InvalidValue(f"user {name!r} already exists")
    hashed = _hasher().hash(password) if password is not None else None
    store.insert_user(name, role, (email or "").strip().lower() or None, hashed, utcnow())
    return User(name, role, email)


def set_role(store: Store, user: User, name: str, role: str) -> User:
    """Change the role of account `name`."""
    require(user, "manage_users")
    if role not in ROLES:
        raise InvalidValue(f"role {role!r} is not one of {', '.join(ROLES)}")
    row = store.set_user_role(name, role)
    if row is None:
        raise UnknownUser(f"no user is called {name!r}")
    return User(*row)


def users(store: Store) -> list[User]:
    return [User(*r) for r in store.user_rows()]


class SignInThrottle:
    """Failed sign-ins per key ("name:..." and "client:..."), with expiring lock-outs.

    A key with `max_failures` failures in a row is locked for `lockout` seconds; each further
    lock-out of the same key doubles it, up to `max_lockout`. A key without a failure for
    `forget_after` seconds starts afresh. `clock` (seconds, monotonic) is injectable for tests.
    """

    MAX_KEYS = 100_000  # beyond this, forgotten keys are pruned, then the oldest ones

    def __init__(self, *, max_failures: int = 10, lockout: float = 60.0,
                 max_lockout: float = 900.0, forget_after: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.max_failures, self.lockout, self.max_lockout = max_failures, lockout, max_lockout
        self.forget_after, self.clock = forget_after, clock
        self._keys: dict[str, list[float]] = {}  # key -> [failures, lock-outs, until, last]
        self._lock = threading.Lock()

    @staticmethod
    def keys(name: str, client: str | None) -> list[str]:
        return [f"name:{name.strip().casefold()}"] + ([f"client:{client}"] if client else [])

    def check(self, keys: list[str]) -> None:
        """Raise TooManySignIns while any of `keys` is locked out."""
        now = self.clock()
        with self._lock:
            waits = {k: self._keys[k][2] - now for k in keys
                     if k in self._keys and self._keys[k][2] > now}
        if waits:
            key = max(waits, key=waits.get)
            what = "for this user name" if key.startswith("name:") else "from this address"
            wait = math.ceil(waits[key])
            at = datetime.now(UTC) + timedelta(seconds=wait)
            raise TooManySignIns(f"too many failed sign-ins {what}; try again in "
                                 f"{duration(wait)} (after {at:%H:%M:%S} UTC)", wait)

    def failed(self, keys: list[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                record = self._keys.get(key)
                if record is None or now - record[3] > self.forget_after:
                    record = self._keys[key] = [0, 0, 0.0, now]
                record[0] += 1
                record[3] = now
                if record[0] >= self.max_failures:
                    record[2] = now + min(self.lockout * 2 ** record[1], self.max_lockout)
                    record[0], record[1] = 0, record[1] + 1
            if len(self._keys) > self.MAX_KEYS:
                self._prune(now)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in [k for k, r in self._keys.items()
                    if now - r[3] > self.forget_after and r[2] <= now]:
            del self._keys[key]
        excess = len(self._keys) - self.MAX_KEYS
        if excess > 0:
            for key in sorted(self._keys, key=lambda k: self._keys[k][3])[:excess]:
                del self._keys[key]


SIGN_IN_THROTTLE = SignInThrottle()  # one per server process


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, verified when a name has none: same time, never a match."""
    import secrets

    return _hasher().hash(secrets.token_urlsafe(16))


def sign_in(store: Store, name: str, password: str, *, client: str | None = None,
            throttle: SignInThrottle | None = None) -> User:
    """The local account for name and password, or UnknownUser (same message and about the
    same time either way); TooManySignIns while the name or `client` is locked out."""
    from argon2.exceptions import VerificationError

    throttle = throttle or SIGN_IN_THROTTLE
    keys = throttle.keys(name, client)
    throttle.check(keys)
    row = store.user_credentials(name.strip())
    stored = row[3] if row is not None and row[3] is not None else None
    try:
        _hasher().verify(stored or _dummy_hash(), password)
        if stored is None:
            raise VerificationError
    except VerificationError:
        throttle.failed(keys)
        raise UnknownUser("unknown user name or wrong password") from None
    throttle.succeeded(keys[:1])
    return User(*row[:3])


def user_by_email(store: Store, email: str) -> User:
    """The account an identity provider's e-mail address is assigned to."""
    row = store.user_with_email(email.strip().lower())
    if row is None:
        raise UnknownUser(f"{email} has no role in this workspace; an admin can add it with "
                          f"`curate user add NAME --role ROLE --email {email}`")
    return User(*row)
