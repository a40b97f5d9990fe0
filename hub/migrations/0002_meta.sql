-- cunyun-hub schema version 2: small durable values (HubStore::meta_get/meta_put): the
-- matching engine's feed watermark, the sync service's peer watermarks.
-- Applied by hub/src/store/postgres.rs under pg_advisory_lock, recorded in schema_migrations.

CREATE TABLE meta (
    name       text COLLATE "C" PRIMARY KEY CHECK (name ~ '^[a-z0-9._-]{1,100}$'),
    value      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
