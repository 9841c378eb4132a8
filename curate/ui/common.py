"""What every page shares: the process-wide store, the signed-in user, filters, messages.

Pages call only `curation` functions; everything here is presentation. Text from the data is
always rendered as text (`st.text`, `st.code`, widget values, dataframes), never as Markdown
or HTML, so `<script>` or `![](http://...)` in an example shows literally and fetches nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import streamlit as st

from curate.workspace import Workspace
from curation import SPLITS, STATUSES, CurateError, ExampleFilter, Store, default_db_path
from curation.auth import User

SINGLE_USER_ENV = "CURATE_SINGLE_USER"
PAGES_DIR = Path(__file__).resolve().parent
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&=^\"'])")
_WORD_JOINER = "\u2060"  # invisible; breaks :shortcodes:, :material/icons: and autolinks


def plain(text: object) -> str:
    """Text that Markdown shows literally: special characters backslash-escaped, line breaks
    kept, and an invisible word joiner after ':', '@' and 'www' so that no emoji, icon or
    link is made of it. Use it for any data in a Markdown-rendering call (errors, toasts)."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
    escaped = re.sub(r"(:|@|www)", rf"\1{_WORD_JOINER}", escaped, flags=re.IGNORECASE)
    return escaped.replace("\n", "  \n")


def clip(text: str, limit: int = 600) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str, limit: int = 140) -> str:
    """`text` on one line (whitespace runs made one space), cut to `limit` characters."""
    return clip(" ".join(str(text).split()), limit)


def page_path(name: str) -> Path:
    """The absolute path of a page file (`"review"` -> .../curate/ui/review.py), for `st.Page`,
    `st.switch_page` and `st.page_link`: valid whichever entry script started the app."""
    return PAGES_DIR / f"{name}.py"


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store(path)


def get_store() -> Store:
    """The one Store of this server process (each session thread gets its own cursor).

    A workspace that cannot be opened (damaged, locked, too new) stops the page with one
    message saying what to do; nothing is cached, so the next load tries again."""
    try:
        return _open_store(str(default_db_path().resolve()))
    except CurateError as exc:
        st.error(plain(exc), icon=":material/error:")
        st.stop()


def single_user_mode() -> bool:
    """`curate app --single-user`: no sign-in, one local admin, said on every page."""
    return os.environ.get(SINGLE_USER_ENV) == "1"


def listen_address() -> str:
    """Where the server listens, as `curate app` started it, in Markdown: `host:port`, and
    whether only this computer can reach it."""
    listen = os.environ.get("CURATE_LISTEN")
    if not listen:
        return "the address Streamlit was started with"
    host = listen.rsplit(":", 1)[0].strip("[]")
    local = host in ("127.0.0.1", "localhost", "::1")
    return f"`{listen}` ({'this computer only' if local else 'reachable from the network'})"


def current_user() -> User:
    """The signed-in user (app.py signs in before any page runs)."""
    user = st.session_state.get("user")
    if user is None:
        st.error("You are not signed in.")
        st.stop()
    return user


def require_page(action: str) -> User:
    """The signed-in user, or stop the page with a clear message if their role may not."""
    user = current_user()
    if not user.can(action):
        st.error(f"This page needs a role that may '{action}'; you are signed in as "
                 f"{plain(user.name)} ({user.role}). Ask an admin to change your role.")
        st.stop()
    return user


def workspace(action: str = "view") -> Workspace:
    """The workspace as the signed-in user, who must be allowed `action` (else the page stops
    with a clear message): what every page calls first."""
    return Workspace(get_store(), require_page(action))


ERROR_ICON = ":material/error:"
_FLASH_KEY = "curate_flash"  # {page name: (text, icon, details)}: one message per page


def flash(page: str, text: str, icon: str = ":material/check_circle:", *,
          kind: Literal["toast", "success", "error"] | None = None,
          details: dict | None = None) -> None:
    """Leave a message for `page` to show after the rerun an action triggers: a toast, or a
    box that stays (`success`; `error`, the default with `ERROR_ICON`); `details` (id -> why)
    is shown as a table under it."""
    kind = kind or ("error" if icon == ERROR_ICON else "toast")
    st.session_state.setdefault(_FLASH_KEY, {})[page] = (text, icon, kind, details)


