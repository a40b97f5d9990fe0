//! The hub's `[store]` table: which backend holds the documents, the sled tunables (written
//! directly in `[store]`, as before there was a choice) and the PostgreSQL connection
//! (`[store.postgres]`).
//!
//! ```toml
//! [store]
//! backend = "postgres"          # "sled" (default: embedded, one process) or "postgres"
//! compact_after_chunks = 8      # limits shared by both backends (see StoreConfig)
//!
//! [store.postgres]
//! url = "host=/var/run/postgresql dbname=cunyun user=cunyun"
//! pool_size = 16
//! connect_timeout_ms = 5000
//! ```

use std::collections::BTreeMap;

use cunyun_platform::store::StoreConfig;
use serde::Deserialize;

/// Which implementation holds the hub's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded sled store in `<data_dir>/store`: no server, one hub process.
    #[default]
    Sled,
    /// A PostgreSQL database (`[store.postgres]`): several hub processes may share it.
    Postgres,
}

/// The `[store]` table. Every field has a default; an empty or absent table means sled with
/// its default tunables.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "toml::Table")]
#[non_exhaustive]
pub struct HubStoreConfig {
    /// `backend`: `"sled"` (default) or `"postgres"`.
    pub backend: StoreBackend,
    /// Every other key of `[store]`: the document store tunables. `max_chunk_bytes`,
    /// `max_doc_bytes` and `compact_after_chunks` apply to both backends; the rest to sled only.
    pub sled: StoreConfig,
    /// `[store.postgres]`: used when `backend = "postgres"`.
    pub postgres: PostgresConfig,
}

impl TryFrom<toml::Table> for HubStoreConfig {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, Self::Error> {
        let backend = match table.remove("backend") {
            None => StoreBackend::default(),
            Some(v) => v
                .try_into()
                .map_err(|e| format!("[store] backend 应为 \"sled\" 或 \"postgres\": {e}"))?,
        };
        let postgres = match table.remove("postgres") {
            None => PostgresConfig::default(),
            Some(v) => v
                .try_into()
                .map_err(|e| format!("[store.postgres] 有误: {e}"))?,
        };
        let sled = toml::Value::Table(table)
            .try_into()
            .map_err(|e| format!("[store] 有误: {e}"))?;
        Ok(HubStoreConfig {
            backend,
            sled,
            postgres,
        })
    }
}

/// How to reach the PostgreSQL database (`[store.postgres]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// A libpq-style connection string (`host=/var/run/postgresql dbname=cunyun user=cunyun`,
    /// a Unix socket directory as `host`) or URL (`postgresql://cunyun@db.lan/cunyun`).
    /// Default: the local server's socket, database and user `cunyun`. TLS to the database is
    /// not supported yet: use a Unix socket or a trusted network.
    pub url: String,
    /// Most connections this process keeps open (plus one for `LISTEN`). Default 16.
    pub pool_size: usize,
    /// How long to wait for a connection, in milliseconds. Default 5000.
    pub connect_timeout_ms: u64,
    /// Extra server settings for every connection (e.g. `statement_timeout = "30s"`).
    pub options: BTreeMap<String, String>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "host=/var/run/postgresql dbname=cunyun user=cunyun".to_string(),
            pool_size: 16,
            connect_timeout_ms: 5_000,
            options: BTreeMap::new(),
        }
    }
}

impl PostgresConfig {
    /// Settings for a connection string (the rest default).
    pub fn with_url(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            ..PostgresConfig::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        #[serde(default)]
        store: HubStoreConfig,
    }

    #[test]
    fn module_example_parses_defaults_hold_and_mistakes_are_refused() {
        let text = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let c: Wrapper = toml::from_str(&text).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Postgres);
        assert_eq!(c.store.sled.compact_after_chunks, 8);
        assert_eq!(c.store.postgres.pool_size, 16);
        assert!(c.store.postgres.url.contains("dbname=cunyun"));

        let empty: Wrapper = toml::from_str("").unwrap();
        assert_eq!(empty.store, HubStoreConfig::default());
        assert_eq!(empty.store.backend, StoreBackend::Sled);
        let old: Wrapper = toml::from_str("[store]\ncache_capacity_bytes = 1024").unwrap();
        assert_eq!(old.store.backend, StoreBackend::Sled);
        assert_eq!(old.store.sled.cache_capacity_bytes, 1024);

        for bad in [
            "[store]\nbackend = \"mysql\"",
            "[store]\ncolour = 1",
            "[store.postgres]\nhost = \"x\"",
        ] {
            let err = toml::from_str::<Wrapper>(bad).err().unwrap().to_string();
            assert!(err.contains("[store"), "{bad}: {err}");
        }
    }
}
