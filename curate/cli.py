"""The `curate` command line: a few lines per command over the core library.

Every command takes `--db PATH` (default `$CURATE_DB`, else `./workspace/curate.duckdb`).
A user error (any `CurateError`) prints one line on stderr and exits with status 1; only a
bug shows a traceback.
The CLI acts as the workspace's local admin (`_cli_user`); `--actor` names who is recorded.
Every file it (or a library it calls, or a trainer it starts) writes is private to the user:
the umask is 077 from the start.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import click
import duckdb
import orjson

from curate.workspace import Workspace
from curation import CurateError, ExampleFilter, StoreUnreadable, default_db_path
from curation._files import private_umask
from curation.auth import ROLES, User
from curation.formats import (DEFAULT_ALPACA_SEPARATOR, DEFAULT_MAX_FIELD_CHARS, EXPORT_FORMATS,
                              INPUT_FORMATS, parse_mapping)
from curation.query import SPLITS, STATUSES
from curation.store import is_damage, store_error
from curation.text import duration
from training.config import EvalConfig, default, help_text
from training.run_folder import EvalResult


def _default_actor() -> str:
    return os.environ.get("CURATE_USER") or f"cli:{getpass.getuser()}"


def _cli_user(actor: str | None = None) -> User:
    """Who the CLI acts as: the local admin, recorded as `actor` (default `_default_actor`)."""
    return User(actor or _default_actor(), "admin")


db_option = click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path),
                         default=None, help="Workspace database file. Default: $CURATE_DB, "
                         "else ./workspace/curate.duckdb.")
actor_option = click.option("--actor", default=_default_actor, show_default="$CURATE_USER or "
                            "cli:<login>", help="Who is recorded in the audit log.")


def _open(db: Path | None, actor: str | None = None, *, create: bool = False) -> Workspace:
    """The workspace at `db` (default `default_db_path()`), acted on as the local admin.
    Only the commands that put something in a workspace (`init`, `import`, `user add`) pass
    `create`: any other on a path where there is none is an error naming the path, rather
    than a new, empty workspace (and its folders) made wherever a typo or the current folder
    pointed."""
    path = db or default_db_path()
    click.get_current_context().meta["curate.db"] = path
    if not create and not path.exists():
        where = "" if path.is_absolute() else f" (from {Path.cwd()})"
        raise StoreUnreadable(f"there is no workspace at {path}{where}: run the command in the "
                              "folder that holds workspace/, or name it with --db or "
                              f"$CURATE_DB; `curate init --db {path}` creates a new one")
    return Workspace.open(path, _cli_user(actor))


@contextlib.contextmanager
def _new_workspace_undone_on_error(db: Path | None):
    """Where there was no workspace at `db`, a command that fails with a user error (an import
    of a file that cannot be read) leaves none: the database file it made, its log and the
    folders it made are removed, so a failed first import does not leave an empty workspace
    behind; never one that holds an example. Runs after the workspace is closed (enter it
    before `_open`)."""
    path = (db or default_db_path()).absolute()
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        yield
    except CurateError:
        from curation.store import file_counts

        if made and path.is_file() and not file_counts(path)["examples"]:
            for own in (path, path.with_name(path.name + ".wal")):
                own.unlink(missing_ok=True)
            for folder in made[1:]:  # innermost first; only if nothing else was put there
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


_json_out = None  # where _print_json writes: the real stdout while a --json command runs


def json_option(command):
    """`--json`: stdout then carries one JSON document and nothing else. While the command runs,
    anything else written to stdout (library chatter such as cleanlab's, at the Python and at
    the file-descriptor level) goes to stderr; `_print_json` writes to the real stdout."""

    @functools.wraps(command)
    def run(*args, as_json: bool, **kwargs):
        if not as_json:
            return command(*args, as_json=False, **kwargs)
        with _stdout_reserved_for_json():
            return command(*args, as_json=True, **kwargs)

    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON for machines (only JSON on stdout).")(run)


@contextlib.contextmanager
def _stdout_reserved_for_json():
    global _json_out
    stdout = sys.stdout
    try:
        real_fd = stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): Python level only
        real_fd = False
    stdout.flush()
    saved_fd = os.dup(1) if real_fd else None
    if real_fd:
        os.dup2(2, 1)
    _json_out = os.fdopen(os.dup(saved_fd), "w", encoding="utf-8") if real_fd else stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_out.flush()
        if real_fd:
            _json_out.close()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
        _json_out = None


def _json_default(value):
    """What orjson cannot serialise by itself: every other shape the store and core return."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return str(value)  # paths, UUIDs and the like


def _print_json(value) -> None:
    """One JSON document on stdout. Dict keys that are not strings are written as JSON writes
    them (None as "null", numbers and dates as text), so an unlabelled count never crashes."""
    text = orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2
                        | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    click.echo(text, file=_json_out)


def unescape_separator(text: str) -> str:
    """A separator typed on the command line: `\\n`, `\\t` and `\\\\` become newline, tab and
    backslash; every other character stays as it is."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)],
                  text)


class _Group(click.Group):
    """Turns every CurateError, and every error of the file system (a folder that cannot be
    written, a full disk), into one line on stderr and exit status 1. An argument that is not
    UTF-8 text (bytes the shell passed as they were) is a usage error naming it, before any
    command runs; a reader that went away (`curate ... | head`) ends the command quietly."""

    def parse_args(self, ctx, args):
        for arg in args:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise click.UsageError(f"the argument '{shown}' is not UTF-8 text; Curate "
                                       "takes names, labels, paths and values as UTF-8", ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # stdout's reader is gone: nothing left to tell it
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail
            ctx.exit(141)  # 128 + SIGPIPE, as a command killed by the signal would
        except CurateError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(1)
        except duckdb.Error as exc:  # damage found by a query, after the file opened
            if not is_damage(exc):
                raise
            path = ctx.meta.get("curate.db", default_db_path())
            click.echo(f"error: {store_error(path, exc)}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Curate: turn a domain expert's knowledge into a fine-tuned model.

    \b
    Example:
      curate init --demo && curate stats
    """
    private_umask()  # the workspace, exports, reports and checkpoints are the user's alone


@main.command()
@db_option
@click.option("--demo", is_flag=True, help="Also load the demo dataset (support tickets).")
@actor_option
def init(db, demo, actor):
    """Create the workspace database (and optionally load the demo data).

    \b
    Example:
      curate init --db workspace/curate.duckdb --demo
    """
    with _open(db, actor, create=True) as workspace:
        click.echo(f"workspace {workspace.path} ready (schema version "
                   f"{workspace.store.schema_version()})")
        if demo:
            click.echo(workspace.load_demo().summary())


@main.command()
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@db_option
@json_option
def backup(dest, db, as_json):
    """Copy the workspace into a new file, consistently, in one transaction.

    DEST is a new .duckdb file or a folder (made if need be); default: backups/ beside the
    workspace file.
    The app holds the file while it runs: stop it first. Restore a backup with
    `curate doctor --restore FILE`.

    \b
    Examples:
      curate backup
      curate backup /mnt/safe/curate-monday.duckdb
    """
    with _open(db) as workspace:
        result = workspace.backup(dest)
    if as_json:
        _print_json({"path": result.path, "bytes": result.bytes, "counts": result.counts,
                     "removed": list(result.removed)})
    else:
        click.echo(result.summary())


@main.command()
@db_option
@click.option("--restore", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Put this backup in place of the workspace (the current "
                                 "files are set aside, not deleted).")
@json_option
def doctor(db, restore, as_json):
    """Check the workspace file; if it is damaged, set it aside and reopen the last good state.

    Damaged files are moved aside with a timestamp, never deleted. It keeps, in order: the
    file with the valid part of its write-ahead log, the file alone, the newest backup, or a
    new empty workspace, and says which. Stop the app first.

    \b
    Examples:
      curate doctor
      curate doctor --restore workspace/backups/curate-20261201T090000Z.duckdb
    """
    from curation.maintenance import doctor as run_doctor

    report = run_doctor(db or default_db_path(), user=_cli_user(), restore=restore)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(report.summary())


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option
@click.option("--format", "fmt", type=click.Choice(INPUT_FORMATS), default="auto",
              show_default=True, help="Input format; auto detects it per record.")
@click.option("--map", "mapping", default=None, metavar="TARGET=COLUMN,...",
              help="Map columns of a CSV or JSONL file: targets prompt, response, system, "
                   "label, id, tags.")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True)
