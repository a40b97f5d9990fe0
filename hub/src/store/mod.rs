//! The hub's storage seam for documents and their change feed: the [`HubStore`] trait, what
//! sync sessions, the matching engine and the operator API need from wherever the province's
//! documents live, with two implementations:
//!
//! - [`sled::SledHubStore`]: today's embedded [`DocStore`](cunyun_platform::store::DocStore) (one
//!   process; the default, so the README's demo needs no database server);
//! - [`postgres::PgHubStore`]: PostgreSQL (several hub processes on one database).
//!
//! [`synchost::HubSyncHost`] is the sync service's seam over either.
//!
//! [`open`] picks one from [`HubStoreConfig`] (`[store] backend = "sled" | "postgres"`).
//!
//! # Key layout and area ranges
//!
//! A document's key is `<area>/<kind>/<id>` ([`DocKey`]) where `<area>` is always the full
//! 12-digit 统计用区划代码 (a county's documents carry the county's code padded with zeros). An
//! [`AreaScope`] is a level-aligned prefix (2, 4, 6, 9 or 12 digits), so "every document of the
//! area" is exactly the key range `[prefix, prefix ++ ":")` (`:` sorts right after the digits
//! and `/`), compared as bytes. Scope `5114` therefore holds `511424…` (a county of 5114) and
//! never `5115…` or `5113…`; scope `511424` never lists `511425…`. PostgreSQL must compare keys
//! as bytes for this to be one index range: the key columns are `COLLATE "C"`
//! (`hub/migrations/0001_documents.sql`).
//!
//! # Writes merge
//!
//! [`HubStore::apply`] takes Automerge bytes per document and *merges* them into what is stored,
//! under a lock on the document (a row lock in PostgreSQL, an in-process key lock on sled): the
//! store computes the heads and the digest itself, so two writers (two sessions, two hub
//! processes) that change one document concurrently both survive and the digest names the
//! merged state. A write that adds nothing is a no-op: no feed position moves.
//!
//! # The change feed
//!
//! Every applied write stamps its documents with a feed position. [`HubStore::changes_since`]
//! returns every document whose position is at or after a watermark, plus the watermark to
//! pass next time. The feed is **at least once**: a document may come back again (consumers
//! are idempotent: they compare digests), but a committed change is never skipped, also when
//! writers commit out of the order in which they got their positions. How each backend
//! guarantees that is documented on [`sled::SledHubStore`] and [`postgres::PgHubStore`].

pub mod config;
mod merge;
pub mod postgres;
pub mod sled;
pub mod synchost;

use std::path::Path;
use std::sync::Arc;

use automerge::Automerge;
use cunyun_platform::store::StoreError;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::key::{DocKey, Kind};

pub use config::{HubStoreConfig, PostgresConfig, StoreBackend};
pub use merge::Limits;

/// One document change to merge: Automerge bytes (`save()`, `save_incremental()`,
/// `save_after(..)` or raw changes concatenated) for `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubWrite {
    /// The document.
    pub key: DocKey,
    /// Automerge bytes to merge into it.
    pub chunk: Vec<u8>,
}

/// A position in the change feed. Opaque: compare only positions of one store.
/// [`FeedPos::START`] is before everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedPos(pub u64);

impl FeedPos {
    /// Before every write: [`HubStore::changes_since`] from here lists every document.
    pub const START: FeedPos = FeedPos(0);
}

/// What the store records about one document, without loading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubEntry {
    /// Digest of the document's heads.
    pub digest: HeadsDigest,
    /// Feed position of the last write that changed it.
    pub pos: FeedPos,
    /// When it last changed, milliseconds since the Unix epoch (the writing process's clock).
    pub updated_at_ms: u64,
    /// Stored chunks (a compacted document has 1).
    pub chunks: u32,
    /// Stored Automerge bytes.
    pub bytes: u64,
}

/// One row of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    /// The document that changed.
    pub key: DocKey,
    /// Its digest when the feed was read.
    pub digest: HeadsDigest,
    /// Its feed position.
    pub pos: FeedPos,
}

/// The answer of [`HubStore::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedPage {
    /// Documents changed at or after the watermark asked for (each once), in no promised order.
    pub rows: Vec<FeedRow>,
    /// The watermark to ask with next time: every change committed before it has been listed.
    pub next: FeedPos,
}

