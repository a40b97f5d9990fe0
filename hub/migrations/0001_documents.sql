-- cunyun-hub schema version 1: the province's documents and their change feed.
-- Applied by hub/src/store/postgres.rs under pg_advisory_lock, recorded in schema_migrations.

-- One row per document. Keys are `<12-digit area>/<kind>/<id>` and are compared as bytes
-- (COLLATE "C"), so every area prefix (2/4/6/9/12 digits) is one range of the primary key
-- whatever the database's default collation is.
CREATE TABLE documents (
    key           text COLLATE "C" PRIMARY KEY,
    area          text COLLATE "C" NOT NULL CHECK (area ~ '^[0-9]{12}$'),
    kind          text COLLATE "C" NOT NULL,
    -- 16-byte BLAKE3 digest of the sorted heads (cunyun_protocol::digest).
    digest        bytea NOT NULL CHECK (length(digest) = 16),
    -- Change feed: the top-level id of the transaction that last changed the row. Readers keep
    -- a watermark of pg_snapshot_xmin(pg_current_snapshot()) (see ARCHITECTURE.md).
    txid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    updated_at_ms bigint NOT NULL,
    -- A save() snapshot; the incremental chunks since then are in `chunks`.
    body          bytea NOT NULL,
    chunk_count   integer NOT NULL DEFAULT 0,
    next_seq      integer NOT NULL DEFAULT 0,
    -- Bytes of body + chunks.
    bytes         bigint NOT NULL,
    CHECK (starts_with(key, area || '/' || kind || '/'))
);

-- "Every hh of this area" is one range too.
CREATE INDEX documents_kind_key ON documents (kind, key);
-- The feed: WHERE txid >= $watermark.
CREATE INDEX documents_txid ON documents (txid);

-- Incremental chunks (save_after output) appended since the last compaction, in seq order.
CREATE TABLE chunks (
    key  text COLLATE "C" NOT NULL REFERENCES documents (key) ON DELETE CASCADE,
    seq  integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (key, seq)
);