@click.option("--status", type=click.Choice(STATUSES), default="pending", show_default=True,
              help="Initial status; 'accepted' for trusted data.")
@click.option("--source", default=None, help="Origin recorded on every example "
                                             "(default: the file name).")
@click.option("--tag", "tags", multiple=True, help="Tag added to every example (repeatable).")
@click.option("--max-field-chars", type=int, default=DEFAULT_MAX_FIELD_CHARS,
              show_default=True, help="Longest accepted text field.")
@click.option("--unanswered", is_flag=True,
              help="Also import prompts without an answer (a chat ending with a user turn, "
                   "an empty Alpaca output or completion, a --map without response): stored "
                   "as pending and 'needs answer', never exported or trained on until "
                   "answered. Example: curate import questions.csv --map prompt=text "
                   "--unanswered")
@click.option("--drop-media", is_flag=True,
              help="Import records with images, videos or audio (`images`/`videos`/`audios`, "
                   "image content parts) as their text only, `<image>`-style placeholders "
                   "removed; without it they are refused (unsupported_modality). Example: "
                   "curate import llava.json --drop-media")
@click.option("--alpaca-separator", default=DEFAULT_ALPACA_SEPARATOR.encode(
                  "unicode_escape").decode(), show_default=True, metavar="TEXT",
              help="Joins an Alpaca instruction and a non-blank input into the user turn; "
                   "\\n and \\t are read as newline and tab. Default: one newline, as "
                   "LLaMA-Factory joins them; '\\n\\n' was Curate's before.")
@click.option("--model-output", is_flag=True,
              help="The answers were written by a model (tagged model-output): an SME's "
                   "edit of one records a preference pair (edited chosen, original rejected). "
                   "Example: curate import drafts.jsonl --model-output")
@actor_option
@json_option
def import_(file, db, fmt, mapping, split, status, source, tags, max_field_chars, unanswered,
            drop_media, alpaca_separator, model_output, actor, as_json):
    """Import examples from JSONL, a JSON array or CSV; bad lines are reported, not fatal.

    \b
    Examples:
      curate import data/demo/support_tickets.jsonl --status accepted
      curate import tickets.csv --map prompt=text,response=reply,label=category --split eval
      curate import questions.csv --map prompt=text,label=category --unanswered
    """
    with _new_workspace_undone_on_error(db), _open(db, actor, create=True) as workspace:
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if as_json or not sys.stderr.isatty():
                return
            if bar is None:
                bar = click.progressbar(length=total, label="importing", file=sys.stderr)
                bar.__enter__()
            bar.update(done - bar.pos)

        report, saved = workspace.import_file(
            file, fmt=fmt, mapping=parse_mapping(mapping, unanswered=unanswered), split=split,
            status=status, source=source, tags=tags, max_field_chars=max_field_chars,
            unanswered=unanswered, model_output=model_output, progress=progress,
            drop_media=drop_media, alpaca_separator=unescape_separator(alpaca_separator))
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        _print_json({**report.to_dict(), "report_file": str(saved)})
        return
    click.echo(report.summary())
    for err in report.rejected[:20]:
        click.echo(f"  line {err.line}: {err.code}: {err.message}")
    if len(report.rejected) > 20:
        click.echo(f"  ... and {len(report.rejected) - 20:,} more")
    for conflict in report.label_conflicts[:20]:
        click.echo(f"  line {conflict.line}: label_conflict (imported): {conflict.message}")
    if len(report.label_conflicts) > 20:
        click.echo(f"  ... and {len(report.label_conflicts) - 20:,} more label conflicts")
    click.echo(f"full report: {saved}")


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="openai",
              show_default=True)
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              default=("accepted",), show_default=True, help="Repeatable.")
@click.option("--split", "splits", multiple=True, type=click.Choice(SPLITS),
              help="Repeatable; default both.")
@click.option("--label", "labels", multiple=True, help="Repeatable; default all labels.")
@click.option("--name", default=None, help="Name of the snapshot if a new one is made.")
@click.option("--plain", is_flag=True,
              help="Leave Curate's fields (the `curate` object: id, label, tags, version, "
                   "split, status, source) out: only the format's own keys, for uploads to "
                   "OpenAI, Bedrock or Vertex AI. Re-importing such a file loses them.")
@actor_option
@json_option
def export(out, db, fmt, statuses, splits, labels, name, plain, actor, as_json):
    """Export a snapshot of the curated set to JSONL, with a manifest beside it.

    Formats: openai, alpaca, prompt_completion, bedrock (Amazon Bedrock conversation),
    vertex (Vertex AI Gemini tuning). openai and alpaca also get their entry in the
    folder's LLaMA-Factory dataset_info.json.

    \b
    Examples:
      curate export curated.jsonl --split train --format openai
      curate export upload.jsonl --format openai --plain
      curate export nova.jsonl --format bedrock --plain
    """
    where = ExampleFilter(status=tuple(statuses), split=tuple(splits), label=tuple(labels))
    with _open(db, actor) as workspace:
        result = workspace.export(out, fmt=fmt, where=where, name=name, plain=plain)
    for leftover in result.removed_temp_files:
        click.echo(f"removed {leftover}, left by an export that was killed", err=True)
    if not result.count:
        click.echo(f"warning: the snapshot is empty: no example matches these filters "
                   f"(status {' or '.join(statuses)}), so {result.path} holds no line",
                   err=True)
    if as_json:
        _print_json(result.to_dict())
    else:
        if result.note:
            click.echo(result.note)
        if result.left_out_note:
            click.echo(result.left_out_note)
        click.echo(f"wrote {result.count:,} examples to {result.path} ({fmt}"
                   f"{', plain' if plain else ''}); snapshot {result.snapshot.id}, manifest "
                   f"{result.manifest_path}")
        if result.dataset_info:
            click.echo(f"LLaMA-Factory: dataset {result.dataset_name!r} in "
                       f"{result.dataset_info}")
        if result.llama_factory_note:
            click.echo(f"LLaMA-Factory: {result.llama_factory_note}")


@main.command()
@db_option
@json_option
def stats(db, as_json):
    """Counts of examples by status, split, label, source and kind, and what needs attention.

    The kinds: sft (a conversation), preference (a pair: chosen and rejected answer), kto (one
    answer flagged desirable or undesirable).

    \b
    Example:
      curate stats --json
    """
    with _open(db) as workspace:
        figures = workspace.stats()
        attention = workspace.needs_attention()
    if as_json:  # JSON keys are text: the unlabelled count gets a key of its own, so a
        # label named "null" cannot collide with it
        by_label = dict(figures["by_label"])
        unlabelled = by_label.pop(None, 0)
        _print_json({**figures, "by_label": by_label, "unlabelled": unlabelled,
                     "needs_attention": [a.message for a in attention]})
        return
    click.echo(f"{figures['total']:,} examples")
    for key in ("status", "split", "label", "source", "kind"):
        click.echo(f"\nby {key}:")
        for value, n in figures[f"by_{key}"].items():
            click.echo(f"  {value if value is not None else '(none)':<30} {n:>8,}")
    click.echo("\nneeds attention:")
    for item in attention or []:
        click.echo(f"  - {item.message}")
    if not attention:
        click.echo("  nothing: every example is decided")