/// What [`HubStore::apply`] did to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The document.
    pub key: DocKey,
    /// Its digest after the write.
    pub digest: HeadsDigest,
    /// Whether the write added changes (false: it held nothing new; nothing was written).
    pub changed: bool,
}

/// Store-wide figures for `/healthz`, `/metrics` and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Documents stored.
    pub documents: u64,
    /// Stored chunks (a compacted document has 1).
    pub chunks: u64,
    /// Stored Automerge bytes.
    pub bytes: u64,
    /// The [`HubStore::writes`] counter.
    pub writes: u64,
    /// Quarantined (damaged) documents (sled only; PostgreSQL reports 0).
    pub quarantined: u64,
    /// Bytes on disk as the backend reports them (0 if it cannot tell).
    pub disk_bytes: u64,
}

/// Checks a [`HubStore::meta_put`] name: 1–100 characters of `a-z 0-9 . _ -`.
pub fn check_meta_name(name: &str) -> Result<(), HubStoreError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HubStoreError::Config(format!(
            "元数据名称“{name}”无效（只能用小写字母、数字和 . _ -，最长 100 个字符）"
        )))
    }
}

/// Largest value [`HubStore::meta_put`] accepts (1 MiB).
pub const MAX_META_BYTES: usize = 1 << 20;

/// Which implementation a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendName {
    /// [`sled::SledHubStore`].
    Sled,
    /// [`postgres::PgHubStore`].
    Postgres,
}

/// The hub's document storage (see the module documentation). Methods block the calling thread
/// until the backend answered (like [`DocStore`](cunyun_platform::store::DocStore)); they may be
/// called from any thread, async runtime workers included.
pub trait HubStore: Send + Sync {
    /// Which implementation this is.
    fn backend(&self) -> BackendName;

    /// Merges every write into its document (creating it if needed) and removes the documents
    /// in `removes` whole, in one atomic, durable transaction: all or nothing, and durable when
    /// it returns. Writes for one key are merged in order. Invalid bytes are refused with
    /// [`HubStoreError::InvalidWrite`] (or [`HubStoreError::TooLarge`]) before anything is
    /// written. Returns one [`Applied`] per distinct written key, in key order.
    fn apply(
        &self,
        writes: Vec<HubWrite>,
        removes: Vec<DocKey>,
    ) -> Result<Vec<Applied>, HubStoreError>;

    /// Loads a document, or `None` if the store has none under `key`.
    fn get(&self, key: &DocKey) -> Result<Option<Automerge>, HubStoreError>;

    /// A document's entry, without loading it.
    fn entry(&self, key: &DocKey) -> Result<Option<HubEntry>, HubStoreError>;

    /// Every document inside `scope` (optionally only of `kind`), in key order, without loading
    /// any: one index range.
    fn entries(
        &self,
        scope: &AreaScope,
        kind: Option<Kind>,
    ) -> Result<Vec<(DocKey, HubEntry)>, HubStoreError>;

    /// Every document with a key in `[start, end)` (compared as bytes), in key order, without
    /// loading any: one index range (a sync session's shared key ranges, the documents keyed
    /// at exactly one area).
    fn entries_range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<(DocKey, HubEntry)>, HubStoreError>;

    /// Every document changed at or after `since`, and the watermark for the next call (see
    /// the module documentation: at least once, never a skipped commit).
    fn changes_since(&self, since: FeedPos) -> Result<FeedPage, HubStoreError>;

