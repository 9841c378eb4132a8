"""Schema migrations of the workspace database, versioned in code.

`MIGRATIONS` is an ordered list; each entry is applied once, in its own transaction, and
recorded in `schema_migrations`. A workspace made by an older Curate is brought up to date
when it is opened, after a copy of the file is set aside (`workspace/backups/`, named with the
old schema version); one made by a newer Curate is refused rather than misread.

Design decisions:
- No PRIMARY KEY or UNIQUE index on the mutable `examples` table: DuckDB turns an update of a
  list column into delete + insert, which can trip over-eager unique checks inside one
  transaction. Ids come from a sequence; lookups by id are fast without an index because ids
  are inserted in order (zone maps prune the scan).
- Every version of every example is kept: the current one in `examples`, every earlier one
  in `example_versions` (since migration 4; before it, the current version was stored in both,
  which doubled what an import writes). Snapshots refer to (example id, version) pairs and read
  their content from the union of the two, so a snapshot never changes when an example is
  edited later, and any earlier version can be restored.
- Messages are stored as JSON text and, beside them, `text` (all turns' contents) for search.
  `text` is stored uncompressed (migration 4): compressing it (DuckDB's dictionary + FSST) took
  as long at COMMIT as compressing `messages`, about 1.2 s per 100,000 examples on one core,
  for a derived copy that search scans faster uncompressed. It costs about 40% more disk.
- Preference data (`curation.preference`) adds three columns to both example tables rather
  than a table of its own: `kind` ('sft', 'preference' or 'kto'), `rejected` (the rejected
  continuation as JSON turns, preference examples only) and `desirable` (KTO only). The
  chosen answer stays in `messages`, so every check, search and SFT export reads a pair
  unchanged, and a version (and so a snapshot) captures both answers.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    ("examples, versions, events and snapshots", """
        CREATE SEQUENCE example_id_seq START 1;
        CREATE SEQUENCE event_id_seq START 1;
        CREATE TABLE examples (
            id            BIGINT NOT NULL,
            external_id   VARCHAR,
            messages      VARCHAR NOT NULL,
            text          VARCHAR NOT NULL,
            label         VARCHAR,
            tags          VARCHAR[] NOT NULL,
            source        VARCHAR,
            split         VARCHAR NOT NULL CHECK (split IN ('train', 'eval')),
            status        VARCHAR NOT NULL
                          CHECK (status IN ('pending', 'accepted', 'rejected', 'needs_work')),
            content_hash  VARCHAR NOT NULL,
            version       INTEGER NOT NULL,
            created_by    VARCHAR NOT NULL,
            created_at    TIMESTAMP NOT NULL,
            updated_by    VARCHAR NOT NULL,
            updated_at    TIMESTAMP NOT NULL
        );
        CREATE TABLE example_versions (
            example_id    BIGINT NOT NULL,
            version       INTEGER NOT NULL,
            messages      VARCHAR NOT NULL,
            label         VARCHAR,
            tags          VARCHAR[] NOT NULL,
            split         VARCHAR NOT NULL,
            status        VARCHAR NOT NULL,
            content_hash  VARCHAR NOT NULL,
            changed_by    VARCHAR NOT NULL,
            changed_at    TIMESTAMP NOT NULL
        );
        CREATE TABLE events (
            id            BIGINT NOT NULL,
            example_id    BIGINT,
            action        VARCHAR NOT NULL,
            actor         VARCHAR NOT NULL,
            occurred_at   TIMESTAMP NOT NULL,
            version       INTEGER,
            before        VARCHAR,
            after         VARCHAR,
            reason        VARCHAR
        );
        CREATE TABLE snapshots (
            id            VARCHAR PRIMARY KEY,
            name          VARCHAR NOT NULL,
            created_by    VARCHAR NOT NULL,
            created_at    TIMESTAMP NOT NULL,
            filters       VARCHAR NOT NULL,
            content_hash  VARCHAR NOT NULL,
            count         INTEGER NOT NULL
        );
        CREATE TABLE snapshot_items (
            snapshot_id   VARCHAR NOT NULL,
            example_id    BIGINT NOT NULL,
            version       INTEGER NOT NULL
        );
    """),
    ("users and roles; soft delete", """
        ALTER TABLE examples ADD COLUMN deleted BOOLEAN DEFAULT false;
        UPDATE examples SET deleted = false;
        CREATE TABLE users (
            name          VARCHAR PRIMARY KEY,
            role          VARCHAR NOT NULL CHECK (role IN ('annotator', 'reviewer', 'admin')),
            email         VARCHAR,
            password_hash VARCHAR,
            created_at    TIMESTAMP NOT NULL
        );
    """),
    ("embeddings, check findings and decisions, settings", """
        CREATE TABLE settings (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
        CREATE TABLE embeddings (
            model         VARCHAR NOT NULL,
            text_hash     VARCHAR NOT NULL,
            vector        FLOAT[] NOT NULL
        );
        CREATE TABLE check_runs (
            check_name    VARCHAR PRIMARY KEY,
            fingerprint   VARCHAR NOT NULL,
            summary       VARCHAR NOT NULL,
            run_by        VARCHAR NOT NULL,
            run_at        TIMESTAMP NOT NULL
        );
        CREATE TABLE findings (
            check_name    VARCHAR NOT NULL,
            example_id    BIGINT NOT NULL,
            version       INTEGER NOT NULL,
            score         DOUBLE NOT NULL,
            is_issue      BOOLEAN NOT NULL,
            reason        VARCHAR NOT NULL,
            details       VARCHAR NOT NULL
        );
        CREATE TABLE finding_decisions (
            check_name    VARCHAR NOT NULL,
            subject       VARCHAR NOT NULL,
            decision      VARCHAR NOT NULL,
            decided_by    VARCHAR NOT NULL,
            decided_at    TIMESTAMP NOT NULL
        );
    """),
    ("example_versions keeps only superseded versions; search text stored uncompressed", """
        DELETE FROM example_versions v USING examples e
        WHERE v.example_id = e.id AND v.version = e.version;
        CREATE TABLE examples_v4 (
            id            BIGINT NOT NULL,
            external_id   VARCHAR,
            messages      VARCHAR NOT NULL,
            text          VARCHAR NOT NULL USING COMPRESSION uncompressed,
            label         VARCHAR,
            tags          VARCHAR[] NOT NULL,
            source        VARCHAR,
            split         VARCHAR NOT NULL CHECK (split IN ('train', 'eval')),
            status        VARCHAR NOT NULL
                          CHECK (status IN ('pending', 'accepted', 'rejected', 'needs_work')),
            content_hash  VARCHAR NOT NULL,
            version       INTEGER NOT NULL,
            created_by    VARCHAR NOT NULL,
            created_at    TIMESTAMP NOT NULL,
            updated_by    VARCHAR NOT NULL,
            updated_at    TIMESTAMP NOT NULL,
            deleted       BOOLEAN DEFAULT false
        );
        INSERT INTO examples_v4 SELECT id, external_id, messages, text, label, tags, source,
            split, status, content_hash, version, created_by, created_at, updated_by,
            updated_at, deleted FROM examples ORDER BY id;
        DROP TABLE examples;
        ALTER TABLE examples_v4 RENAME TO examples;
    """),
    ("training runs recorded from their folders", """
        CREATE TABLE training_runs (
            id            VARCHAR PRIMARY KEY,
            snapshot_id   VARCHAR,
            snapshot_hash VARCHAR,
            base_model    VARCHAR,
            config        VARCHAR,
            state         VARCHAR NOT NULL,
            created_by    VARCHAR,
            created_at    TIMESTAMP,
            ended_at      TIMESTAMP,
            steps         INTEGER,
            final_loss    DOUBLE,
            leakage_overridden_by VARCHAR,
            evaluation    VARCHAR,
            recorded_at   TIMESTAMP NOT NULL
        );
    """),
    ("content hash of the exact conversation (no NFC, no trimming)", """
        UPDATE examples SET content_hash = sha256(messages);
        UPDATE example_versions SET content_hash = sha256(messages);
    """),
    ("model suggestions (pre-labels) per example version", """
        CREATE TABLE suggestions (
            example_id    BIGINT NOT NULL,
            version       INTEGER NOT NULL,
            run_id        VARCHAR NOT NULL,
            answer        VARCHAR NOT NULL,
            confidence    DOUBLE NOT NULL,
            method        VARCHAR NOT NULL,
            created_by    VARCHAR NOT NULL,
            created_at    TIMESTAMP NOT NULL
        );
    """),
    ("sign-in sessions and saved views per person", """
        CREATE TABLE sessions (
            token_hash    VARCHAR PRIMARY KEY,
            user_name     VARCHAR NOT NULL,
            created_at    TIMESTAMP NOT NULL,
            expires_at    TIMESTAMP NOT NULL,
            revoked_at    TIMESTAMP
        );
        CREATE TABLE saved_views (
            owner         VARCHAR NOT NULL,
            page          VARCHAR NOT NULL,
            name          VARCHAR NOT NULL,
            params        VARCHAR NOT NULL,
            saved_at      TIMESTAMP NOT NULL
        );
    """),
    ("bulk batches: one id per bulk action, beside each event it wrote, for undo", """
        CREATE TABLE batches (
            id            VARCHAR PRIMARY KEY,
            action        VARCHAR NOT NULL,
            value         VARCHAR,
            reason        VARCHAR,
            scope         VARCHAR NOT NULL,
            actor         VARCHAR NOT NULL,
            created_at    TIMESTAMP NOT NULL,
            undone_by     VARCHAR,
            undone_at     TIMESTAMP
        );
        CREATE TABLE batch_events (
            batch_id      VARCHAR NOT NULL,
            example_id    BIGINT NOT NULL,
            version       INTEGER NOT NULL
        );
    """),
    ("guidelines versions, label descriptions, comments; guidelines version of each event", """
        CREATE TABLE guidelines (
            version       INTEGER PRIMARY KEY,
            text          VARCHAR NOT NULL,
            saved_by      VARCHAR NOT NULL,
            saved_at      TIMESTAMP NOT NULL,
            note          VARCHAR
        );
        CREATE TABLE label_descriptions (
            label         VARCHAR PRIMARY KEY,
            description   VARCHAR NOT NULL,
            example       VARCHAR,
            updated_by    VARCHAR NOT NULL,
            updated_at    TIMESTAMP NOT NULL
        );
        CREATE SEQUENCE comment_id_seq START 1;
        CREATE TABLE comments (
            id            BIGINT NOT NULL,
            example_id    BIGINT NOT NULL,
            author        VARCHAR NOT NULL,
            created_at    TIMESTAMP NOT NULL,
            text          VARCHAR NOT NULL
        );
        ALTER TABLE events ADD COLUMN guidelines_version INTEGER;
    """),
    ("independent review decisions (overlap for agreement)", """
        CREATE TABLE review_votes (
            example_id    BIGINT NOT NULL,
            round         INTEGER NOT NULL,
            reviewer      VARCHAR NOT NULL,
            decision      VARCHAR NOT NULL
                          CHECK (decision IN ('accept', 'reject', 'needs_work')),
            label         VARCHAR,
            reason        VARCHAR,
            version       INTEGER NOT NULL,
            decided_at    TIMESTAMP NOT NULL,
            state         VARCHAR NOT NULL
                          CHECK (state IN ('open', 'disputed', 'agreed', 'adjudicated')),
            settled_by    VARCHAR,
            settled_at    TIMESTAMP
        );
    """),
    ("review leases: who holds which example of a queue, until when", """
        CREATE TABLE leases (
            example_id    BIGINT PRIMARY KEY,
            holder        VARCHAR NOT NULL,
            queue         VARCHAR,
            acquired_at   TIMESTAMP NOT NULL,
            expires_at    TIMESTAMP NOT NULL
        );
    """),
    ("preference examples: kind, rejected answer and KTO flag per example and version", """
        ALTER TABLE examples ADD COLUMN kind VARCHAR DEFAULT 'sft';
        ALTER TABLE examples ADD COLUMN rejected VARCHAR;
        ALTER TABLE examples ADD COLUMN desirable BOOLEAN;
        UPDATE examples SET kind = 'sft' WHERE kind IS NULL;
        ALTER TABLE example_versions ADD COLUMN kind VARCHAR DEFAULT 'sft';
        ALTER TABLE example_versions ADD COLUMN rejected VARCHAR;
        ALTER TABLE example_versions ADD COLUMN desirable BOOLEAN;
        UPDATE example_versions SET kind = 'sft' WHERE kind IS NULL;
    """),
]


def current_version(cursor) -> int:
    """The number of migrations applied to this database (0 for a new file)."""
    exists = cursor.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()[0]
    if not exists:
        return 0
    return cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(cursor, now, before=None) -> list[int]:
    """Apply every migration this database lacks; return the versions applied.

    `before(version)` is called once, before the first migration of a database that already
    has a schema (version > 0): the store backs the file up there."""
    from curation.errors import SchemaTooNew

    cursor.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                   "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP)")
    have = current_version(cursor)
    if have > len(MIGRATIONS):
        raise SchemaTooNew(f"this workspace has schema version {have}, but this Curate knows "
                           f"only up to {len(MIGRATIONS)}: upgrade Curate to open it")
    applied = []
    if 0 < have < len(MIGRATIONS) and before is not None:
        before(have)
    for version, (name, sql) in enumerate(MIGRATIONS[have:], start=have + 1):
        cursor.execute("BEGIN TRANSACTION")
        try:
            cursor.execute(sql)
            cursor.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, now])
            cursor.execute("COMMIT")
        except Exception:
            cursor.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