@main.command()
@click.argument("n", type=int, required=False)
@db_option
@actor_option
@json_option
def overlap(n, db, actor, as_json):
    """Show or set how many independent decisions each train example needs (default 1).

    With N > 1 a reviewer's decision on an undecided train example is one blind vote; the
    example is served to N different reviewers, decided when all N agree (same decision and
    label) and sent to the Adjudication queue when they disagree. Setting N settles or
    disputes the open rounds that now have N decisions.

    \b
    Example:
      curate overlap 2
    """
    with _open(db, actor) as workspace:
        if n is None:
            n = workspace.overlap()
            if as_json:
                _print_json({"overlap": n})
            else:
                click.echo(f"Each train example needs {n} independent decision"
                           f"{'s' * (n > 1)}.")
            return
        outcome = workspace.set_overlap(n)
    if as_json:
        _print_json(outcome)  # {"overlap", "agreed", "disputed"}: example ids
        return
    click.echo(f"Each train example now needs {n} independent decision{'s' * (n > 1)}.")
    if outcome["agreed"] or outcome["disputed"]:
        click.echo(f"{len(outcome['agreed']):,} examples decided by their agreeing decisions, "
                   f"{len(outcome['disputed']):,} sent to the Adjudication queue.")


@main.command("edit-pairs")
@click.argument("state", type=click.Choice(["on", "off"]), required=False)
@db_option
@actor_option
@json_option
def edit_pairs(state, db, actor, as_json):
    """Show or set whether an SME's edit of a model's answer records a preference pair.

    A model's answer is a draft (source draft), an accepted model suggestion, or an import
    marked --model-output. The pair (edited answer chosen, the model's rejected) is saved as
    a new pending preference example (source sme-edit). On by default.

    \b
    Example:
      curate edit-pairs off
    """
    with _open(db, actor) as workspace:
        on = workspace.edit_pairs_enabled() if state is None else \
            workspace.set_edit_pairs(state == "on")
    if as_json:
        _print_json({"edit_pairs": on})
    else:
        click.echo("Pairs from SME edits are " + ("on" if on else "off") + ".")


@main.command()
@db_option
@json_option
def agreement(db, as_json):
    """Agreement on the examples with overlap: Cohen's kappa per reviewer pair, Fleiss' kappa.

    Computed on every round of two or more independent decisions; a decision's category is
    its decision and label together. Per label: Fleiss' kappa with the label one-vs-rest, and
    the share of the items touching the label where every decision gave it (docs/review.md).

    \b
    Example:
      curate agreement --json
    """
    with _open(db) as workspace:
        result = workspace.agreement()
    if as_json:
        _print_json(result.to_dict())
        return

    def k(value):
        return "-" if value is None else f"{value:.3f}"

    click.echo(f"Overlap {result.overlap}; {result.items:,} examples with two or more "
               f"decisions by {len(result.reviewers)} reviewers; {result.in_adjudication:,} "
               "in adjudication.")
    if not result.items:
        click.echo("No example has two decisions yet: set `curate overlap 2` and review.")
        return
    click.echo(f"All decisions agree on {result.observed:.0%}; Fleiss' kappa {k(result.fleiss)}")
    click.echo(f"\n{'reviewers':<40} {'items':>6} {'agree':>6} {'kappa':>7}")
    for p in result.pairs:
        click.echo(f"{p.a + ' / ' + p.b:<40} {p.items:>6} {p.observed:>6.0%} {k(p.kappa):>7}")
    click.echo(f"\n{'label':<40} {'items':>6} {'agree':>6} {'kappa':>7}")
    for lab in result.labels:
        click.echo(f"{lab.label or '(no label)':<40} {lab.items:>6} {lab.all_agree:>6.0%} "
                   f"{k(lab.kappa):>7}")


@main.command()
@db_option
@json_option
def snapshots(db, as_json):
    """List the snapshots (immutable dataset versions) with their hashes and counts.

    \b
    Example:
      curate snapshots --json
    """
    with _open(db) as workspace:
        items = workspace.snapshots()
    if as_json:
        _print_json([{"id": s.id, "name": s.name, "count": s.count, "content_hash": s.content_hash,
                      "filters": s.filters, "created_by": s.created_by,
                      "created_at": s.created_at.isoformat(), "runs": item.run_ids}
                     for item in items for s in [item.snapshot]])
        return
    if not items:
        click.echo("no snapshots yet: `curate export` makes one")
    for item in items:
        s = item.snapshot
        runs = f"  trained in {', '.join(item.run_ids)}" if item.run_ids else ""
        click.echo(f"{s.id}  {s.count:>7,} examples  sha256 {s.content_hash[:16]}  {s.name}"
                   f"{runs}")


def _progress_printer(as_json: bool):
    """A progress callback printing one updating line on stderr (silent for --json)."""
    if as_json or not sys.stderr.isatty():
        return None

    def show(fraction: float, message: str) -> None:
        click.echo(f"\r[{fraction:4.0%}] {message:<60}", nl=fraction >= 1.0, err=True)

    return show


def _findings_json(store, result) -> dict:
    external = {e.id: e.external_id for e in store.find(ExampleFilter(
        ids=tuple(f.example_id for f in result.issues)))} if result.issues else {}
    return {"check": result.check, "summary": result.summary,
            "findings": [{"id": f.example_id, "external_id": external.get(f.example_id),
                          "score": f.score, "reason": f.reason, "details": f.details}
                         for f in result.issues]}


def _run_checks(db, names, actor, as_json, force):
    with _open(db, actor) as workspace:
        results = workspace.run_checks(names, progress=_progress_printer(as_json), force=force)
        payload = [_findings_json(workspace.store, r) for r in results]
    if as_json:
        _print_json(payload if len(payload) > 1 else payload[0])
        return
    for item in payload:
        click.echo(f"{item['check']}: {len(item['findings'])} flagged  {item['summary']}")
        for f in item["findings"][:15]:
            ext = f" ({f['external_id']})" if f["external_id"] else ""
            click.echo(f"  #{f['id']}{ext}  score {f['score']:.3f}  {f['reason']}")
        if len(item["findings"]) > 15:
            click.echo(f"  ... and {len(item['findings']) - 15} more (--json lists all)")


force_option = click.option("--force", is_flag=True,
                            help="Recompute even if nothing changed since the last run.")


@main.command()
@db_option
@click.option("--model", default=None, help="Embedding model for this workspace: a local "
              "folder or hub id (saved); default the packaged all-MiniLM-L6-v2.")
@json_option
def embed(db, model, as_json):
    """Embed every example's prompt (only new or changed ones are computed).

    \b
    Example:
      curate embed
      curate embed --model /models/bge-small-en-v1.5
    """
    with _open(db) as workspace:
        result = workspace.embed(model=model, progress=_progress_printer(as_json))
    model_name = result["model"]
    if as_json:
        _print_json(result)
    else:
        click.echo(f"{result['examples']:,} prompts embedded with {model_name} "
                   f"({result['dimension']} dimensions)")


@main.command()
@db_option
@click.option("--method", type=click.Choice(["exact", "near", "semantic", "all"]),
              default="all", show_default=True)
@actor_option
@force_option
@json_option
def dedupe(db, method, actor, force, as_json):
    """Find exact, near and semantic duplicate groups (and train/eval leakage with 'all').

    \b
    Example:
      curate dedupe --method near --json
    """
    names = {"exact": ["exact_duplicates"], "near": ["near_duplicates"],
             "semantic": ["semantic_duplicates"],
             "all": ["exact_duplicates", "near_duplicates", "semantic_duplicates",
                     "leakage"]}[method]
    _run_checks(db, names, actor, as_json, force)


@main.command()
@db_option
@actor_option
@force_option
@json_option
def noise(db, actor, force, as_json):
    """Flag likely mislabeled examples (cleanlab), outliers and answers that fit no question.

    \b
    Example:
      curate noise --json
    """
    _run_checks(db, ["label_issues", "outliers", "answer_mismatch"], actor, as_json, force)


