"""The store: every SQL statement of Curate, behind one boundary.

A schema change touches this package only. The rest of `curation` (and `training`, the CLI
and the pages) calls `Store` methods and never writes SQL; `tests/test_layers.py` checks it.

Layout, one module per concern:
- `_store`: the `Store` class (opening the file, cursors, transactions, settings) with the
  examples, their versions and audit events; `Example`.
- `_snapshots`: snapshots, immutable hashed sets of example versions; `Snapshot`.
- `_schema`: the schema and its migrations.
- `_inserts`: the one insert path for new examples (`Store.add` and the importer).
- `_filters`: an `ExampleFilter` (`curation.query`) as a WHERE clause.
- `_users`, `_embeddings`, `_findings` (check runs, findings, decisions, coverage counts),
  `_queues` (review queue sources and paging), `_runs` (recorded training runs),
  `_suggestions` (model suggestions per example version), `_sessions` (sign-in
  sessions and saved views), `_batches` (bulk batches and
  single events, for undo), `_progress` (decisions today in a queue, per person per day),
  `_guidelines` (guidelines versions, label descriptions, the guidelines version of each
  event), `_comments` (comment threads),
  `_agreement` (independent review decisions for overlap and adjudication),
  `_leases` (review leases, and submissions for review),
  `_maintenance` (copies, checkpoints, free space, probing a damaged file).

Each concern's queries are a mixin class of `Store`, so callers write `store.findings(name)`
whatever module holds the SQL, and each module stays short enough to read top to bottom.
"""

from curation.store._maintenance import file_counts, probe_file
from curation.store._queues import QueueSource
from curation.store._runs import RUN_COLUMNS
from curation.store._snapshots import Snapshot
from curation.store._store import (DEFAULT_DB, EDITABLE, MEMORY_LIMIT, Example, Store,
                                   check_conversation_or_invalid, default_db_path, is_damage,
                                   store_error, utcnow)

__all__ = ["DEFAULT_DB", "EDITABLE", "MEMORY_LIMIT", "RUN_COLUMNS", "Example", "QueueSource",
           "Snapshot", "Store", "check_conversation_or_invalid", "default_db_path",
           "file_counts", "is_damage", "probe_file", "store_error", "utcnow"]
