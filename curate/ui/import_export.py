"""Import / Export (admins only): upload, preview, map and import a file with a full report;
export a snapshot as JSONL; list the snapshots.

Design decisions:
- An upload is written once, under a generated name inside `<workspace>/uploads`
  (`curation.uploads.save_upload`, which also enforces the size limit on the server), previewed
  and imported from there, and deleted after the import or when the file leaves the uploader.
  The user's file name is only the default `source` of the examples, never a path.
- The file's kind (JSONL, JSON array, CSV) is read from its content, not its name; the preview
  shows what was detected before anything is written to the store.
- The import runs only when the button is pressed; its report is kept in the session, saved
  into `<workspace>/import-reports` and offered as a JSON download.
- Nothing is decided silently: label conflicts (imported) get their own table in the report,
  and an export that reuses an existing snapshot says so, naming it; so does one that left
  out examples that need an answer.
- "Drop images, video and audio" (`--drop-media`) is a checkbox, off by default: records with
  media are refused unless someone chooses to keep their text alone; a file with `images`,
  `videos` or `audios` columns says so above the Import button.
- "Prompts without an answer" (`--unanswered` in the CLI) is a checkbox, off by default:
  ticked, records with no answer (and a mapping without a response column) come in as
  pending examples that need an answer, and the report counts them.
- Everything from the file (names, columns, values, error messages that quote them) is shown
  as text: table cells, widget values, or escaped before it reaches a Markdown call.
- Export: each format is offered with one line on what reads it; "Plain" (`--plain`) leaves
  Curate's fields out for uploads. An openai or alpaca export shows its LLaMA-Factory
  `dataset_info.json` entry, which the exports folder's `dataset_info.json` now holds.
- The Alpaca separator (`--alpaca-separator`) is a choice of three, not free text: a
  newline cannot be typed into a text field.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import streamlit as st

from curate.ui.common import plain, workspace
from curation import SPLITS, STATUSES, CurateError, ExampleFilter
from curation.formats import (CODES, DEFAULT_ALPACA_SEPARATOR, EXPORT_FORMATS, INPUT_FORMATS,
                              MAPPING_TARGETS, split_tags)
from curation.uploads import (MAX_UPLOAD_BYTES, MAX_UPLOAD_MB, discard_upload, export_target,
                              preview_cell, preview_file, remove_stale_uploads, save_upload,
                              suggest_mapping)

KIND_NAMES = {"jsonl": "JSON Lines", "json": "a JSON array", "csv": "CSV"}
TARGET_LABELS = {"prompt": "Prompt (user turn)", "response": "Response (assistant turn)",
                 "system": "System prompt (optional)", "label": "Label (optional)",
                 "id": "External id (optional)", "tags": "Tags (optional)"}
FORMAT_HELP = {  # what reads each export format
    "openai": "openai: OpenAI chat fine-tuning, TRL, LLaMA-Factory (sharegpt), Axolotl",
    "alpaca": "alpaca: instruction/input/output with system and history (LLaMA-Factory)",
    "prompt_completion": "prompt_completion: TRL's conversational prompt-completion",
    "bedrock": "bedrock: Amazon Bedrock conversation (bedrock-conversation-2024, Nova)",
    "vertex": "vertex: Vertex AI Gemini supervised tuning (contents/parts)",
    "trl_preference": "trl_preference: preference pairs, prompt/chosen/rejected (TRL DPO)",
    "openai_dpo": "openai_dpo: preference pairs, input/preferred_output/non_preferred_output "
                  "(OpenAI DPO)",
}
ALPACA_SEPARATORS = {"\n": "One newline (LLaMA-Factory)", "\n\n": "A blank line (two newlines)",
                     " ": "A space"}



def say_error(exc: CurateError, saved: Path | None = None, name: str | None = None) -> None:
    """A core error as a clear, escaped message; the upload's temporary path reads as the
    file name the user knows."""
    text = str(exc)
    if saved is not None and name:
        text = text.replace(str(saved), name)
    st.error(f"{type(exc).__name__}: {plain(text)}", icon=":material/error:")


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size:,} bytes"
    return f"{size / 1024:,.1f} KB" if size < 1024**2 else f"{size / 1024**2:,.1f} MB"


ws = workspace("import")
store, user = ws.store, ws.user
folder = store.path.parent  # the workspace folder: uploads, reports, exports
remove_stale_uploads(folder)

st.title("Import / Export")
import_tab, export_tab, snapshots_tab = st.tabs(["Import", "Export", "Snapshots"])


# --- import ----------------------------------------------------------------------------------

def forget_saved_upload() -> None:
    saved = st.session_state.pop("ie_saved", None)
    if saved:
        discard_upload(folder, saved["path"])


def saved_upload_path(upload) -> Path:
    """The upload's file in the workspace, written on first use for this uploaded file."""
    saved = st.session_state.get("ie_saved")
    if saved and saved["file_id"] == upload.file_id and Path(saved["path"]).is_file():
        return Path(saved["path"])
    forget_saved_upload()
    path = save_upload(user, folder, upload, max_bytes=MAX_UPLOAD_BYTES)
    st.session_state["ie_saved"] = {"file_id": upload.file_id, "path": str(path)}
    return path