@main.command()
@click.argument("names", nargs=-1)
@db_option
@actor_option
@force_option
@json_option
def check(names, db, actor, force, as_json):
    """Run curation checks by name (default: special_tokens, the chat-template tokens check).

    Any check of the Quality page can be named (exact_duplicates, near_duplicates,
    semantic_duplicates, leakage, label_issues, outliers, answer_mismatch, coverage,
    special_tokens); findings are printed worst first and kept for the Quality page.

    \b
    Example:
      curate check special_tokens --json
    """
    from curation.checks import REGISTRY

    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise click.BadParameter(f"unknown check {unknown[0]!r}; known: "
                                 f"{', '.join(sorted(REGISTRY))}", param_hint="NAMES")
    _run_checks(db, list(names) or ["special_tokens"], actor, as_json, force)


@main.command()
@db_option
@click.option("--min-per-label", type=int, default=None,
              help="Set the workspace's target: minimum examples per label (saved).")
@actor_option
@force_option
@json_option
def coverage(db, min_per_label, actor, force, as_json):
    """The gap list: labels ranked by what hurts, shortfall x the model's error rate there.

    Each label's shortfall against its target (train and eval together) is multiplied by the
    fine-tuned model's error rate on the label's eval examples in the latest evaluation (the
    newest run that has one); a label not scored counts as an error rate of 1, so before any
    evaluation the order is the shortfall's. Also runs the coverage check, which puts the
    examples of labels under their target in the Review page's Thin labels queue.

    \b
    Example:
      curate coverage --min-per-label 30 --json
    """
    from dataclasses import asdict

    with _open(db, actor) as workspace:
        result, ranked = workspace.coverage(min_per_label=min_per_label, force=force)
    if as_json:
        _print_json({"gaps": [asdict(g) for g in ranked.gaps], "queued": len(result.issues),
                     "evaluation": {"run_id": ranked.run_id, "metric": ranked.metric,
                                    "created_at": ranked.evaluated_at},
                     "rule": ranked.rule})
        return
    click.echo(f"{'label':<28} {'train':>6} {'eval':>6} {'want':>6} {'short':>6} "
               f"{'error':>6} {'key':>6}")
    for g in ranked.gaps:
        error = "-" if g.error_rate is None else f"{g.error_rate * 100:.0f}%"
        click.echo(f"{g.label:<28} {g.train:>6} {g.eval:>6} {g.want:>6} {g.shortfall:>6} "
                   f"{error:>6} {g.rank_key:>6g}")
    click.echo(ranked.rule)
    click.echo(f"Error rates from the evaluation of run {ranked.run_id} ({ranked.metric})."
               if ranked.run_id else "No run has been evaluated yet: every error rate counts "
               "as 1, so the order is the shortfall's.")
    click.echo(f"{len(result.issues):,} examples of labels under their target are in the "
               "Review page's Thin labels queue.")


@main.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@db_option
@click.option("-k", "k", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many nearest training examples to show as evidence per failure.")
@actor_option
@json_option
def failures(run_id, db, k, actor, as_json):
    """The eval examples the fine-tuned model got wrong, worst first, with evidence.

    For each failure: the model's answer, the reference, and the K nearest training examples
    (by prompt embedding) with their labels and any open findings on them. Without RUN, the
    latest evaluated run, whose failures also feed the Review page's Eval failures and
    Expected impact queues.

    \b
    Example:
      curate failures --json
      curate failures run-20260101-120000 -k 5
    """
    from dataclasses import asdict

    with _open(db, actor) as workspace:
        found = workspace.failures(run_id)
        items = [workspace.failure_evidence(f, k) for f in found]
    if as_json:
        _print_json({"failures": [asdict(e) for e in items]})
        return
    if not items:
        click.echo("No eval failures: " + ("the fine-tuned model got every eval example right."
                                            if run_id or workspace.latest_evaluation()
                                            else "no run has been evaluated yet."))
        return
    for e in items:
        click.echo(f"#{e.example_id} (score {e.score:.2f}, run {e.run_id}): answered "
                   f"{e.answer!r}, reference {e.reference!r}")
        click.echo(f"  {e.summary}")
        for n in e.neighbours:
            click.echo(f"  - #{n.example_id} {n.label or '(no label)'} "
                       f"(similarity {n.similarity:.2f})"
                       + "".join(f"\n      flagged as {flag}" for flag in n.flags))


@main.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@db_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              default=("pending",), show_default=True,
              help="Which train examples to pre-label (repeatable).")
@click.option("--calibration", is_flag=True,
              help="Instead of pre-labelling, check the confidence against the run's eval "
                   "split: expected calibration error, accuracy in each band, reliability bins.")
@click.option("--thresholds", "new_thresholds", metavar="HIGH,LOW", default=None,
              help="Store the workspace's confidence thresholds first (default 0.9,0.7).")
@actor_option
@json_option
def predict(run_id, db, statuses, calibration, new_thresholds, actor, as_json):
    """Pre-label: a run's model answers the selected train examples, with a confidence.

    Each answer is stored as a suggestion beside the example version (shown in Review with its
    band), never over a person's text. For label answers, the answer is the most probable of the
    run's known labels and its confidence that probability, normalised over the labels; for free
    text, a greedy answer and the mean probability of its tokens. Without RUN: the best evaluated
    run whose verdict is deploy, else the latest evaluated run. Runs in this process, with progress
    on stderr.

    \b
    Example:
      curate predict --json
      curate predict run-20260101-120000 --status pending --status needs_work
      curate predict --calibration --thresholds 0.95,0.8
    """
    from curation.errors import InvalidValue
    from curation.suggestions import band_name

    with _open(db, actor) as workspace:
        if new_thresholds:
            try:
                high, low = (float(x) for x in new_thresholds.split(","))
            except ValueError:
                raise InvalidValue(f"--thresholds {new_thresholds!r}: give HIGH,LOW, for "
                                   "example 0.9,0.7") from None
            workspace.set_thresholds(high, low)
        if calibration:
            figures = workspace.calibration(run_id)
        else:
            show = _progress_printer(as_json)
            result = workspace.predict(run_id, status=tuple(statuses), progress=None if
                                       show is None else lambda d, t: show(d / t, "pre-labelling"))
    if calibration:
        if as_json:
            _print_json(figures)
            return
        ece = "-" if figures["ece"] is None else f"{figures['ece']:.3f}"
        click.echo(f"Run {figures['run_id']}: {figures['examples']} eval examples, confidence "
                   f"by {figures['method']}; expected calibration error {ece}")
        for name, b in figures["bands"].items():
            acc = "-" if b["accuracy"] is None else f"{b['accuracy'] * 100:.0f}%"
            click.echo(f"  {name:<7} {b['range']:<12} {b['examples']:>5} examples, "
                       f"accuracy {acc}")
        return
    if as_json:
        _print_json(result.to_dict())
        return
    high, low = result.thresholds
    click.echo(f"Run {result.run_id} pre-labelled {len(result.suggestions)} examples "
               f"(confidence: {result.method}).")
    for name, count in result.bands.items():
        click.echo(f"  {name:<7} {band_name(name, high, low):<12} {count:>5}")


