"""AppTest of the Import / Export page, and the upload handling in `curation.uploads`.

AppTest drives `st.file_uploader` (`set_value((name, bytes, mime))`) the way the browser's
upload does, so the page's import path is tested end to end; the download buttons are
checked for presence and content, not clicked (that needs a browser).
"""

from __future__ import annotations

import io

import orjson
import pytest
from streamlit.testing.v1 import AppTest

from curation import import_file
from curation.auth import User
from curation.errors import UploadRejected
from curation.formats import UNANSWERED_HINT
from curation.importer import sniff_kind
from curation.uploads import (discard_upload, export_target, preview_file, remove_stale_uploads,
                              safe_stem, save_upload, suggest_mapping)
from tests.conftest import PROJECT_ROOT, admin, chat, page as page_path, write_jsonl

CSV = (b"question,answer,category\n"
       b"How do I reset my password?,Use the reset link.,access\n"
       b"<b>Why</b> was I charged twice?,**Refunded** in 3 days.,billing\n"
       b"An empty answer,,bugs\n")


@pytest.fixture
def page(monkeypatch):
    def start(store, role: str = "admin", name: str = "ada") -> AppTest:
        monkeypatch.setenv("CURATE_DB", str(store.path))
        monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
        at.session_state["user"] = User(name, role)
        at.switch_page(page_path("import_export")).run()
        assert not at.exception
        return at

    return start


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table_with(at: AppTest, column: str):
    """The first table that has `column` (read-only tables carry no key AppTest can see)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def workspace_files(store) -> set[str]:
    root = store.path.parent
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --- the page --------------------------------------------------------------------------------

def test_a_reviewer_is_refused(monkeypatch, seeded_store):
    monkeypatch.setenv("CURATE_DB", str(seeded_store.path))
    monkeypatch.delenv("CURATE_SINGLE_USER", raising=False)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
    at.session_state["user"] = User("rex", "reviewer")
    at.run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(page_path("import_export"))  # not in a reviewer's navigation
    # Reached directly, the page itself refuses and shows nothing else.
    direct = AppTest.from_file(str(page_path("import_export")), default_timeout=30)
    direct.session_state["user"] = User("rex", "reviewer")
    direct.run()
    assert "needs a role that may 'import'" in direct.error[0].value
    assert "rex (reviewer)" in direct.error[0].value
    assert not direct.file_uploader and not direct.title


def test_an_admin_sees_import_export_and_snapshots(page, seeded_store):
    at = page(seeded_store)
    assert at.title[0].value == "Import / Export"
    assert [t.label for t in at.tabs] == ["Import", "Export", "Snapshots"]
    uploader = at.file_uploader[0]
    assert set(uploader.allowed_type) == {".jsonl", ".ndjson", ".json", ".csv", ".txt"}
    assert any("up to 200 MB" in c.value for c in at.caption)
    assert at.multiselect(key="ie_export_status").value == ["accepted"]
    assert "No snapshots yet" in at.info[0].value


def test_csv_upload_previews_maps_imports_and_reports(page, empty_store, tmp_path):
    at = page(empty_store)
    at.file_uploader[0].set_value(("../../etc/passwd.csv", CSV, "text/csv")).run()
    assert not at.exception
    assert "Read as **CSV**" in at.markdown[0].value
    assert "none recognised" in at.markdown[0].value
    preview = at.dataframe[0].value
    assert list(preview.columns) == ["question", "answer", "category"]
    assert preview.iloc[1]["question"] == "<b>Why</b> was I charged twice?"  # shown as text
    mapping = {s.label: s.value for s in at.selectbox if s.key and s.key.startswith("ie_map_")}
    assert mapping["Prompt (user turn)"] == "question"
    assert mapping["Response (assistant turn)"] == "answer"
    assert mapping["Label (optional)"] == "category"
    assert at.text_input(key=next(t.key for t in at.text_input
                                  if t.label == "Source")).value == "../../etc/passwd.csv"
    saved = [p for p in (empty_store.path.parent / "uploads").iterdir()]
    assert len(saved) == 1 and saved[0].read_bytes() == CSV and saved[0].suffix == ".upload"

    at.button(key="ie_import").click().run()
    assert not at.exception
    got = metrics(at)
    assert (got["Records read"], got["Imported"], got["Rejected"]) == ("3", "2", "1")
    rejected = table_with(at, "code")
    assert rejected[["line", "code"]].values.tolist() == [[4, "missing_content"]]
    # the user's column, not an internal field such as messages[1].content
    assert rejected[["message", "field"]].values.tolist() == [
        ["column `answer` (response) is empty" + UNANSWERED_HINT, "answer"]]
    examples = empty_store.find()
    assert [(e.label, e.source) for e in examples] == [("access", "../../etc/passwd.csv"),
                                                       ("billing", "../../etc/passwd.csv")]
    assert examples[1].messages[0]["content"] == "<b>Why</b> was I charged twice?"
    # The upload is gone, the report is saved in the workspace, nothing escaped it.
    files = workspace_files(empty_store)
    assert not [f for f in files if f.startswith("uploads/")]
    reports = [f for f in files if f.startswith("import-reports/")]
    assert len(reports) == 1
    saved_report = orjson.loads((empty_store.path.parent / reports[0]).read_bytes())
    assert saved_report["imported"] == 2 and saved_report["rejected"][0]["line"] == 4
    assert not (tmp_path / "etc").exists() and not (empty_store.path.parent.parent / "etc").exists()
    assert at.download_button[0].label == "Download the full report (JSON)"


def test_jsonl_named_csv_is_read_as_jsonl_with_duplicates_reported(page, seeded_store):
    known = {"messages": chat("question 0 about billing", "answer 0"), "label": "billing"}
    new = {"messages": chat("A new question", "A new answer"), "label": "access"}
    body = b"".join(orjson.dumps(r) + b"\n" for r in (known, new, new))
    at = page(seeded_store)
    at.file_uploader[0].set_value(("looks_like.csv", body, "text/csv")).run()
    assert "Read as **JSON Lines**" in at.markdown[0].value
    assert "**openai**" in at.markdown[0].value
    assert not [s for s in at.selectbox if s.key and s.key.startswith("ie_map_")]
    at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Split")).set_value("eval")
    at.text_input(key=next(t.key for t in at.text_input if t.label.startswith("Tags"))
                  ).set_value("batch-2, web")
    at.run()
    at.button(key="ie_import").click().run()
    got = metrics(at)
    assert (got["Imported"], got["Already in the store"], got["Repeated within the file"]) == (
        "1", "1", "1")
    added = [e for e in seeded_store.find() if e.label == "access" and e.split == "eval"]
    assert len(added) == 1 and added[0].tags == ("batch-2", "web")
    assert added[0].source == "looks_like.csv"
    assert seeded_store.count() == 7


def test_a_file_that_is_not_utf8_is_refused_clearly(page, empty_store):
    at = page(empty_store)
    at.file_uploader[0].set_value(("latin1.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1"),
                                   "application/jsonl")).run()
    assert not at.exception
    message = at.error[0].value
    assert message.startswith("NotUtf8:") and "latin1" in message
    assert "uploads" not in message  # the temporary path reads as the user's file name
    assert "ie_import" not in [b.key for b in at.button]
    assert not list((empty_store.path.parent / "uploads").iterdir())
    assert empty_store.count() == 0


def test_export_writes_a_snapshot_file_in_the_workspace(page, seeded_store):
    for example in seeded_store.find()[:2]:
        seeded_store.update(example.id, base_version=1, actor="rev", status="accepted")
    at = page(seeded_store)
    at.text_input(key="ie_export_name").set_value("../../first run")
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert metrics(at)["Examples"] == "2"
    snapshots = seeded_store.snapshots()
    assert len(snapshots) == 1 and snapshots[0].count == 2
    assert snapshots[0].name == "../../first run"
    codes = [c.value for c in at.code]
    assert snapshots[0].id in codes and snapshots[0].content_hash in codes
    exports = seeded_store.path.parent / "exports"
    assert sorted(p.name for p in exports.iterdir()) == ["dataset_info.json", "first-run.jsonl",
                                                         "first-run.manifest.json"]
    lines = (exports / "first-run.jsonl").read_bytes().splitlines()
    assert len(lines) == 2 and set(orjson.loads(lines[0])) == {"messages", "curate"}
    manifest = orjson.loads((exports / "first-run.manifest.json").read_bytes())
    assert manifest["snapshot_id"] == snapshots[0].id
    assert manifest["filters"] == {"status": ["accepted"]}
    entry = orjson.loads((exports / "dataset_info.json").read_bytes())["first-run"]
    assert entry["file_name"] == "first-run.jsonl" and entry["formatting"] == "sharegpt"
    assert '"first-run"' in at.code[-1].value and at.code[-1].language == "json"
    assert [b.label for b in at.download_button] == ["Download the JSONL",
                                                     "Download the manifest"]
    table = table_with(at, "Content hash")
    assert table["Id"].tolist() == [snapshots[0].id] and table["Examples"].tolist() == [2]


def test_export_plain_bedrock_from_the_page(page, seeded_store):
    for example in seeded_store.find():
        seeded_store.update(example.id, base_version=1, actor="rev", status="accepted")
    at = page(seeded_store)
    assert at.selectbox(key="ie_export_format").options == [
        "openai: OpenAI chat fine-tuning, TRL, LLaMA-Factory (sharegpt), Axolotl",
        "alpaca: instruction/input/output with system and history (LLaMA-Factory)",
        "prompt_completion: TRL's conversational prompt-completion",
        "bedrock: Amazon Bedrock conversation (bedrock-conversation-2024, Nova)",
        "vertex: Vertex AI Gemini supervised tuning (contents/parts)",
        "trl_preference: preference pairs, prompt/chosen/rejected (TRL DPO)",
        "openai_dpo: preference pairs, input/preferred_output/non_preferred_output (OpenAI DPO)"]
    at.selectbox(key="ie_export_format").set_value("bedrock")
    at.checkbox(key="ie_export_plain").check()
    at.text_input(key="ie_export_name").set_value("nova")
    at.form_submit_button[0].click().run()
    assert not at.exception
    exports = seeded_store.path.parent / "exports"
    rows = [orjson.loads(x) for x in (exports / "nova.jsonl").read_bytes().splitlines()]
    assert len(rows) == 6 and all(set(r) == {"schemaVersion", "messages"} for r in rows)
    assert not (exports / "dataset_info.json").exists()  # LLaMA-Factory does not read it
    manifest = orjson.loads((exports / "nova.manifest.json").read_bytes())
    assert manifest["format"] == "bedrock" and manifest["plain"] is True


def test_the_alpaca_separator_is_chosen_on_import(page, empty_store):
    body = orjson.dumps({"instruction": "Translate.", "input": "cat", "output": "chat"}) + b"\n"
    at = page(empty_store)
    at.file_uploader[0].set_value(("a.jsonl", body, "application/jsonl")).run()
    box = next(s for s in at.selectbox if s.key and s.key.startswith("ie_alpaca_sep_"))
    assert box.value == "\n"  # LLaMA-Factory's, the default
    box.set_value("\n\n").run()
    at.button(key="ie_import").click().run()
    assert not at.exception
    assert empty_store.find()[0].messages[0]["content"] == "Translate.\n\ncat"


# --- curation.uploads ------------------------------------------------------------------------

def test_save_upload_writes_inside_the_workspace_under_a_generated_name(tmp_path):
    workspace = tmp_path / "ws"
    path = save_upload(admin("t"), workspace, b'{"a": 1}\n')
    assert path.parent == (workspace / "uploads").resolve()
    assert path.read_bytes() == b'{"a": 1}\n'
    second = save_upload(admin("t"), workspace, io.BytesIO(b"x,y\n1,2\n"))
    assert second != path and second.parent == path.parent
    assert discard_upload(workspace, second) and not second.exists()


def test_an_oversize_or_empty_upload_is_refused_and_leaves_nothing(tmp_path):
    workspace = tmp_path / "ws"
    with pytest.raises(UploadRejected, match="the limit is"):
        save_upload(admin("t"), workspace, b"x" * 101, max_bytes=100)
    declared = io.BytesIO(b"small")
    declared.size = 10_000  # what Streamlit's UploadedFile reports
    with pytest.raises(UploadRejected, match="limit"):
        save_upload(admin("t"), workspace, declared, max_bytes=1_000)
    with pytest.raises(UploadRejected, match="empty"):
        save_upload(admin("t"), workspace, b"")
    assert list((workspace / "uploads").iterdir()) == []
    assert save_upload(admin("t"), workspace, b"x" * 100, max_bytes=100).stat().st_size == 100


def test_paths_outside_the_uploads_folder_cannot_be_discarded(tmp_path):
    workspace = tmp_path / "ws"
    save_upload(admin("t"), workspace, b"keep me")
    victim = tmp_path / "passwd"
    victim.write_text("root")
    assert not discard_upload(workspace, workspace / "uploads" / ".." / ".." / "passwd")
    assert not discard_upload(workspace, victim)
    assert victim.read_text() == "root"
    other = workspace / "uploads" / "notes.txt"
    other.write_text("not ours")
    assert remove_stale_uploads(workspace, older_than_s=-1) == 1  # only the generated name
    assert other.exists()


def test_export_names_stay_inside_the_exports_folder(tmp_path):
    workspace = tmp_path / "ws"
    for name in ("../../etc/passwd", "/abs/path", "..", "a\\..\\b", "Ünïcode run #3"):
        target = export_target(workspace, name)
        assert target.parent == workspace / "exports", name
        assert target.suffix == ".jsonl" and not target.name.startswith(".")
    assert safe_stem("Ünïcode run #3") == "Unicode-run-3"
    assert export_target(workspace, None).name.startswith("export-")
    (workspace / "exports").mkdir(parents=True)
    (workspace / "exports" / "v1.jsonl").write_text("")
    assert export_target(workspace, "v1").name != "v1.jsonl"  # never overwrites


def test_kind_is_sniffed_from_content_not_name(tmp_path):
    workspace = tmp_path / "ws"
    csv_path = save_upload(admin("t"), workspace, CSV)
    jsonl_path = save_upload(admin("t"), workspace,
                             orjson.dumps({"prompt": "p", "completion": "c"}) + b"\n")
    array_path = save_upload(admin("t"), workspace, b'[{"instruction": "i", "output": "o"}]')
    assert [preview_file(p).kind for p in (csv_path, jsonl_path, array_path)] == [
        "csv", "jsonl", "json"]
    assert preview_file(jsonl_path).detected_format == "prompt_completion"
    assert preview_file(array_path).detected_format == "alpaca"
    assert preview_file(csv_path).needs_mapping
    # Why the saved name is neutral: with the user's name, a CSV called .jsonl is misread.
    misnamed = tmp_path / "data.jsonl"
    misnamed.write_bytes(CSV)
    assert sniff_kind(misnamed) == "jsonl"


def test_preview_reports_bad_lines_and_suggests_a_mapping(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl",
                       ['{"text": "q", "category": "c"}', "{not json", {"text": "r"}])
    preview = preview_file(path)
    assert preview.kind == "jsonl" and preview.needs_mapping
    assert [e.code for e in preview.errors] == ["invalid_json"]
    assert preview.columns == ["text", "category"]
    assert suggest_mapping(preview.columns) == {"prompt": "text", "label": "category"}
    assert suggest_mapping(["Question", "Answer", "id"]) == {
        "prompt": "Question", "response": "Answer", "id": "id"}


def test_an_uploaded_mapping_imports_through_the_core(tmp_path, empty_store):
    """The mapping the page builds ({target: column}) is what import_file takes."""
    path = save_upload(admin("t"), tmp_path / "ws", CSV)
    mapping = {k: v for k, v in suggest_mapping(preview_file(path).columns).items()}
    report = import_file(empty_store, path, mapping=mapping, user=admin("ada"))
    assert report.imported == 2 and report.rejected[0].code == "missing_content"


def test_csv_preview_lists_unreadable_rows_instead_of_failing(tmp_path):
    path = save_upload(admin("t"), tmp_path / "ws",
                       b"question,answer\nq1,a1\n" + b'"' + b"x" * 200_000
                       + b'",a2\nq\x003,a3\nq4,a4\n')
    preview = preview_file(path)
    assert [r["question"] for r in preview.records] == ["q1", "x" * 200_000, "q4"]
    assert [(e.line, e.code) for e in preview.errors] == [(4, "invalid_csv")]


def test_a_label_conflict_is_imported_and_shown(page, seeded_store):
    relabelled = {"messages": chat("question 0 about billing", "answer 0"), "label": "access"}
    at = page(seeded_store)
    at.file_uploader[0].set_value(("relabel.jsonl", orjson.dumps(relabelled), "text/plain")).run()
    at.button(key="ie_import").click().run()
    assert not at.exception
    assert metrics(at)["Imported"] == "1"
    assert "another label. Both are kept" in at.warning[0].value
    conflicts = table_with(at, "other label")
    assert conflicts.values.tolist() == [[1, "access", "billing", "example #1"]]
    assert [e.label for e in seeded_store.find() if e.messages == relabelled["messages"]] == [
        "billing", "access"]


def test_export_of_unchanged_data_says_the_snapshot_was_reused(page, seeded_store):
    at = page(seeded_store)
    at.multiselect(key="ie_export_status").set_value(["pending"])
    at.text_input(key="ie_export_name").set_value("ux-openai")
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.info
    at.text_input(key="ie_export_name").set_value("again")
    at.form_submit_button[0].click().run()
    [snapshot] = seeded_store.snapshots()
    shown = at.info[0].value.replace("\\", "").replace("\u2060", "")
    assert shown == (f"Same content as snapshot ux-openai ({snapshot.id}): reused; it keeps "
                     "its name, not 'again'.")


def test_media_rows_are_refused_unless_drop_media_is_ticked(page, empty_store):
    llava = {"messages": [{"role": "user", "content": "<image>\nWhat is in the picture?"},
                          {"role": "assistant", "content": "A cat on a mat."}],
             "images": ["cat.png"]}
    body = orjson.dumps(llava) + b"\n"
    at = page(empty_store)
    at.file_uploader[0].set_value(("llava.jsonl", body, "application/jsonl")).run()
    assert any("unless you tick 'Drop images, video and audio'" in c.value for c in at.caption)
    at.button(key="ie_import").click().run()
    assert empty_store.count() == 0
    assert metrics(at)["Rejected"] == "1"
    assert "unsupported_modality" in table_with(at, "field")["code"].tolist()
    at = page(empty_store)
    at.file_uploader[0].set_value(("llava2.jsonl", body, "application/jsonl")).run()
    at.checkbox(key=next(c.key for c in at.checkbox
                         if c.label == "Drop images, video and audio")).check().run()
    at.button(key="ie_import").click().run()
    assert not at.exception, at.exception
    [example] = empty_store.find()
    assert example.messages[0]["content"] == "What is in the picture?"
