"""Review guidelines: Markdown text per workspace, versioned, and what each label means.

Admins write the guidelines; everyone reads them beside the example in Review and in full on
the Guidelines page (`curate guidelines show`). Every save is a new version (who, when, an
optional note), so a reviewer can see what changed between two versions (`diff`), and every
decision records the version it was made under (`Store.update` writes it into the audit
event), so after a change `ExampleFilter(older_guidelines=True)` finds what to re-check.

Design decisions:
- Versions are only ever added, never edited or deleted; saving the text of the current
  version again is refused (it would be a version that changes nothing). A save may name the
  version it was based on (the page does): if someone saved meanwhile, it is refused with who
  and when, as an edit of an example is, instead of silently replacing their text.
- The guidelines are rendered as Markdown, the one place where the app renders text it did
  not write. `safe_markdown` is applied first: raw HTML is escaped (shown as text, never a
  tag) and images become a line of text with their address, so nothing is fetched from
  another host and no script or tracking pixel reaches the reader. Code spans and fenced code
  blocks are left as they are: Markdown never renders HTML or images inside them.
- Label descriptions (what the label means, one example) are plain text, shown as text.
  An empty description removes the label's entry.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime

from curation.auth import User, require
from curation.errors import InvalidValue
from curation.store import Store, utcnow

MAX_GUIDELINES_CHARS = 200_000
MAX_DESCRIPTION_CHARS = 2_000


@dataclass(frozen=True)
class Guidelines:
    """One saved version of the guidelines."""

    version: int
    saved_by: str
    saved_at: datetime
    note: str | None
    text: str

    def to_dict(self) -> dict:
        return {"version": self.version, "saved_by": self.saved_by,
                "saved_at": self.saved_at.isoformat(), "note": self.note, "text": self.text}


@dataclass(frozen=True)
class LabelDescription:
    """What a label means, with one example, as an admin wrote it."""

    label: str
    description: str
    example: str | None
    updated_by: str
    updated_at: datetime

    def to_dict(self) -> dict:
        return {"label": self.label, "description": self.description, "example": self.example,
                "updated_by": self.updated_by, "updated_at": self.updated_at.isoformat()}


def current(store: Store) -> Guidelines | None:
    """The current guidelines, or None when none were ever saved."""
    row = store.guidelines_row()
    return Guidelines(*row) if row else None


def get(store: Store, version: int | None = None) -> Guidelines | None:
    """Version `version` (default the current one; None when there are no guidelines yet).
    A version that does not exist is an InvalidValue naming the versions there are."""
    if version is None:
        return current(store)
    row = store.guidelines_row(version)
    if row is None:
        latest = store.guidelines_version()
        have = ({0: "no versions yet", 1: "only version 1"}.get(latest)
                or f"versions 1 to {latest}")
        raise InvalidValue(f"the guidelines have no version {version}; there are {have}")
    return Guidelines(*row)


def current_version(store: Store) -> int:
    """The current guidelines version, 0 when there are none."""
    return store.guidelines_version()


def history(store: Store) -> list[Guidelines]:
    """Every version, newest first."""
    return [Guidelines(*row) for row in store.guidelines_rows()]


def save(store: Store, user: User, text: str, *, note: str | None = None,
         base_version: int | None = None) -> Guidelines:
    """Save `text` as the next version (admins). `base_version`: the version the text was
    edited from; if the current version is another one, nothing is saved (InvalidValue)."""
    require(user, "edit_guidelines")
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise InvalidValue("the guidelines are empty: write some text before saving")
    if len(text) > MAX_GUIDELINES_CHARS:
        raise InvalidValue(f"the guidelines have {len(text):,} characters; at most "
                           f"{MAX_GUIDELINES_CHARS:,} are kept")
    latest = current(store)
    if latest is not None and latest.text == text:
        raise InvalidValue(f"nothing to save: the text is the same as version {latest.version}")
    version, now_current = store.add_guidelines_version(
        text, user.name, utcnow(), (note or "").strip() or None, if_current=base_version)
    if not version:
        theirs = store.guidelines_row(now_current)  # None: still being saved by the other
        who = (f"by {theirs[1]} at {theirs[2]:%Y-%m-%d %H:%M:%S} UTC" if theirs
               else "by another admin at the same moment")
        yours = f"; you edited version {base_version}" if base_version is not None else ""
        raise InvalidValue(f"the guidelines were changed {who} (now version {now_current}"
                           f"{yours}). Reload them and apply your change again.")
    return get(store, version)


def diff(store: Store, old: int, new: int) -> list[str]:
    """A unified diff from version `old` to version `new`, as plain text lines (version 0:
    no guidelines, an empty text)."""
    before = get(store, old).text if old else ""
    after = get(store, new).text if new else ""
    return list(difflib.unified_diff(before.splitlines(), after.splitlines(),
                                     f"version {old}", f"version {new}", lineterm="", n=3))


# --- what a decision was made under -------------------------------------------------------

@dataclass(frozen=True)
class DecidedUnder:
    """An example's latest decision and the guidelines version it was made under."""

    action: str
    actor: str
    at: datetime
    version: int  # 0: before there were guidelines
    current: int

    @property
    def outdated(self) -> bool:
        return self.version < self.current