@main.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@db_option
@click.option("--qa-share", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Share of the auto-accepted band sent to the QA sample queue.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the QA sample: the same band and seed give the same sample.")
@click.option("--undo", "undo_run", metavar="RUN", default=None,
              help="Instead of routing, put back to pending every example RUN auto-accepted "
                   "that nobody has changed since.")
@click.option("--status", "show_status", is_flag=True,
              help="Instead of routing, show the last routing and the auto band's measured "
                   "precision (QA sample reviewed so far, and the eval split).")
@actor_option
@json_option
def route(run_id, db, qa_share, seed, undo_run, show_status, actor, as_json):
    """Route pre-labelled examples by confidence (after `curate predict`).

    Each pending train example with the run's suggestion for its current version goes by
    the workspace's thresholds (see `curate predict --thresholds`): at or above the high one
    it is accepted with the model's answer, audited as `model:RUN` (a seeded QA sample of
    them goes to the "QA sample" review queue); between the two, to the "Model suggestions"
    queue, where m accepts the suggestion; below the low one, it stays pending without a
    suggestion. A confident answer that differs from the example's own answer is never
    written over it: it goes to Model suggestions. Without RUN: the run `curate predict`
    uses by default.

    \b
    Example:
      curate predict && curate route --json
      curate route run-20260101-120000 --qa-share 0.1 --seed 7
      curate route --status
      curate route --undo run-20260101-120000
    """
    with _open(db, actor) as workspace:
        if undo_run:
            reverted = workspace.revert_auto_accepts(undo_run)
            if as_json:
                _print_json({"run_id": undo_run, "reverted": reverted})
            else:
                click.echo(f"Put {len(reverted)} auto-accepted examples of run {undo_run} "
                           "back to pending.")
            return
        if show_status:
            status = workspace.routing_status()
            if as_json:
                _print_json(status)
            elif status is None:
                click.echo("Nothing has been routed yet: run `curate predict`, then "
                           "`curate route`.")
            else:
                _echo_routing_status(status)
            return
        show = _progress_printer(as_json)
        result = workspace.route(run_id, qa_share=qa_share, seed=seed, progress=None if
                                 show is None else lambda d, t: show(d / t, "auto-accepting"))
    if as_json:
        _print_json(result.to_dict())
        return
    if not result.routed:
        click.echo(f"Nothing to route: no pending train example has a suggestion of run "
                   f"{result.run_id} for its current version (run `curate predict "
                   f"{result.run_id}` first).")
        return
    shares = result.shares()
    high, low = result.thresholds

    def part(n: int, share: float | None) -> str:
        return f"{n} ({share:.0%})" if share is not None else str(n)

    click.echo(f"Routed {result.routed} examples pre-labelled by run {result.run_id} "
               f"(thresholds {high:g} and {low:g}):")
    click.echo(f"  auto-accepted {part(len(result.auto_accepted), shares['auto_accepted'])}, "
               f"{len(result.qa_sample)} of them in the QA sample (seed {result.seed})")
    click.echo(f"  to Model suggestions "
               f"{part(len(result.suggested) + len(result.disagreed), shares['review'])}"
               + (f", {len(result.disagreed)} of them confident but different from the "
                  "stored answer" if result.disagreed else ""))
    click.echo(f"  left to people {part(len(result.left), shares['left'])}")


def _echo_routing_status(status: dict) -> None:
    high, low = status["thresholds"]["high"], status["thresholds"]["low"]
    n = status["routed"]
    shares = status["shares"]

    def pct(share):
        return "-" if share is None else f"{share:.0%}"

    click.echo(f"Last routing: run {status['run_id']}, {n} examples, thresholds {high:g} and "
               f"{low:g}, by {status['run_by']} at {status['run_at']:%Y-%m-%d %H:%M} UTC")
    click.echo(f"  auto-accepted {status['auto']} ({pct(shares['auto_accepted'])}), to Model "
               f"suggestions {status['middle'] + status['disagreed']} ({pct(shares['review'])}), "
               f"left to people {status['low']} ({pct(shares['left'])})")
    qa = status["qa"]
    click.echo(f"  QA sample: {qa['reviewed']} of {qa['sampled']} reviewed"
               + (f", precision {qa['precision']:.1%}" if qa["precision"] is not None else ""))
    ev = status["eval"]
    click.echo("  on the eval split: " + (
        f"{ev['examples']} answers at confidence {ev['range']}, accuracy "
        f"{pct(ev['accuracy'])}" if ev else "not checked yet (`curate predict --calibration`)"))


@main.group()
def user():
    """Manage the people who may sign in, and their roles.

    \b
    Example:
      curate user add alice --role reviewer
    """


@user.command("add")
@click.argument("name")
@db_option
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="annotator: edit; reviewer: also accept/reject; admin: also import, export, "
                   "delete, manage users, train.")
@click.option("--email", default=None, help="E-mail address for single sign-on (st.login).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
                                                     "instead of prompting.")
@click.option("--no-password", is_flag=True, help="No local password (single sign-on only).")
def user_add(name, db, role, email, password_stdin, no_password):
    """Create an account with a role; the password is stored as an argon2 hash.

    \b
    Example:
      curate user add alice --role reviewer
      echo "$PASSWORD" | curate user add bob --role admin --password-stdin
    """
    if no_password:
        password = None
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    with _open(db, create=True) as workspace:
        created = workspace.add_user(name, role, password=password, email=email)
    click.echo(f"user {created.name} ({created.role}) created")


@user.command("list")
@db_option
@json_option
def user_list(db, as_json):
    """List the accounts and their roles.

    \b
    Example:
      curate user list --json
    """
    with _open(db) as workspace:
        people = workspace.users()
    if as_json:
        _print_json([{"name": u.name, "role": u.role, "email": u.email} for u in people])
        return
    for person in people:
        click.echo(f"{person.name:<20} {person.role:<10} {person.email or ''}")


@user.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@db_option
def user_set_role(name, role, db):
    """Change someone's role.

    \b
    Example:
      curate user set-role alice admin
    """
    with _open(db) as workspace:
        changed = workspace.set_role(name, role)
    click.echo(f"user {changed.name} is now {changed.role}")


@user.command("sessions")
@db_option
@json_option
def user_sessions(db, as_json):
    """List who is signed in to the app now (sessions not signed out or expired), newest
    first.

    \b
    Example:
      curate user sessions --json
    """
    with _open(db) as workspace:
        open_ = workspace.open_sessions()
    if as_json:
        _print_json(open_)
        return
    if not open_:
        click.echo("nobody is signed in", err=True)
    for row in open_:
        click.echo(f"{row['user']:<20} since {row['started']:%Y-%m-%d %H:%M} UTC, until "
                   f"{row['expires']:%Y-%m-%d %H:%M} UTC")


@user.command("sign-out")
@click.argument("name")
@db_option
def user_sign_out(name, db):
    """Sign every app session of an account out (a lost laptop, someone who left): their
    session cookies stop working at their next click.

    \b
    Example:
      curate user sign-out alice
    """
    with _open(db) as workspace:
        ended = workspace.end_sessions(name)
    click.echo(f"signed out {ended} open session{'s' * (ended != 1)} of {name}")


@main.group()
def guidelines():
    """Show, set and list the versions of the workspace's review guidelines (Markdown).

    \b
    Example:
      curate guidelines set guidelines.md && curate guidelines show
    """


@guidelines.command("show")
@db_option
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="A saved version; default the current one.")
@json_option
def guidelines_show(db, version, as_json):
    """Print the guidelines (the Markdown text as saved).

    \b
    Example:
      curate guidelines show --version 2 --json
    """
    with _open(db) as workspace:
        shown = workspace.guidelines(version)
    if as_json:
        _print_json(shown.to_dict() if shown else {"version": 0, "text": ""})
        return
    if shown is None:
        click.echo("no guidelines yet: an admin writes them on the Guidelines page, or with "
                   "`curate guidelines set FILE`", err=True)
        return
    click.echo(shown.text, nl=not shown.text.endswith("\n"))


@guidelines.command("set")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option
@click.option("--note", default=None, help="What changed, kept with the version.")
@actor_option
def guidelines_set(file, db, note, actor):
    """Save a Markdown file as the next version of the guidelines (as an admin).

    \b
    Example:
      curate guidelines set guidelines.md --note "refunds: ask for the order number"
    """
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"{file} is not UTF-8 text") from None
    with _open(db, actor) as workspace:
        saved = workspace.save_guidelines(text, note=note)
    click.echo(f"guidelines version {saved.version} saved by {saved.saved_by}")


@guidelines.command("history")
@db_option
@json_option
def guidelines_history(db, as_json):
    """List the versions of the guidelines, newest first: who saved each, when, and why.

    \b
    Example:
      curate guidelines history --json
    """
    with _open(db) as workspace:
        versions = workspace.guidelines_history()
    if as_json:
        _print_json([{k: v for k, v in g.to_dict().items() if k != "text"}
                     | {"chars": len(g.text)} for g in versions])
        return
    for g in versions:
        click.echo(f"{g.version:>4}  {g.saved_at:%Y-%m-%d %H:%M}  {g.saved_by:<16} "
                   f"{g.note or ''}")


