"""What survives a reload: the sign-in cookie, the deep link through sign-in, the page's state
in the URL, and saved views.

Design decisions:
- The session token (`curation.sessions`) travels in a cookie, `curate_session`, set by a few
  lines of JavaScript in `st.html` (Streamlit has no API to set a cookie and serves no route
  of ours; `st.html` runs in the page itself, offline, unlike an iframed component). The
  server reads it with `st.context.cookies` when a browser tab connects. The cookie is
  `SameSite=Strict` (never sent on a request another site starts), `Path=/`, `Secure` on
  HTTPS, and expires with the session. It cannot be HttpOnly, since script sets it; that is
  acceptable because the token is random, carries no password, expires, is revoked
  server-side at sign-out, and the pages never render data as HTML, so no injected script
  can read it. Every rerun checks the token again (one lookup by key), so a sign-out in one
  tab, an expiry or a revoked session signs every other tab out at its next click.
- A deep link (`/review?id=430&queue=flagged`) opened while signed out is remembered (page
  and query parameters) before the sign-in form; after sign-in the app switches to it.
- Page state lives in the URL through Streamlit's `bind="query-params"`: each filter,
  the queue and Browse's sort and page size are bound widgets, so their values are query
  parameters that a reload or a shared link restores, and `persist_state="session"` keeps
  them across page switches. A parameter is named by its widget's key (`?review_label=...`);
  a select box's value is its shown text (`?rv_queue=All+examples`). Review's position is
  `?id=N`, as before.
- A saved view is the page's bound widget values under a name (`curation.sessions`);
  opening one sets those widgets' values (a bound widget is changed through session state,
  never `st.query_params`), so it behaves exactly like opening its link.
"""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlsplit

import streamlit as st
from streamlit.errors import StreamlitAPIException

from curate.ui.common import plain
from curation import CurateError, Store
from curation.auth import User
from curation.sessions import end_session, resume_session, start_session

COOKIE = "curate_session"
S = st.session_state
_LINK_KEY = "curate_after_sign_in"  # (page url path, query params) of a link opened signed out


# --- the session cookie ---------------------------------------------------------------------

def _cookie_script(value: str, expires: str) -> str:
    # json.dumps quotes and escapes; the token is URL-safe base64, never user data
    return ("<script>document.cookie = " + json.dumps(
        f"{COOKIE}={value}; Path=/; SameSite=Strict; Expires={expires}")
        + " + (location.protocol === 'https:' ? '; Secure' : '');</script>")


def _write_cookie(value: str, expires: datetime | None) -> None:
    when = (expires.strftime("%a, %d %b %Y %H:%M:%S GMT") if expires
            else "Thu, 01 Jan 1970 00:00:00 GMT")
    with st.container(height=1, border=False, key="curate_cookie"):
        st.html(_cookie_script(value, when), unsafe_allow_javascript=True)


def start(store: Store, user: User) -> None:
    """After a local sign-in: a new session, its token kept for this tab and the cookie."""
    session = start_session(store, user)
    S.curate_session = (session.token, session.expires_at)
    S.curate_session_ended = None


def resume(store: Store) -> User | None:
    """The person this tab's session (or, on a fresh tab, the browser's cookie) belongs to;
    None when there is none or it no longer holds (the reason is kept for the sign-in form)."""
    token = (S.get("curate_session") or (None, None))[0]
    if token is None and S.get("curate_session_ended") != "":  # not after our own sign-out
        token = st.context.cookies.get(COOKIE)
    if not token:
        return None
    try:
        user = resume_session(store, token)
    except CurateError as exc:
        S.curate_session = S.user = None  # the tab's sign-in ends with its session
        S.curate_session_ended = str(exc)
        return None
    if not S.get("curate_session"):
        S.curate_session = (token, None)
    return user


def keep_cookie() -> None:
    """While signed in: make sure the browser holds this session's cookie (set once after
    sign-in; a resumed session's cookie is already there)."""
    session = S.get("curate_session")
    if session and session[1] is not None:
        _write_cookie(*session)