def decided_under(store: Store, example_id: int) -> DecidedUnder | None:
    """The latest decision on an example and its guidelines version; None if never decided
    in this workspace."""
    row = store.last_decision_row(example_id)
    if row is None:
        return None
    action, actor, at, version = row
    return DecidedUnder(action, actor, at, version or 0, store.guidelines_version())


# --- label descriptions -------------------------------------------------------------------

def label_descriptions(store: Store) -> dict[str, LabelDescription]:
    """{label: its description}, by label."""
    return {row[0]: LabelDescription(*row) for row in store.label_description_rows()}


def set_label_description(store: Store, user: User, label: str, description: str,
                          example: str | None = None) -> LabelDescription | None:
    """Say what `label` means, with one example (admins); an empty description removes it
    (returns None)."""
    require(user, "edit_guidelines")
    label = (label or "").strip()
    if not label:
        raise InvalidValue("name the label to describe")
    description, example = (description or "").strip(), (example or "").strip() or None
    if not description:
        store.delete_label_description(label)
        return None
    for name, value in (("description", description), ("example", example or "")):
        if len(value) > MAX_DESCRIPTION_CHARS:
            raise InvalidValue(f"the {name} of label {label!r} has {len(value):,} characters; "
                               f"at most {MAX_DESCRIPTION_CHARS:,}")
    store.put_label_description(label, description, example, user.name, utcnow())
    return label_descriptions(store)[label]


# --- rendering safely ---------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1", re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")


def safe_markdown(text: str) -> str:
    """Markdown that renders no raw HTML and loads no image: outside code, `<` becomes
    `&lt;` (shown as the character) and each image `![alt](url)` becomes the text
    "[image not shown: alt]" with its address as code; any other image syntax
    (`![alt][ref]`) loses its `!`. Code spans and fenced blocks are kept as they are."""
    out, fence = [], None
    for line in text.split("\n"):
        opened = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            out.append(line)
            continue
        out.append(_outside_code(line))
    return "\n".join(out)


def _outside_code(line: str) -> str:
    """`line` with HTML and images neutralised outside its code spans."""
    parts, last = [], 0
    for span in _CODE_SPAN.finditer(line):
        parts.append(_neutralise(line[last:span.start()]))
        parts.append(span.group(0))
        last = span.end()
    parts.append(_neutralise(line[last:]))
    return "".join(parts)


def _neutralise(text: str) -> str:
    text = text.replace("<", "&lt;")
    text = _IMAGE.sub(lambda m: f"[image not shown: {m.group(1) or 'no description'}]"
                      + (f" `{m.group(2)}`" if m.group(2) else ""), text)
    return text.replace("![", "!\\[")