def show_report(done: dict) -> None:
    report = done["report"]
    st.subheader("Import report")
    st.text(f"File: {done['name']}")
    cols = st.columns(5)
    cols[0].metric("Records read", f"{report['lines']:,}")
    cols[1].metric("Imported", f"{report['imported']:,}")
    cols[2].metric("Rejected", f"{len(report['rejected']):,}")
    cols[3].metric("Already in the store", f"{len(report['already_in_store']):,}")
    cols[4].metric("Repeated within the file", f"{len(report['duplicates_in_file']):,}")
    if report["rejected"]:
        st.dataframe(pd.DataFrame(report["rejected"], columns=["line", "code", "message", "field"]),
                     hide_index=True,
                     column_config={"message": st.column_config.TextColumn(width="large")})
        with st.expander("What the error codes mean"):
            codes = sorted({e["code"] for e in report["rejected"]})
            meanings = [CODES.get(c, "") for c in codes]
            st.dataframe(pd.DataFrame({"code": codes, "meaning": meanings}), hide_index=True)
    else:
        st.caption("No record was rejected.")
    if report.get("needs_answer"):
        st.info(f"{report['needs_answer']:,} imported prompts need an answer: they are stored "
                "as pending and are not exported or trained on until someone answers them "
                "(Review page, queue 'Needs answer').", icon=":material/edit_note:")
    conflicts = report.get("label_conflicts", [])
    if conflicts:
        st.warning(f"{len(conflicts):,} imported records have a conversation that is also "
                   "stored (or earlier in the file) with another label. Both are kept: "
                   "decide which label is right (Quality: exact duplicates).",
                   icon=":material/warning:")
        st.dataframe(pd.DataFrame(
            [(c["line"], c["label"], c["other_label"],
              f"line {c['other_line']}" if c["other_line"] is not None
              else f"example #{c['other_example']}") for c in conflicts],
            columns=["line", "label", "other label", "same conversation as"]), hide_index=True)
    skipped = ([{"line": n, "why": "already in the store"} for n in report["already_in_store"]]
               + [{"line": d["line"], "why": f"repeats line {d['first_line']}"}
                  for d in report["duplicates_in_file"]])
    if skipped:
        with st.expander(f"{len(skipped):,} records skipped as duplicates"):
            st.dataframe(pd.DataFrame(skipped).sort_values("line"), hide_index=True)
    full = {**report, "uploaded_file": done["name"]}
    st.download_button("Download the full report (JSON)",
                       orjson.dumps(full, option=orjson.OPT_INDENT_2),
                       file_name="import-report.json", mime="application/json",
                       icon=":material/download:", key="ie_report_download")
    st.caption("Also saved in the workspace:")
    st.code(done["saved_to"], language=None)