@main.command()
@db_option
@click.option("--minutes", type=float, default=None,
              help="Set how long a lease lasts without renewal (default 5 minutes).")
@json_option
def leases(db, minutes, as_json):
    """Who holds which example of a review queue, and until when (leases, UTC).

    Each person walking a queue in Review gets their own example, leased to them while they
    work on it; a decision, a skip or the timeout releases it.

    \b
    Example:
      curate leases --json
      curate leases --minutes 10
    """
    with _open(db) as workspace:
        if minutes is not None:
            workspace.set_lease_minutes(minutes)
        held = workspace.leases()
        length = workspace.lease_minutes()
    if as_json:
        _print_json([lease.to_dict() for lease in held])
        return
    if minutes is not None:
        click.echo(f"a lease now lasts {minutes:g} minutes without renewal")
    if not held:
        click.echo(f"nobody holds a lease (a lease lasts {length:g} minutes)")
    for lease in held:
        click.echo(f"{lease.holder:<20} #{lease.example_id:<8} {lease.queue or '':<16} "
                   f"since {lease.acquired_at:%H:%M:%S}, until {lease.expires_at:%H:%M:%S} UTC")


LOOPBACK_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def _streamlit_settings() -> list[str]:
    """Curate's Streamlit settings (curate/ui/streamlit_config.toml) as command-line flags, so
    they apply whatever folder `curate app` is started from."""
    import tomllib
    from importlib.resources import files

    config = tomllib.loads(files("curate.ui").joinpath("streamlit_config.toml").read_text())
    return [arg for section, options in config.items() for key, value in options.items()
            for arg in (f"--{section}.{key}", str(value).lower() if isinstance(value, bool)
                        else str(value))]


def _open_browser_when_up(url: str, server: subprocess.Popen) -> None:
    """Open the user's browser on `url` once the server answers its health check."""
    import threading
    import time
    import urllib.request
    import webbrowser

    def wait_then_open():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).close()
            except OSError:
                time.sleep(0.3)
                continue
            if not webbrowser.open(url):
                click.echo(f"no browser could be opened here; open {url} yourself", err=True)
            return

    threading.Thread(target=wait_then_open, daemon=True).start()


@main.command()
@db_option
@click.option("--port", type=int, default=8501, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Network address to listen on; 0.0.0.0 for every interface (a team server "
                   "with sign-in). Single-user mode refuses any but this computer's own "
                   "(127.0.0.1, localhost, ::1) without --unsafe-single-user-on-network.")
@click.option("--browser", is_flag=True, help="Also open a browser window on the app once it "
              "is up (by default the app starts headless and prints its address).")
@click.option("--single-user", is_flag=True,
              help="No sign-in: one local admin. Every page says so. For working alone; "
                   "listens on this computer only.")
@click.option("--unsafe-single-user-on-network", "unsafe_network", is_flag=True,
              help="Allow --single-user on a non-loopback --address: ANYONE who can reach the "
                   "port is then an admin of the workspace, without signing in.")
def app(db, port, address, browser, single_user, unsafe_network):
    """Start the Curate app (Streamlit) on the workspace.

    Starts headless (never asks anything on the terminal) and prints the address; --browser
    also opens a browser window there.

    \b
    Example:
      curate app --single-user
      curate app --db workspace/curate.duckdb --address 0.0.0.0 --port 8501
    """
    from importlib.resources import files

    if single_user and address not in LOOPBACK_ADDRESSES and not unsafe_network:
        raise CurateError(f"--single-user skips sign-in, so it listens on this computer only; "
                          f"--address {address} would make anyone who can reach port {port} an "
                          f"admin. Leave out --address, or add --unsafe-single-user-on-network "
                          f"if that is really what you want")
    host = f"[{address}]" if ":" in address else address
    url = f"http://{'localhost' if address in LOOPBACK_ADDRESSES else host}:{port}"
    env = {**os.environ, "CURATE_DB": str((db or default_db_path()).resolve()),
           "CURATE_SINGLE_USER": "1" if single_user else "0", "CURATE_LISTEN": f"{host}:{port}"}
    main_script = files("curate.ui.entry").joinpath("curate_app.py")
    command = [sys.executable, "-m", "streamlit", "run", str(main_script), *_streamlit_settings(),
               "--server.port", str(port), "--server.address", address,
               "--server.headless", "true"]
    click.echo(f"Curate on {url} (workspace {env['CURATE_DB']}); Ctrl+C stops it", err=True)
    server = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):  # stopping us stops the server
        signal.signal(stop_signal, lambda *_: server.terminate())
    if browser:
        _open_browser_when_up(url, server)
    try:
        raise SystemExit(server.wait())
    except KeyboardInterrupt:
        server.terminate()
        raise SystemExit(server.wait()) from None


# --- training runs (training.launcher) ------------------------------------------------------------

def _train_setting_options(func):
    """One option per TrainConfig field named here, its help text taken from the field."""
    settings = [("--method", "method", click.Choice(["sft", "dpo"])),
                ("--beta", "beta", float), ("--sft-weight", "sft_weight", float),
                ("--sft-run", "sft_run", str),
                ("--epochs", "epochs", int), ("--rank", "r", int), ("--alpha", "alpha", int),
                ("--lr", "learning_rate", float), ("--batch-size", "batch_size", int),
                ("--max-seq-length", "max_seq_length", int), ("--base-model", "base_model", str),
                ("--precision", "precision", click.Choice(["auto", "fp32", "bf16"])),
                ("--seed", "seed", int),
                ("--checkpoint-every", "checkpoint_every_steps", int)]
    for flag, field, kind in reversed(settings):
        func = click.option(flag, field, type=kind, default=None,
                            help=f"{help_text(field)} [default: {default(field)}]")(func)
    return func


def _watch_run(workspace: Workspace, run_id: str) -> None:
    """Print each new step until the run ends; a failure becomes the command's error."""
    import time

    shown = 0
    try:
        while True:
            run = workspace.run(run_id)
            for m in run.metrics[shown:]:
                dpo = (f"  reward acc {m['reward_accuracy']:.2f} margin "
                       f"{m['reward_margin']:+.3f}") if "reward_accuracy" in m else ""
                click.echo(f"step {m['step']:>5}/{m.get('total_steps', '?')}  epoch "
                           f"{m['epoch']:.2f}  loss {m['loss']:.4f}{dpo}  "
                           f"{m['tokens_per_second']:,.0f} tok/s  "
                           f"ETA {duration(m['eta_seconds'])}")
            shown = len(run.metrics)
            if not run.active:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; run {run.id} goes on (`curate runs`; stop it with "
                   f"`curate cancel {run.id}`)")
        return
    if run.state == "completed":
        click.echo(f"run {run.id} completed; adapter in {run.adapter_dir}")
        return
    reason = run.status.reason or f"the trainer stopped without a word; see " \
        f"{run.dir / 'trainer.log'}, then `curate train --resume {run.id}`"
    raise CurateError(f"run {run.id} {run.state}: {reason}")


@main.command()
@db_option
@_train_setting_options
@click.option("--resume", "resume_id", default=None, metavar="RUN",
              help="Continue an interrupted, failed or cancelled run from its last checkpoint "
                   "(the settings are the run's own).")
@click.option("--detach", is_flag=True, help="Return as soon as the trainer has taken the run "
                                             "over (an error if it dies first); follow it "
                                             "with `curate runs`.")
@click.option("--eval/--no-eval", "then_eval", default=True, show_default=True,
              help="When the run completes, compare it with the prompt-only baseline (as "
                   "`curate eval RUN` with its defaults).")
@click.option("--allow-leakage", is_flag=True,
              help="Train even though eval examples are exact or near copies of train "
                   "examples (the evaluation will overstate the model); the run's manifest "
                   "records the override.")
