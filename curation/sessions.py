"""Sign-in sessions that survive a reload, and saved views (a named page state) per person.

Design decisions:
- A session token is 32 random bytes (`secrets.token_urlsafe`), handed to the browser once;
  the workspace keeps only its SHA-256 in the `sessions` table, with the account, the start,
  the expiry and the sign-out time. A random token looked up server-side, rather than an
  HMAC-signed one carrying its own claims, makes sign-out real (the row is revoked, so a copy
  of the cookie stops working at once), needs no secret to keep or rotate, and a stolen copy
  of the workspace file holds no usable token. A token changed in any character hashes to a
  row that does not exist, so tampering is refused like an unknown token.
- Sessions expire `SESSION_HOURS` (12) after sign-in, however busy: a fixed working day, not
  a sliding window, so a token copied once is useful for a bounded time. The role is read
  from the account on every resume, so a changed role applies on the next reload and a
  removed account cannot resume.
- No password ever reaches the browser's storage: the browser holds the token only.
- Saved views are rows `(owner, page, name, params)` where params are the values of the
  page's URL-bound widgets by key (filters, queue, sort), the state a shared link carries.
  Each person sees and changes only their own; saving a name again replaces it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from curation.auth import User, require
from curation.errors import InvalidValue, SessionInvalid, UnknownUser
from curation.store import Store, utcnow

SESSION_HOURS = 12
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32): 43 URL-safe characters
_FORGET_AFTER = timedelta(days=7)  # ended sessions are deleted this long after they ended
VIEW_PAGES = ("review", "browse")
MAX_VIEW_NAME = 80


@dataclass(frozen=True)
class Session:
    """A started session: the token the browser keeps, and when it stops working (UTC)."""

    token: str
    user: User
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(store: Store, user: User, *, hours: float = SESSION_HOURS,
                  now: datetime | None = None) -> Session:
    """A new session for a person who has just signed in with a local account."""
    if not isinstance(user, User):
        raise TypeError(f"a session is for a curation.auth.User, not {user!r}")
    if not store.user_exists(user.name):
        raise UnknownUser(f"no user is called {user.name!r}")
    if hours <= 0:
        raise InvalidValue(f"a session must last some time, not {hours} hours")
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(hours=hours)
    store.delete_sessions_before(now - _FORGET_AFTER)
    store.insert_session(_digest(token), user.name, now, expires)
    return Session(token, user, expires)


def resume_session(store: Store, token: str, *, now: datetime | None = None) -> User:
    """The account a session token belongs to, with its current role; SessionInvalid when the
    token is malformed, unknown, signed out or expired (the message says which)."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise SessionInvalid("the sign-in session token is malformed; sign in again")
    row = store.session_row(_digest(token))
    if row is None:
        raise SessionInvalid("the sign-in session is unknown to this workspace; sign in again")
    name, role, email, expires_at, revoked_at = row
    if revoked_at is not None:
        raise SessionInvalid(f"the sign-in session was signed out at "
                             f"{revoked_at:%Y-%m-%d %H:%M} UTC; sign in again")
    if expires_at <= (now or utcnow()):
        raise SessionInvalid(f"the sign-in session expired at {expires_at:%Y-%m-%d %H:%M} UTC "
                             f"(sessions last {SESSION_HOURS} hours); sign in again")
    return User(name, role, email)


def end_session(store: Store, token: str, *, now: datetime | None = None) -> bool:
    """Sign a session out for good: its token no longer resumes. False when it was not open
    (unknown, malformed or already signed out)."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        return False
    return store.revoke_session(_digest(token), now or utcnow())


def end_user_sessions(store: Store, user: User, name: str) -> int:
    """Sign every session of account `name` out (an admin's action, for a lost laptop or a
    removed person); how many were open."""
    require(user, "manage_users")
    if not store.user_exists(name):
        raise UnknownUser(f"no user is called {name!r}")
    return store.revoke_user_sessions(name, utcnow())


def open_sessions(store: Store, user: User) -> list[dict]:
    """Who is signed in now: user, started and expires (UTC), newest first (admins only)."""
    require(user, "manage_users")
    return [{"user": n, "started": c, "expires": e} for n, c, e in store.open_sessions(utcnow())]


# --- saved views ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SavedView:
    """A person's named page state: `page`'s bound widget values by key (filters, queue...)."""

    page: str
    name: str
    params: dict[str, str | list[str]]
    saved_at: datetime


def _check_page(page: str) -> None:
    if page not in VIEW_PAGES:
        raise InvalidValue(f"saved views are for the pages {', '.join(VIEW_PAGES)}, "
                           f"not {page!r}")


def _clean_params(params: dict) -> dict[str, str | list[str]]:
    clean: dict[str, str | list[str]] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise InvalidValue(f"a saved view's parameter names are text, not {key!r}")
        if isinstance(value, str):
            clean[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            clean[key] = list(value)
        else:
            raise InvalidValue(f"saved view parameter {key!r}: a value is text or a list of "
                               f"texts, not {value!r}")
    return clean


def save_view(store: Store, user: User, page: str, name: str,
              params: dict[str, str | list[str]]) -> SavedView:
    """Save (or replace) `user`'s view `name` of `page`: widget key -> text or list of text."""
    require(user, "view")
    _check_page(page)
    name = " ".join(str(name).split())
    if not name:
        raise InvalidValue("a saved view needs a name")
    if len(name) > MAX_VIEW_NAME:
        raise InvalidValue(f"a saved view's name has at most {MAX_VIEW_NAME} characters, "
                           f"not {len(name)}")
    clean = _clean_params(params)
    now = utcnow()
    store.put_saved_view(user.name, page, name, orjson.dumps(clean).decode(), now)
    return SavedView(page, name, clean, now)


def saved_views(store: Store, user: User, page: str | None = None) -> list[SavedView]:
    """`user`'s own saved views (of one page, or all), by page and name."""
    require(user, "view")
    if page is not None:
        _check_page(page)
    return [SavedView(p, n, orjson.loads(params), at)
            for p, n, params, at in store.saved_view_rows(user.name, page)]


def delete_view(store: Store, user: User, page: str, name: str) -> None:
    """Delete `user`'s view `name` of `page`; InvalidValue when they have none so named."""
    require(user, "view")
    _check_page(page)
    if not store.delete_saved_view(user.name, page, name):
        raise InvalidValue(f"you have no saved view called {name!r} on {page}")