def import_form(upload) -> None:
    path = None
    try:
        path = saved_upload_path(upload)
        preview = preview_file(path)
    except CurateError as exc:
        say_error(exc, path, upload.name)
        forget_saved_upload()
        return
    fid = upload.file_id[:12]

    st.text(f"{upload.name} — {human_size(upload.size)}")
    detected = preview.detected_format
    st.markdown(f"Read as **{KIND_NAMES[preview.kind]}** (from its content); format: "
                + (f"**{detected}**." if detected else "**none recognised**: map the columns "
                   "below."))
    st.caption(f"First {len(preview.records)} records:")
    if preview.records:
        st.dataframe(pd.DataFrame([{c: preview_cell(r[c]) if c in r else None
                                    for c in preview.columns} for r in preview.records],
                                  columns=preview.columns),
                     hide_index=True)
    if preview.errors:
        st.caption("Records among the first ones that cannot be read:")
        st.dataframe(pd.DataFrame([(e.line, e.code, e.message) for e in preview.errors],
                                  columns=["line", "code", "message"]), hide_index=True)

    mapping: dict[str, str] = {}
    if preview.kind == "csv" or preview.needs_mapping:
        st.subheader("Columns")
        if preview.needs_mapping:
            st.caption("These records match no known format: choose the column that holds "
                       "the prompt and the one that holds the response.")
            use_mapping = True
        else:
            use_mapping = st.toggle("Map the columns by hand", key=f"ie_use_map_{fid}",
                                    help=f"The header already reads as {detected}.")
        if use_mapping:
            guess = suggest_mapping(preview.columns)
            cols = st.columns(3)
            for i, target in enumerate(MAPPING_TARGETS):
                chosen = cols[i % 3].selectbox(
                    TARGET_LABELS[target], preview.columns,
                    index=preview.columns.index(guess[target]) if target in guess else None,
                    placeholder="Choose a column" if target in ("prompt", "response")
                    else "(none)", key=f"ie_map_{target}_{fid}")
                if chosen:
                    mapping[target] = chosen

    st.subheader("Options")
    left, middle, right = st.columns(3)
    split = left.selectbox("Split", SPLITS, key=f"ie_split_{fid}")
    status = middle.selectbox("Initial status", STATUSES, key=f"ie_status_{fid}")
    fmt = right.selectbox("Format", [f for f in INPUT_FORMATS if f != "mapped"],
                          key=f"ie_format_{fid}", disabled=bool(mapping),
                          help="'auto' detects the format of each record from its keys. "
                               "With a column mapping, the mapping decides.")
    left, right = st.columns(2)
    source = left.text_input("Source", value=upload.name, key=f"ie_source_{fid}",
                             help="Recorded with every imported example; defaults to the "
                                  "file name.")
    tags = right.text_input("Tags for every imported example", key=f"ie_tags_{fid}",
                            placeholder="comma-separated, e.g. batch-3, from-support")
    separator = st.selectbox(
        "Alpaca: between instruction and input", list(ALPACA_SEPARATORS),
        index=list(ALPACA_SEPARATORS).index(DEFAULT_ALPACA_SEPARATOR),
        format_func=ALPACA_SEPARATORS.get, key=f"ie_alpaca_sep_{fid}",
        help="An Alpaca record's user turn is its instruction, then this, then its input "
             "(when the input is not blank). One newline is how LLaMA-Factory joins them. "
             "Same as `curate import --alpaca-separator`.")
    unanswered = st.checkbox(
        "Prompts without an answer", key=f"ie_unanswered_{fid}",
        help="Also import records that have no answer yet (a chat ending with a user turn, an "
             "empty output or completion, no response column). They are stored as pending "
             "and marked 'needs answer', and are never exported or trained on until someone "
             "answers them in Review. Same as `curate import --unanswered`.")
    drop_media = st.checkbox(
        "Drop images, video and audio", key=f"ie_drop_media_{fid}",
        help="Records with `images`, `videos` or `audios` (or image/audio content parts) are "
             "refused by default, because Curate keeps text only. Tick this to import their "
             "text instead: the media and the `<image>`/`<video>`/`<audio>` placeholders are "
             "removed. Same as `curate import --drop-media`.")
    media = [k for k in ("images", "videos", "audios") if k in preview.columns]
    if media and not drop_media:
        st.caption(f":material/image: The file has {', '.join(media)}: those records will be "
                   "rejected (unsupported_modality) unless you tick 'Drop images, video and "
                   "audio'.")
    model_output = st.checkbox(
        "Answers written by a model", key=f"ie_model_output_{fid}",
        help="The answers are a model's output (tagged model-output): when a reviewer edits "
             "one, the edited answer (chosen) and the model's (rejected) are recorded as a "
             "preference pair. Same as `curate import --model-output`.")

    problem = None
    if mapping and "prompt" not in mapping:
        problem = "Choose the prompt column."
    elif mapping and not unanswered and "response" not in mapping:
        problem = ("Choose the response column (or tick 'Prompts without an answer' to "
                   "import prompts alone).")
    elif preview.needs_mapping and not mapping:
        problem = "Map the columns first."
    if problem:
        st.caption(problem)
    if not st.button("Import", type="primary", icon=":material/upload:", key="ie_import",
                     disabled=problem is not None):
        return
    bar = st.progress(0.0, text="Importing…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0),
                     text=f"Importing… {done / 2**20:,.1f} of {total / 2**20:,.1f} MB read")

    try:
        report, saved_to = ws.import_file(path, fmt=fmt, mapping=mapping or None, split=split,
                                          status=status, source=source.strip() or upload.name,
                                          tags=split_tags(tags), unanswered=unanswered,
                                          model_output=model_output, progress=progress,
                                          drop_media=drop_media, alpaca_separator=separator)
    except CurateError as exc:
        bar.empty()
        say_error(exc, path, upload.name)
        return
    finally:
        forget_saved_upload()
    st.session_state["ie_done"] = {"file_id": upload.file_id, "name": upload.name,
                                   "report": report.to_dict(), "saved_to": str(saved_to)}
    st.rerun()


