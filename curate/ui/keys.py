"""Keyboard help for pages with shortcuts: "shortcuts paused" while a field has focus, `Esc`
to leave the field, `Ctrl+Enter` (`Cmd+Enter`) to save an edit.

Streamlit's button shortcuts (`st.button(shortcut=...)`) are ignored while the focus is in a
text box, a select box's search field or a multiselect; after a filter is touched the focus
stays there and every shortcut seems dead. `shortcut_help()` puts a small script into the
page (`st.html(unsafe_allow_javascript=True)`, which runs in the page's own document) that
listens to focus and keys on the document:
- while a field has focus, a hint at the bottom of the window says that shortcuts are paused
  and how to leave the field; it shows only on a page that calls `shortcut_help()` (the
  script looks for the marker element it renders), so other pages are left alone; besides
  focus events it looks again every 300 ms, since the page can rerun (and its marker be
  re-rendered) under a field that keeps the focus, such as a sidebar filter after Enter;
- `Esc` in a field leaves it (blur): Streamlit commits the field's text on blur, so no
  typing is lost, and the next key is a shortcut again;
- `Ctrl+Enter` in a field leaves it first (so Streamlit commits the text) and then, a moment
  later, clicks the save button (found by its widget key's class, `st-key-<key>`, at click
  time: the rerun the blur starts may have replaced the button meanwhile). A plain
  modifier shortcut on the button would fire before the box sent its text and save without
  the last typing: that is why Save's own shortcut is a single key (see `curate.ui.review`).

The script's text is ours only (no data goes into it); the hint is plain text set with
`textContent`. It installs its listeners once per browser tab (`window.__curateKeys`).
"""

from __future__ import annotations

import streamlit as st

HINT = "Shortcuts paused while you type · Esc leaves the field · Ctrl+Enter saves"

_SCRIPT = """
<span data-curate-shortcuts="%(save)s" hidden></span>
<script>
(() => {
  if (window.__curateKeys) return;
  window.__curateKeys = true;
  const doc = window.document;
  const NOT_TEXT = ["checkbox", "radio", "range", "button", "file", "reset", "submit", "color"];
  const editable = (el) => !!el && (el.isContentEditable || el.tagName === "TEXTAREA" ||
    el.tagName === "SELECT" || (el.tagName === "INPUT" && !NOT_TEXT.includes(el.type)));
  const marker = () => doc.querySelector("[data-curate-shortcuts]");
  const hint = doc.createElement("div");
  hint.setAttribute("role", "status");
  hint.setAttribute("data-testid", "curate-shortcuts-paused");
  hint.textContent = %(hint)s;
  Object.assign(hint.style, {position: "fixed", bottom: "1rem", left: "50%%",
    transform: "translateX(-50%%)", zIndex: "1000000", padding: "0.4rem 0.9rem",
    borderRadius: "0.5rem", background: "#31333f", color: "#ffffff", fontSize: "0.85rem",
    display: "none", pointerEvents: "none"});
  doc.body.appendChild(hint);
  const update = () => {
    hint.style.display = marker() && editable(doc.activeElement) ? "block" : "none";
  };
  setInterval(update, 300);  // the page may rerun under a focused field (marker comes, goes)
  doc.addEventListener("focusin", update, true);
  doc.addEventListener("focusout", () => setTimeout(update, 0), true);
  doc.addEventListener("keydown", (event) => {
    const field = doc.activeElement;
    const page = marker();
    if (!page || !editable(field)) return;
    if (event.key === "Escape") {
      field.blur();
      update();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      const selector = ".st-key-" + page.dataset.curateShortcuts + " button";
      if (!doc.querySelector(selector)) return;
      event.preventDefault();
      event.stopPropagation();
      field.blur();
      update();
      // found again at click time: the rerun the blur starts may have replaced the button
      setTimeout(() => {
        const save = doc.querySelector(selector);
        if (save && !save.disabled) save.click();
      }, 200);
    }
  }, true);
})();
</script>
"""


def shortcut_help(save_key: str) -> None:
    """The paused-shortcuts hint, `Esc` and `Ctrl+Enter` (clicks the button keyed
    `save_key`) on this page."""
    import json

    st.html(_SCRIPT % {"save": save_key, "hint": json.dumps(HINT)},
            unsafe_allow_javascript=True)