@actor_option
def train(db, resume_id, detach, then_eval, allow_leakage, actor, **settings):
    """Fine-tune a LoRA adapter on a new snapshot of the accepted train examples.

    --method dpo trains on the snapshot's preference pairs instead (chosen over rejected,
    Direct Preference Optimization), from the base model or from a completed SFT run
    (--sft-run RUN); its evaluation adds pairwise preference accuracy on the eval split's
    pairs.

    Training runs in a process of its own, writing into runs/<run id>/ beside the database;
    this command prints its progress until it ends (Ctrl-C stops watching, not the run), then
    evaluates the run against the prompt-only baseline. A snapshot whose train examples are
    copied (exactly or nearly) in the eval split is refused unless --allow-leakage; eval
    examples that only mean the same as a train example are a warning. The CLI acts as the
    workspace's local admin.

    \b
    Example:
      curate train --epochs 2 --rank 8 --lr 2e-4
      curate train --detach && curate runs
      curate train --method dpo --beta 0.1 --sft-run run-20250101-120000-ab12
    """
    from training.config import TrainConfig

    with _open(db, actor) as workspace:
        if resume_id:
            if any(v is not None for v in settings.values()) or allow_leakage:
                raise CurateError("--resume continues a run with its own settings; leave out "
                                  "the other options")
            run = workspace.resume(resume_id)
        else:
            config = TrainConfig(**{k: v for k, v in settings.items() if v is not None})
            run = workspace.launch(config, allow_leakage=allow_leakage)
    leaks, similar = run.manifest.leaked_pairs, run.manifest.paraphrase_pairs
    if leaks and not resume_id:
        click.echo(f"warning: training despite {len(leaks)} leaked eval examples "
                   "(--allow-leakage); the evaluation will overstate the model", err=True)
    if similar and not resume_id:
        shown = ", ".join(f"eval #{x['eval_id']} ~ train #{x['train_id']}" for x in similar[:3])
        click.echo(f"warning: {len(similar)} eval example(s) mean the same as a train example "
                   f"({shown}{' and more' if len(similar) > 3 else ''}); not refused, and the "
                   "evaluation also reports its score without eval examples that have a train "
                   "copy", err=True)
    click.echo(f"run {run.id} {'resumed' if resume_id else 'started'} on snapshot "
               f"{run.manifest.snapshot_id} ({run.manifest.examples} examples); "
               f"folder {run.dir}")
    if detach:
        return
    with _open(db, actor) as workspace:
        try:
            _watch_run(workspace, run.id)
        finally:
            workspace.record_runs()
        workspace.close()  # the store stays closed while the evaluation is followed
        if then_eval:
            _show_eval(_evaluated(workspace, run.id, EvalConfig(), rerun=True))


@main.command()
@db_option
@_train_setting_options
@click.option("--show", is_flag=True, help="Print the newest learning curve (or --id's) and "
                                           "its advice; trains nothing.")
@click.option("--id", "curve_id", default=None, metavar="CURVE",
              help="With --show: the curve to print (default: the newest).")
@click.option("--allow-leakage", is_flag=True,
              help="Train even though eval examples are exact or near copies of train "
                   "examples (as `curate train --allow-leakage`).")
@json_option
@actor_option
def curve(db, show, curve_id, allow_leakage, as_json, actor, **settings):
    """Learning curve: train on nested 25%, 50% and 100% subsets of one snapshot and say
    whether more data is likely to help.

    Each subset is stratified by label (each label's examples in a fixed order seeded by
    --seed; the first 25% of each label, then the first 50%, then all) and trained with the
    same settings as an ordinary run, then evaluated; the curve is the fine-tuned model's
    score against the number of examples. The advice reads the gain of the last doubling
    (50% to 100%): 2 points or more means more data is likely to help, less means cleaner
    data or a different approach is the lever. The runs go one after another while this
    command runs (progress on stderr with --json); Ctrl-C cancels the run in flight and the
    curve. The record is runs/curve-<id>/curve.json; the Training page plots it (its
    Learning curve button does the same as this command, driven by the app).

    \b
    Example:
      curate curve --epochs 2
      curate curve --show --json
    """
    from training.config import TrainConfig

    if show:
        with _open(db, actor) as workspace:
            found = workspace.curve(curve_id)
    else:
        if curve_id:
            raise CurateError("--id picks the curve to print; use it with --show")
        config = TrainConfig(**{k: v for k, v in settings.items() if v is not None})

        def say(line: str) -> None:
            click.echo(line, err=as_json)

        def follow(_curve, point) -> None:
            import time

            shown = 0
            while True:
                run = workspace.run(point["run_id"])
                for m in run.metrics[shown:]:
                    say(f"  step {m['step']:>5}/{m.get('total_steps', '?')}  loss "
                        f"{m['loss']:.4f}  ETA {duration(m['eta_seconds'])}")
                shown = len(run.metrics)
                if not run.active:
                    return
                time.sleep(1.0)

        with _open(db, actor) as workspace:
            try:
                found = workspace.learning_curve(config, allow_leakage=allow_leakage,
                                                 on_run=follow, on_event=say)
            except KeyboardInterrupt:
                raise CurateError("learning curve cancelled; the runs so far stay in "
                                  "`curate runs`") from None
            finally:
                workspace.record_runs()
    if as_json:
        _print_json(found.to_dict())
        return
    click.echo(f"curve {found.id} ({found.state}) on snapshot {found.snapshot_id}")
    for p in found.points:
        score = "-" if p["score"] is None else f"{p['score']:.1f}"
        click.echo(f"  {p['fraction']:>4.0%}  {p['examples']:>6} examples  "
                   f"{p['metric'] or 'score'} {score:>6}  {p['run_id'] or ''} ({p['state']})")
    if found.reason:
        click.echo(f"  {found.reason}")
    click.echo(found.advice)


@main.command()
@db_option
@json_option
def runs(db, as_json):
    """List the training runs, newest first, with state, progress and loss.

    \b
    Example:
      curate runs --json
    """
    with _open(db) as workspace:
        items = workspace.runs()
    if as_json:
        _print_json([r.to_dict() for r in items])
        return
    if not items:
        click.echo("no training runs yet: `curate train` starts one")
    for r in items:
        click.echo(f"{r.summary()}  snapshot {r.manifest.snapshot_id}")


@main.command()
@click.argument("before", metavar="RUN_A")
@click.argument("after", metavar="RUN_B")
@db_option
@json_option
def compare(before, after, db, as_json):
    """Compare two runs: what changed in their training data, by label, beside the change of
    the fine-tuned model's score on each label.

    The data diff is from RUN_A's snapshot to RUN_B's: examples added, removed, relabelled
    (counted out of the old label and into the new) and edited (same label, other text).
    Scores are the primary metric, in points, of each run's stored evaluation.

    \b
    Example:
      curate compare run-20250101-120000-ab12 run-20250102-090000-cd34 --json
    """
    with _open(db) as workspace:
        comparison = workspace.compare_runs(before, after)
    if as_json:
        _print_json(comparison.to_dict())
        return
    click.echo(f"{comparison.before} -> {comparison.after}: {comparison.data.summary()}")
    metric = comparison.metric or "not evaluated"
    click.echo(f"{'label':<28} {'train':>11} {'+':>4} {'-':>4} {'relab':>7} {'edit':>4} "
               f"{metric:>16}")

    def score(value) -> str:
        return "—" if value is None else f"{value:.1f}"

    for row in comparison.per_label:
        moved = f"{row['train_before']}->{row['train_after']}"
        relabelled = f"+{row['relabelled_in']}/-{row['relabelled_out']}"
        change = "" if row["score_change"] is None else f" ({row['score_change']:+.1f})"
        click.echo(f"{str(row['label']):<28} {moved:>11} {row['added']:>4} {row['removed']:>4} "
                   f"{relabelled:>7} {row['edited']:>4} "
                   f"{score(row['score_before']):>6} -> {score(row['score_after'])}{change}")