def clear_cookie() -> None:
    """On the sign-in page: drop any cookie left (signed out, expired or revoked)."""
    if st.context.cookies.get(COOKIE) or S.get("curate_session_ended") is not None:
        _write_cookie("", None)


def sign_out(store: Store) -> None:
    """Revoke this tab's session server-side; the sign-in page then clears the cookie."""
    session = S.get("curate_session")
    if session:
        end_session(store, session[0])
    S.curate_session = None
    S.curate_session_ended = ""


def ended_reason() -> str | None:
    """Why this tab's last session stopped (expired, signed out elsewhere), shown on the
    sign-in page; '' after this tab's own sign-out, None when none stopped."""
    return S.get("curate_session_ended")


# --- a deep link through the sign-in ----------------------------------------------------------

def remember_link() -> None:
    """On the sign-in page: remember which page and query parameters the browser asked for."""
    if _LINK_KEY in S:
        return
    path = urlsplit(st.context.url or "").path.strip("/").rsplit("/", 1)[-1]
    params = {k: st.query_params.get_all(k) for k in st.query_params}
    if path or params:
        S[_LINK_KEY] = (path, params)


def follow_link(pages: list) -> None:
    """Right after sign-in: switch to the page the remembered link named, with its query
    parameters (call after `st.navigation`)."""
    link = S.pop(_LINK_KEY, None)
    if not link:
        return
    path, params = link
    for page in pages:
        if page.url_path == path:
            st.switch_page(page, query_params=params)
    try:  # a page this role may not open: its parameters on the default page
        st.query_params.from_dict(params)
    except StreamlitAPIException:
        pass  # a parameter bound to a widget or reserved: the link's parameters are dropped


# --- saved views ----------------------------------------------------------------------------

def _as_param(value) -> str | list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value).lower() if isinstance(value, bool) else str(value)


def view_params(keys: list[str], defaults: dict) -> dict[str, str | list[str]]:
    """The page's bound widget values that differ from their defaults, as query parameters."""
    return {k: _as_param(S[k]) for k in keys
            if k in S and S[k] != defaults.get(k) and S[k] is not None}


def _open_view(keys: list[str], params: dict, defaults: dict) -> None:
    for key in keys:
        value = params.get(key, defaults.get(key))
        if isinstance(defaults.get(key), list) and isinstance(value, str):
            value = [value]
        elif isinstance(defaults.get(key), bool) and isinstance(value, str):
            value = value.lower() in ("true", "1")
        elif isinstance(defaults.get(key), int) and isinstance(value, str) and value.isdigit():
            value = int(value)
        S[key] = value


def saved_views_panel(ws, page: str, defaults: dict) -> None:
    """Sidebar: open one of my saved views of this page, save the current one, delete one.
    `defaults`: the page's bound widget keys, each with its value when nothing is filtered."""
    keys = list(defaults)
    with st.sidebar.expander("Saved views", icon=":material/bookmarks:"):
        views = {v.name: v for v in ws.saved_views(page)}
        if views:
            name = st.selectbox("My views", list(views), key=f"{page}_view_pick")
            row = st.container(horizontal=True, gap="small")
            row.button("Open", key=f"{page}_view_open", icon=":material/open_in_new:",
                       on_click=_open_view, args=(keys, views[name].params, defaults))
            if row.button("Delete", key=f"{page}_view_delete", icon=":material/delete:"):
                ws.delete_view(page, name)
                st.rerun()
        else:
            st.caption("No saved views yet: set the filters, then save them under a name.")
        new = st.text_input("Save the current filters as", key=f"{page}_view_name",
                            placeholder="a name, e.g. Billing to re-check")
        if st.button("Save view", key=f"{page}_view_save", icon=":material/bookmark_add:",
                     disabled=not new.strip()):
            try:
                saved = ws.save_view(page, new, view_params(keys, defaults))
            except CurateError as exc:
                st.error(plain(exc), icon=":material/error:")
            else:
                st.toast(plain(f"Saved view {saved.name!r}"), icon=":material/bookmark_added:")