    /// [`HubStore::changes_since`] for the keys in `[start, end)` only (a sync session's shared
    /// key ranges), in key order: what changed at or after `since` there, without reading the
    /// rest of the province's feed. Pair it with a [`HubStore::watermark`] taken before.
    fn changes_in_range(
        &self,
        since: FeedPos,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<FeedRow>, HubStoreError>;

    /// The feed's safe watermark now, without listing anything: every change committed after
    /// this returns is listed by [`HubStore::changes_since`] with the returned position (what
    /// [`FeedPage::next`] would be). Cheap: no document or index entry is read.
    fn watermark(&self) -> Result<FeedPos, HubStoreError>;

    /// A counter that moves after writes (this process's, and on PostgreSQL also other
    /// processes' through `LISTEN`/`NOTIFY`); changes between two looks are coalesced. A
    /// wake-up, not a position: read the feed to learn what changed.
    fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// A cheap counter that moves after every write this process made and (PostgreSQL) every
    /// write another process announced: the value [`HubStore::watch_writes`] carries. Read it
    /// before the feed: if it has not moved since, nothing was written.
    fn writes(&self) -> u64;

    /// Store-wide figures (PostgreSQL counts rows: not for a hot path).
    fn stats(&self) -> Result<HubStats, HubStoreError>;

    /// A small durable value stored under `name` ([`check_meta_name`]), or `None`: the matching
    /// engine's feed watermark, the sync service's peer watermarks.
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, HubStoreError>;

    /// Stores `value` (at most [`MAX_META_BYTES`]) under `name`, replacing what was there;
    /// durable when it returns.
    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), HubStoreError>;
}

/// Whether `key` belongs to a household whose tombstone (`del`) the store holds (its documents
/// are refused from then on, see `cunyun_protocol::deletion`).
pub fn deleted(store: &dyn HubStore, key: &DocKey) -> Result<bool, HubStoreError> {
    match cunyun_protocol::deletion::tombstone_for(key) {
        Some(t) => Ok(store.entry(&t)?.is_some()),
        None => Ok(false),
    }
}

/// Why a hub store operation failed. Messages are zh-CN: an operator sees them at start and in
/// the console.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubStoreError {
    /// A write was malformed (empty, not Automerge bytes, changes whose dependencies are
    /// missing); nothing was stored.
    #[error("文档 {key} 的写入无效：{reason}；未存储任何内容")]
    InvalidWrite {
        /// The document key.
        key: String,
        /// What is wrong (zh-CN).
        reason: String,
    },
    /// A chunk or the document would exceed a configured limit; nothing was stored.
    #[error("文档 {key} 的{what}将达到 {size} 字节，超过上限 {limit} 字节；未存储任何内容")]
    TooLarge {
        /// The document key.
        key: String,
        /// 「单次写入」 or 「文档」.
        what: &'static str,
        /// The size the write would have produced.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Stored bytes could not be read back as a document.
    #[error("文档 {key} 已损坏：{reason}")]
    Corrupt {
        /// The document key (or what was being read).
        key: String,
        /// What check failed.
        reason: String,
    },
    /// The configuration cannot be used.
    #[error("文档库配置有误：{0}")]
    Config(String),
    /// The sled store failed.
    #[error("文档库（sled）出错：{0}")]
    Sled(#[from] StoreError),
    /// The PostgreSQL server could not be reached or refused the login.
    #[error("无法连接 PostgreSQL 数据库（{target}）：{reason}")]
    Connect {
        /// Host/socket and database, never the password.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// A statement failed.
    #[error("PostgreSQL 数据库出错（{context}）：{source}")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A schema migration failed; the database keeps the versions before it.
    #[error("数据库结构升级到第 {version} 版（{name}）失败：{source}")]
    Migration {
        /// The migration's version.
        version: i32,
        /// Its name.
        name: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database was migrated by a newer cunyun-hub than this one.
    #[error("数据库结构为第 {found} 版，本程序只认识到第 {known} 版：请升级 cunyun-hub 后再启动")]
    SchemaTooNew {
        /// Highest version recorded in `schema_migrations`.
        found: i32,
        /// Highest version this binary carries.
        known: i32,
    },
    /// The store is shutting down.
    #[error("文档库已关闭")]
    Closed,
    /// A metadata value could not be read or written (sled backend's files).
    #[error("元数据 {name} 读写失败：{source}")]
    Meta {
        /// The value's name.
        name: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the backend `config` chooses: sled in `<data_dir>/store`, or the PostgreSQL database
/// of `[store.postgres]` (migrated to this binary's schema first).
pub fn open(config: &HubStoreConfig, data_dir: &Path) -> Result<Arc<dyn HubStore>, HubStoreError> {
    match config.backend {
        StoreBackend::Sled => Ok(Arc::new(sled::SledHubStore::open(
            &data_dir.join("store"),
            config.sled.clone(),
        )?)),
        StoreBackend::Postgres => Ok(Arc::new(postgres::PgHubStore::open(
            &config.postgres,
            merge::Limits::from(&config.sled),
        )?)),
    }
}
