"""Curate's Streamlit entry point: sign-in, then page navigation over the workspace.

`curate app` runs `run_app()` through `curate/ui/entry/curate_app.py`, a script alone in
its folder (Streamlit puts that folder first on sys.path, where a page module such as
`training.py` would shadow the package of the same name); in a checkout,
`streamlit run app.py` runs the same `run_app()`. Pages are named by absolute path
(`page_path`), so navigation works from either entry script.
The workspace is the DuckDB file named by $CURATE_DB (`curate app --db PATH` sets it).
Sign-in, in order of precedence:
- single-user mode (`curate app --single-user`): no sign-in, one local admin; every page says so;
- OpenID Connect via `st.login` when the workspace's `.streamlit/secrets.toml` has an [auth]
  section; the e-mail address the provider returns must belong to a user of the workspace;
- otherwise local accounts (`curate user add NAME --role ROLE`). There are no default accounts.
  Failed sign-ins are throttled per name and per client address (`curation.auth`). A local
  sign-in starts a session (`curation.sessions`) kept in a cookie, so a reload stays signed
  in for 12 hours; Sign out revokes it server-side (`curate.ui.url_state`). A link opened while
  signed out (`/review?id=430`) is followed after the sign-in.
Pages live in `curate/ui/` and stay thin: they gather input, call `curation`, and render the result.
"""

from pathlib import Path

import duckdb
import streamlit as st

import curation.checks  # noqa: F401  (registers the quality review queues)
from curate.ui import url_state
from curate.ui.common import get_store, listen_address, page_path, plain, single_user_mode
from curation import CurateError
from curation._files import private_umask
from curation.auth import User, sign_in, user_by_email, users
from curation.store import is_damage, store_error

ICON = Path(__file__).parent / "assets" / "icon.png"  # local: no request leaves the host


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except FileNotFoundError:
        return False


def _client() -> str:
    """Who is signing in, for throttling failures: the connection's address (the TCP peer;
    every local browser is one client)."""
    return st.context.ip_address or "localhost"


def _sign_in_form(store) -> None:
    url_state.remember_link()
    url_state.clear_cookie()
    st.title("Sign in to Curate")
    if url_state.ended_reason():
        st.info(plain(url_state.ended_reason()), icon=":material/logout:")
    if not users(store):
        st.warning("This workspace has no accounts yet. An admin creates one with "
                   "`curate user add NAME --role admin`, or starts the app with "
                   "`curate app --single-user` to work alone.")
        st.stop()
    with st.form("sign_in", border=True, width=420):
        name = st.text_input("User name")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in", type="primary"):
            try:
                st.session_state.user = sign_in(store, name, password, client=_client())
                url_state.start(store, st.session_state.user)
                st.rerun()
            except CurateError as exc:
                st.error(plain(exc))
    st.stop()


def _authenticate(store) -> User:
    if single_user_mode():
        return User("local", "admin")
    if st.session_state.get("user") is not None and not st.session_state.get("curate_session"):
        return st.session_state.user  # signed in with the identity provider
    if _oidc_configured():
        if not st.user.is_logged_in:
            st.title("Sign in to Curate")
            st.button("Sign in with your identity provider", on_click=st.login, type="primary")
            st.stop()
        try:
            return user_by_email(store, st.user.email)
        except CurateError as exc:
            st.error(plain(exc))
            st.button("Sign out", on_click=st.logout)
            st.stop()
    user = url_state.resume(store)  # this tab's session, checked on every run, or the cookie's
    if user is not None:
        return user
    _sign_in_form(store)


def run_app() -> None:
    """Sign in, then show the pages this user's role may open (runs on every rerun)."""
    private_umask()  # what the app writes (store WAL, exports, runs) is the user's alone
    st.set_page_config(page_title="Curate", page_icon=str(ICON), layout="wide")
    store = get_store()
    user = st.session_state.user = _authenticate(store)

    with st.sidebar:
        if single_user_mode():
            st.warning(f"Single-user mode: no sign-in; every action is recorded as 'local' "
                       f"(admin). Listening on {listen_address()}.", icon=":material/person:")
        else:
            st.caption(f"Signed in as **{plain(user.name)}** ({user.role})")
            if st.button("Sign out", icon=":material/logout:"):
                url_state.sign_out(store)
                st.session_state.user = None
                if _oidc_configured():
                    st.logout()
                st.rerun()

    pages = {
        "Workspace": [
            st.Page(page_path("overview"), title="Overview", icon=":material/dashboard:",
                    default=True),
            st.Page(page_path("review"), title="Review", icon=":material/rate_review:"),
            st.Page(page_path("browse"), title="Browse", icon=":material/table_rows:"),
            st.Page(page_path("guidelines"), title="Guidelines", icon=":material/menu_book:"),
        ],
        "Quality": [
            st.Page(page_path("quality"), title="Quality", icon=":material/cleaning_services:"),
            st.Page(page_path("coverage"), title="Coverage", icon=":material/map:"),
        ],
    }
    if user.can("import"):
        pages["Data"] = [st.Page(page_path("import_export"), title="Import / Export",
                                 icon=":material/swap_vert:")]
    if user.can("train"):
        pages["Training"] = [
            st.Page(page_path("training"), title="Training", icon=":material/model_training:"),
            st.Page(page_path("evaluation"), title="Evaluation", icon=":material/scoreboard:"),
        ]
    navigation = st.navigation(pages)
    url_state.follow_link([p for group in pages.values() for p in group])
    if not single_user_mode():
        with st.sidebar:
            url_state.keep_cookie()
    try:
        navigation.run()
    except duckdb.Error as exc:  # damage that a page's query found after the file opened
        if not is_damage(exc):
            raise
        st.error(plain(store_error(store.path, exc)), icon=":material/error:")