with import_tab:
    st.caption(f"JSON Lines, a JSON array or CSV, in UTF-8, up to {MAX_UPLOAD_MB} MB. The kind "
               "is read from the file's content, not its name. Larger files: `curate import "
               "FILE`.")
    upload = st.file_uploader("File to import", type=["jsonl", "ndjson", "json", "csv", "txt"],
                              max_upload_size=MAX_UPLOAD_MB, key="ie_upload")
    done = st.session_state.get("ie_done")
    if upload is None:
        forget_saved_upload()
        if done:
            show_report(done)
    elif done and done["file_id"] == upload.file_id:
        st.success("Imported. Choose another file to import more.", icon=":material/done:")
        show_report(done)
    else:
        st.session_state.pop("ie_done", None)
        import_form(upload)


# --- export ----------------------------------------------------------------------------------

with export_tab:
    st.caption("Exports what the filters select as a snapshot (an immutable, hashed set of "
               "example versions) and writes it as JSONL into the workspace's `exports` "
               "folder, with a manifest beside it.")
    with st.form("ie_export_form", border=True):
        left, right = st.columns(2)
        out_format = left.selectbox("Format", EXPORT_FORMATS, key="ie_export_format",
                                    format_func=lambda f: FORMAT_HELP.get(f, f))
        name = right.text_input("Snapshot name (optional)", key="ie_export_name",
                                placeholder="e.g. v3 for the first training run")
        status = left.multiselect("Status", STATUSES, default=["accepted"],
                                  key="ie_export_status")
        split = right.multiselect("Split", SPLITS, key="ie_export_split")
        label = st.multiselect("Label", store.labels(), key="ie_export_label",
                               placeholder="every label")
        plain_export = st.checkbox(
            "Plain: without Curate's fields", key="ie_export_plain",
            help="Leaves out the `curate` object (external id, label, tags, Curate id, "
                 "version, split, status, source): each line holds only the format's own "
                 "keys, as uploads to OpenAI, Bedrock or Vertex AI want. Importing such a "
                 "file again keeps the conversations but not those fields. Same as "
                 "`curate export --plain`.")
        submitted = st.form_submit_button("Export", type="primary", icon=":material/download:")
    if submitted:
        try:
            where = ExampleFilter(status=tuple(status), split=tuple(split), label=tuple(label))
            result = ws.export(export_target(folder, name), fmt=out_format, where=where,
                               name=name.strip() or None, plain=plain_export)
        except CurateError as exc:
            say_error(exc)
        else:
            st.session_state["ie_export"] = result.to_dict()
    last = st.session_state.get("ie_export")
    if last:
        path, manifest = Path(last["path"]), Path(last["manifest"])
        if last["note"]:
            st.info(plain(last["note"][0].upper() + last["note"][1:]) + ".",
                    icon=":material/info:")
        if last.get("left_out_note"):
            st.info(plain(last["left_out_note"][0].upper() + last["left_out_note"][1:]) + ".",
                    icon=":material/edit_note:")
        count_col, ids_col = st.columns([1, 5])
        count_col.metric("Examples", f"{last['count']:,}")
        with ids_col:
            st.caption("Snapshot")
            st.code(last["snapshot_id"], language=None)
            st.caption("Snapshot content hash (SHA-256)")
            st.code(last["snapshot_hash"], language=None)
        if last["count"] == 0:
            st.warning("The snapshot is empty: no example matches these filters.")
        st.caption("Written in the workspace:")
        st.code(f"{path}\n{manifest}", language=None)
        info = Path(last["dataset_info"]) if last.get("dataset_info") else None
        if info is not None and info.is_file():
            entry = orjson.loads(info.read_bytes()).get(last["dataset_name"])
            st.caption(f"LLaMA-Factory: dataset {plain(last['dataset_name'])}, listed in the "
                       "folder's dataset_info.json (use the folder as `dataset_dir`):")
            st.code(orjson.dumps({last["dataset_name"]: entry},
                                 option=orjson.OPT_INDENT_2).decode(), language="json")
            if last.get("llama_factory_note"):
                st.info(plain(last["llama_factory_note"][0].upper()
                              + last["llama_factory_note"][1:]) + ".",
                        icon=":material/info:")
        if path.is_file() and manifest.is_file():
            left, right = st.columns(2)
            left.download_button("Download the JSONL", data=lambda p=path: p.read_bytes(),
                                 file_name=path.name, mime="application/jsonl",
                                 icon=":material/download:", key="ie_export_download")
            right.download_button("Download the manifest",
                                  data=lambda p=manifest: p.read_bytes(),
                                  file_name=manifest.name, mime="application/json",
                                  icon=":material/description:", key="ie_manifest_download")


# --- snapshots -------------------------------------------------------------------------------

with snapshots_tab:
    items = ws.snapshots()
    snapshots = [item.snapshot for item in items]
    if not snapshots:
        st.info("No snapshots yet: every export makes one.")
    else:
        st.dataframe(pd.DataFrame({
            "Id": [s.id for s in snapshots],
            "Name": [s.name for s in snapshots],
            "Examples": [s.count for s in snapshots],
            "Content hash": [s.content_hash for s in snapshots],
            "Filters": [orjson.dumps(s.filters).decode() for s in snapshots],
            "Created by": [s.created_by for s in snapshots],
            "Created at": [s.created_at for s in snapshots],
            "Trained in": [", ".join(item.run_ids) for item in items],
        }), hide_index=True,
            column_config={
                "Content hash": st.column_config.TextColumn(width="medium"),
                "Filters": st.column_config.TextColumn(width="medium"),
                "Created at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})