@main.command()
@click.argument("run_id", metavar="RUN")
@db_option
def cancel(run_id, db):
    """Stop a training run (its whole process group); it can be resumed later.

    \b
    Example:
      curate cancel run-20250101-120000-ab12
    """
    with _open(db) as workspace:
        run = workspace.cancel(run_id)
    click.echo(f"run {run.id} {run.state}")


@main.command("eval")
@click.argument("run_id", metavar="RUN")
@db_option
@json_option
@click.option("--rerun", is_flag=True, help="Evaluate again even if the run has a stored "
                                            "evaluation.")
@click.option("--detach", is_flag=True, help="Start the evaluation and return at once; "
                                             "`curate eval RUN` follows it later.")
@click.option("--cancel", "cancel_it", is_flag=True,
              help="Stop the run's evaluation (its whole process group); the last stored "
                   "result stays.")
@click.option("--shots", type=int, default=default("shots", EvalConfig), show_default=True,
              help=help_text("shots", EvalConfig))
@click.option("--margin", type=float, default=default("margin_points", EvalConfig),
              show_default=True, help=help_text("margin_points", EvalConfig))
@click.option("--max-new-tokens", type=int, default=default("max_new_tokens", EvalConfig),
              show_default=True, help=help_text("max_new_tokens", EvalConfig))
@click.option("--system-prompt", default=None, metavar="TEXT",
              help=help_text("system_prompt", EvalConfig))
@actor_option
def eval_(run_id, db, as_json, rerun, detach, cancel_it, shots, margin, max_new_tokens,
          system_prompt, actor):
    """Compare a run's fine-tuned model with the prompt-only baseline on the eval split.

    Three systems answer every eval example (not rejected) with greedy decoding: the base
    model zero-shot, the base model with SHOTS train examples, and the fine-tuned model. The
    baseline is the better prompt-only system; the verdict is deploy only if fine-tuning
    beats it by MARGIN points. The evaluation runs in a process of its own (one at a time
    per workspace): this command prints its progress on stderr until it ends (Ctrl-C stops
    watching, not the evaluation; `curate eval RUN` follows it again), or returns at once
    with --detach; --cancel stops it. The result is stored in the run folder (eval.json) and
    shown again without recomputing unless --rerun. The primary metric is reported on the
    whole eval split and, side by side, on the eval examples whose prompt is no exact or
    near copy of a train prompt (--json: "contamination"). For a DPO run it adds pairwise
    preference accuracy on the eval split's preference pairs: how often the base model, the
    SFT run it started from and the tuned model find the chosen answer more likely than the
    rejected one (--json: "preference").

    \b
    Example:
      curate eval run-20250101-120000-ab12
      curate eval run-20250101-120000-ab12 --rerun --shots 5 --margin 3 --json
      curate eval run-20250101-120000-ab12 --rerun --detach
      curate eval run-20250101-120000-ab12 --cancel
    """
    config = EvalConfig(shots=shots, margin_points=margin, max_new_tokens=max_new_tokens,
                        system_prompt=system_prompt)
    with _open(db, actor) as workspace:
        if cancel_it:
            job = workspace.cancel_evaluation(run_id)
            if as_json:
                _print_json(job.to_dict())
            else:
                click.echo(job.summary())
            return
        if detach:
            job = workspace.evaluation_job(run_id)
            following = job is not None and job.active and not rerun
            if following or (not rerun and workspace.evaluation(run_id) is not None):
                raise CurateError(f"run {run_id} already has "
                                  f"{'an evaluation running' if following else 'an evaluation'}"
                                  "; add --rerun to evaluate it again")
            job = workspace.start_evaluation(run_id, config)
            if as_json:
                _print_json(job.to_dict())
            else:
                click.echo(f"evaluation of run {job.run_id} started (pid {job.pid}) on "
                           f"{job.status.examples} eval examples; follow it with `curate "
                           f"eval {job.run_id}`, stop it with `curate eval {job.run_id} "
                           "--cancel`")
            return
        result = _evaluated(workspace, run_id, config, rerun=rerun)
    if as_json:
        _print_json(result.summary())
    else:
        _show_eval(result)


def _evaluated(workspace: Workspace, run_id: str, config: EvalConfig, *,
               rerun: bool) -> EvalResult:
    """The run's evaluation: the one running (followed), the stored one (judged for the
    margin asked), or a new one started and followed; then recorded in the store."""
    job = workspace.evaluation_job(run_id)
    follow = job is not None and job.active and not rerun
    if not follow and (rerun or workspace.evaluation(run_id) is None):
        job = workspace.start_evaluation(run_id, config)
        click.echo(f"evaluating run {job.run_id} on {job.status.examples} eval examples in "
                   f"process {job.pid}", err=True)
        follow = True
    workspace.close()  # not held while the evaluation is followed
    if follow:
        _watch_eval(workspace, run_id)
    workspace.record_runs()
    return workspace.evaluation(run_id, margin=config.margin_points)


def _watch_eval(workspace: Workspace, run_id: str) -> None:
    """Print the evaluation's progress on stderr until it ends; a failure, cancel or
    interruption becomes the command's error."""
    import time

    shown = None
    try:
        while True:
            job = workspace.evaluation_job(run_id)
            if job is None:
                raise CurateError(f"run {run_id} has no evaluation status (its "
                                  "eval_status.json is gone)")
            line = (f"evaluating {job.done}/{job.total} answers ({job.phase or 'loading'})"
                    + (f", ETA {duration(job.eta_seconds)}" if job.eta_seconds else ""))
            if job.active and line != shown:
                click.echo(line, err=True)
                shown = line
            if not job.active:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; the evaluation of run {run_id} goes on "
                   f"(`curate eval {run_id}` follows it again, `--cancel` stops it)",
                   err=True)
        sys.exit(130)
    if job.state != "completed":
        reason = job.status.reason or f"the evaluator stopped without a word; see " \
            f"{job.dir / 'eval.log'}, then `curate eval {job.run_id} --rerun`"
        raise CurateError(f"evaluation of run {job.run_id} {job.state}: {reason}")
    click.echo(f"evaluated {job.done}/{job.total} answers", err=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _show_eval(result: EvalResult) -> None:
    metric = result.primary_metric
    for name in ("zero_shot", "few_shot", "fine_tuned"):
        m = result.systems[name]
        mark = "  (baseline)" if name == result.baseline["system"] else ""
        click.echo(f"{name:<11} {metric} {m['primary'] * 100:5.1f}  token_f1 "
                   f"{m['token_f1'] * 100:5.1f}  rouge_l {m['rouge_l'] * 100:5.1f}{mark}")
    c = result.contamination
    if c:
        scores = "  ".join(
            f"{name} {_pct(c['primary'][name]['all'])} -> {_pct(c['primary'][name]['clean'])}"
            for name in ("zero_shot", "few_shot", "fine_tuned"))
        click.echo(f"{metric}, whole eval split ({c['examples']}) -> no train copy "
                   f"({c['clean_examples']}): {scores}")
        click.echo(f"  no train copy: {c['rule']}; {len(c['copies'])} eval example(s) have one")
    o = result.outcomes
    click.echo(f"fine-tuned vs baseline: {o.get('win', 0)} wins, {o.get('loss', 0)} losses, "
               f"{o.get('tie', 0)} ties over {result.settings['eval_examples']} examples")
    click.echo(f"{result.verdict['decision'].upper()}: {result.verdict['reason']}")
    p = result.preference
    if p:
        scores = "  ".join(f"{name} {_pct(s['accuracy'])}" for name, s in p["systems"].items())
        click.echo(f"pairwise preference accuracy on {p['pairs']} eval pairs (chosen more "
                   f"likely than rejected, {p['aggregate']} log-likelihood): {scores}  "
                   f"({p['gain_points']:+.1f} points over {p['reference']})")


if __name__ == "__main__":
    main()