def page_start(page: str, ws: Workspace, *, empty_hint: str | None = None) -> None:
    """What every page shows under its title: the message its last action left, then, on a
    workspace without examples, `empty_hint` (default: how to import some) and a stop.
    Pass `empty_hint=""` for a page that works on an empty workspace."""
    message = st.session_state.get(_FLASH_KEY, {}).pop(page, None)
    if message:
        text, icon, kind, details = message
        {"toast": st.toast, "success": st.success, "error": st.error}[kind](plain(text),
                                                                           icon=icon)
        if details:
            st.dataframe({"Id": list(details), "Skipped because": list(details.values())},
                         hide_index=True)
    if empty_hint != "" and ws.store.count() == 0:
        st.info(empty_hint or "This workspace has no examples yet. An admin imports them on "
                "the Import / Export page, or with `curate import FILE`.",
                icon=":material/upload_file:")
        st.stop()


def show_error(exc: CurateError) -> None:
    st.error(plain(exc), icon=":material/error:")


ANSWER_FILTERS = {"any": None, "needs answer": True, "answered": False}
NEEDS_ANSWER_MARK = "needs an answer"  # shown beside an example whose last turn is the user's


def filter_form(store: Store, key: str, *, with_status: bool = True) -> ExampleFilter:
    """Filters by status, split, label, source, tag, answer (any, needs an answer, answered),
    a text or regex search, comment text and "decided under older guidelines", in the
    sidebar. Each is bound to a query parameter named by its key (`?review_label=billing`)
    and kept across page switches (`curate.ui.url_state`). A search the engine cannot run
    is said in the sidebar and selects nothing: dropping it would show, and let a bulk
    action or a review act on, examples the person did not ask for."""
    keep = {"bind": "query-params", "persist_state": "session"}
    with st.sidebar:
        st.subheader("Filters")
        search = st.text_input("Search all turns", key=f"{key}_search",
                               placeholder="substring, or a regular expression", **keep)
        regex = st.toggle("Regular expression", key=f"{key}_regex", **keep)
        status = (st.multiselect("Status", STATUSES, key=f"{key}_status", **keep)
                  if with_status else [])
        split = st.multiselect("Split", SPLITS, key=f"{key}_split", **keep)
        label = st.multiselect("Label", store.labels(), key=f"{key}_label", **keep)
        source = st.multiselect("Source", store.sources(), key=f"{key}_source", **keep)
        tag = st.multiselect("Tag", store.tags(), key=f"{key}_tag", **keep)
        answer = st.selectbox("Answer", list(ANSWER_FILTERS), key=f"{key}_answer",
                              help="'Needs answer': prompts imported without an answer "
                                   "(`--unanswered`), never exported or trained on until "
                                   "answered.", **keep)
        comment = st.text_input("Comment contains", key=f"{key}_comment",
                                placeholder="text in a comment; * for any comment", **keep)
        older = st.toggle("Decided under older guidelines", key=f"{key}_older_guidelines",
                          help="Examples whose latest decision was made under an earlier "
                               "version of the guidelines (or before there were any): what a "
                               "change of the guidelines may affect. In Review, pick the "
                               "All examples queue.", **keep)
    needs = ANSWER_FILTERS[answer]
    try:
        return ExampleFilter(status=tuple(status), split=tuple(split), label=tuple(label),
                             source=tuple(source), tag=tuple(tag), search=search, regex=regex,
                             needs_answer=needs, comment=comment, older_guidelines=older)
    except CurateError as exc:  # a pattern RE2 cannot run: select nothing, never everything
        st.sidebar.error(plain(exc))
        return ExampleFilter(ids=())


def filter_keys(key: str, *, with_status: bool = True) -> dict[str, object]:
    """The widget keys of `filter_form(store, key)` with their values when nothing is
    filtered: what a saved view records and restores."""
    keys: dict[str, object] = {f"{key}_search": "", f"{key}_regex": False}
    if with_status:
        keys[f"{key}_status"] = []
    keys.update({f"{key}_{name}": [] for name in ("split", "label", "source", "tag")})
    keys[f"{key}_answer"] = next(iter(ANSWER_FILTERS))
    keys.update({f"{key}_comment": "", f"{key}_older_guidelines": False})
    return keys
