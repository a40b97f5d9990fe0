//! [`PgHubStore`]: the [`HubStore`] seam on PostgreSQL, so several hub processes can share the
//! province's documents.
//!
//! # Schema
//!
//! Versioned SQL files in `hub/migrations/` ([`MIGRATIONS`]), applied in order at open inside
//! `pg_advisory_lock(MIGRATION_LOCK)` (two processes starting at once migrate once), each in
//! its own transaction together with its row in `schema_migrations`. A database migrated by a
//! newer binary is refused ([`HubStoreError::SchemaTooNew`]).
//!
//! `documents` holds one row per document (key, area, kind, heads digest, feed `txid`, a
//! `save()` snapshot as `body`, sizes); `chunks` the incremental chunks since the last
//! compaction. Keys are `COLLATE "C"`, so an area prefix is one primary-key range.
//!
//! # Writes
//!
//! [`HubStore::apply`] runs one transaction: `SELECT … FOR UPDATE` of the existing rows in key
//! order (so concurrent writers of one document queue up; sorted, so they do not deadlock),
//! then — in a later statement, whose snapshot sees whatever the previous lock holder
//! committed — the stored bytes are read, the new bytes merged in process, and only the new
//! changes appended (or the document rewritten as one snapshot when it has
//! `compact_after_chunks` chunks). Two processes creating the same new document at once: the
//! second's `INSERT` fails on the primary key and its whole transaction is retried, finding the
//! row. Deadlocks and serialization failures are retried the same way (a few times). Each write
//! transaction that changed something sends `NOTIFY cunyun_hub_docs`.
//!
//! # The feed, and why it skips nothing
//!
//! Every row write sets `txid = pg_current_xact_id()`: the id of the writing (top-level)
//! transaction. Ids are handed out when a transaction first writes, so they are *not* in commit
//! order: a transaction with a lower id can commit after one with a higher id has committed
//! and been read. A reader therefore does not use "the highest id seen" as its watermark.
//! [`HubStore::changes_since`] runs in one `REPEATABLE READ` transaction (one snapshot):
//! `pg_snapshot_xmin(pg_current_snapshot())` — the lowest transaction id still running when the
//! snapshot was taken — and the rows with `txid >= since`; the next watermark is that xmin.
//!
//! Why no committed row version is skipped: every transaction with an id below xmin had ended
//! when the snapshot was taken, so its writes are either visible in the snapshot or never
//! happen (rolled back). A transaction still running then, or one that gets its id later, has
//! an id ≥ xmin, so its rows have `txid ≥ xmin` and are listed by the next call. By induction
//! every committed row version with `txid ≥` the first watermark is listed at least once.
//! Rows with ids ≥ xmin that were already visible are listed again next time (at least once;
//! consumers compare digests). A transaction left open for long holds xmin back and makes the
//! feed repeat more, never skip. `hub` tests: `tests/tests/hub_store_feed.rs` proves it with
//! interleaved long and short writers.

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::Automerge;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls, Row};

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::key::{DocKey, Kind};

use super::merge::{self, Limits};
use super::{
    check_meta_name, Applied, BackendName, FeedPage, FeedPos, FeedRow, HubEntry, HubStats,
    HubStore, HubStoreError, HubWrite, PostgresConfig, MAX_META_BYTES,
};

/// A schema migration: version, name, SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order; recorded in `schema_migrations.version`.
    pub version: i32,
    /// Short name (the file name without number and extension).
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration this binary knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "documents",
        sql: include_str!("../../migrations/0001_documents.sql"),
    },
    Migration {
        version: 2,
        name: "meta",
        sql: include_str!("../../migrations/0002_meta.sql"),
    },
];

/// The advisory lock key held while migrating ("cunyun" + 1).
pub const MIGRATION_LOCK: i64 = 0x6375_6e79_756e_0001;

/// The `NOTIFY` channel of document writes.
const CHANNEL: &str = "cunyun_hub_docs";

/// How many times a write transaction is retried after a deadlock, a serialization failure or
/// a concurrent insert of the same new document.
const WRITE_ATTEMPTS: u32 = 8;

/// The hub's documents in PostgreSQL (see the module documentation).
pub struct PgHubStore {
    /// The store's own small runtime: the driver is async, the seam is blocking, and callers
    /// may be on another runtime's workers (where `block_on` would panic).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    limits: Limits,
    /// Host/socket and database, for messages.
    target: Arc<str>,
    writes: Arc<tokio::sync::watch::Sender<u64>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgHubStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.pool.close();
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = rt {
            // Allowed from inside another runtime, unlike dropping it.
            rt.shutdown_background();
        }
    }
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HubStoreError {
    move |source| HubStoreError::Database { context, source }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Host/socket and database of a connection config, for messages (never the password).
fn target(pg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "{} 数据库 {}",
        if hosts.is_empty() {
            "默认地址".to_string()
        } else {
            hosts.join(",")
        },
        pg.get_dbname().unwrap_or("(默认)")
    )
}

impl PgHubStore {
    /// Connects to the database of `cfg`, applies missing migrations and starts listening for
    /// other processes' writes.
    pub fn open(cfg: &PostgresConfig, limits: Limits) -> Result<PgHubStore, HubStoreError> {
        let mut pg = tokio_postgres::Config::from_str(&cfg.url)
            .map_err(|e| HubStoreError::Config(format!("[store.postgres] url 无法解析: {e}")))?;
        pg.connect_timeout(Duration::from_millis(cfg.connect_timeout_ms.max(1)));
        pg.application_name("cunyun-hub");
        if !cfg.options.is_empty() {
            let opts: Vec<String> = cfg
                .options
                .iter()
                .map(|(k, v)| format!("-c {k}={v}"))
                .collect();
            pg.options(opts.join(" "));
        }
        let target = target(&pg);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cunyun-pg")
            .enable_all()
            .build()
            .map_err(|e| HubStoreError::Connect {
                target: target.clone(),
                reason: format!("无法启动数据库线程: {e}"),
            })?;
        let handle = runtime.handle().clone();
        let applied = runtime.block_on(migrate(pg.clone(), target.clone()))?;
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| HubStoreError::Config(format!("数据库连接池配置有误: {e}")))?;
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let writes = Arc::new(tx);
        let listener = handle.spawn(listen(pg, Arc::clone(&writes)));
        tracing::info!(target = %target, migrations_applied = ?applied, "PostgreSQL hub store opened");
        Ok(PgHubStore {
            runtime: Mutex::new(Some(runtime)),
            handle,
            pool,
            limits,
            target: Arc::from(target),
            writes,
            listener,
        })
    }

    /// Runs `fut` on the store's runtime and waits for it (from any thread).
    fn run<T, F>(&self, fut: F) -> Result<T, HubStoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, HubStoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| HubStoreError::Closed)?
    }
}

/// Takes a connection from the pool (of the database `target` names).
async fn client(pool: &Pool, target: &str) -> Result<deadpool_postgres::Object, HubStoreError> {
    pool.get().await.map_err(|e| HubStoreError::Connect {
        target: target.to_string(),
        reason: e.to_string(),
    })
}

/// Applies every migration the database lacks, under the migration advisory lock, on a
/// connection of its own. Returns the versions applied.
async fn migrate(pg: tokio_postgres::Config, target: String) -> Result<Vec<i32>, HubStoreError> {
    let (mut client, conn) = pg
        .connect(NoTls)
        .await
        .map_err(|e| HubStoreError::Connect {
            target,
            reason: e.to_string(),
        })?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "migration connection ended");
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db("taking the migration lock"))?;
    let result = apply_migrations(&mut client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = driver.await;
    let applied = result?;
    unlocked.map_err(db("releasing the migration lock"))?;
    Ok(applied)
}

async fn apply_migrations(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, HubStoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(db("creating schema_migrations"))?;
    let done: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(db("reading schema_migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(&found) = done.iter().max() {
        if found > known {
            return Err(HubStoreError::SchemaTooNew { found, known });
        }
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let err = |source| HubStoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let tx = client.transaction().await.map_err(err)?;
        tx.batch_execute(m.sql).await.map_err(err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "database schema migrated"
        );
        applied.push(m.version);
    }
    Ok(applied)
}

/// Keeps a `LISTEN` connection open and moves `writes` on every notification (and after each
/// reconnect, since writes may have been missed meanwhile).
async fn listen(pg: tokio_postgres::Config, writes: Arc<tokio::sync::watch::Sender<u64>>) {
    loop {
        match pg.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(_)) => {
                                if ntx.send(()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL LISTEN connection failed");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        writes.send_modify(|n| *n = n.wrapping_add(1));
                        while nrx.recv().await.is_some() {
                            writes.send_modify(|n| *n = n.wrapping_add(1));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "PostgreSQL LISTEN failed"),
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL LISTEN connection could not be opened")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn parse_key(s: &str) -> Result<DocKey, HubStoreError> {
    DocKey::parse(s).map_err(|e| HubStoreError::Corrupt {
        key: s.to_string(),
        reason: format!("数据库中的键不是文档键: {e}"),
    })
}

fn parse_digest(key: &str, bytes: &[u8]) -> Result<HeadsDigest, HubStoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(HeadsDigest)
        .map_err(|_| HubStoreError::Corrupt {
            key: key.to_string(),
            reason: format!("摘要应为 16 字节，实际 {} 字节", bytes.len()),
        })
}

fn parse_pos(key: &str, text: &str) -> Result<FeedPos, HubStoreError> {
    text.parse()
        .map(FeedPos)
        .map_err(|_| HubStoreError::Corrupt {
            key: key.to_string(),
            reason: format!("事务号 {text:?} 无法解析"),
        })
}

/// A key-range bound as text. Keys are ASCII; a bound with bytes that are not UTF-8 (such as
/// `0xff`, "after every key") becomes U+FFFD, which sorts after every ASCII key under
/// `COLLATE "C"` (its UTF-8 starts with `0xef`).
fn key_bound(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `SELECT key, digest, txid::text, updated_at_ms, chunk_count, bytes` → an entry.
const ENTRY_COLUMNS: &str = "key, digest, txid::text, updated_at_ms, chunk_count, bytes";

fn entry_from(row: &Row) -> Result<(DocKey, HubEntry), HubStoreError> {
    let name: String = row.get(0);
    let digest: Vec<u8> = row.get(1);
    let txid: String = row.get(2);
    let updated: i64 = row.get(3);
    let chunk_count: i32 = row.get(4);
    let bytes: i64 = row.get(5);
    Ok((
        parse_key(&name)?,
        HubEntry {
            digest: parse_digest(&name, &digest)?,
            pos: parse_pos(&name, &txid)?,
            updated_at_ms: to_u64(updated),
            chunks: u32::try_from(chunk_count).unwrap_or(0).saturating_add(1),
            bytes: to_u64(bytes),
        },
    ))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn retryable(e: &HubStoreError) -> bool {
    let HubStoreError::Database { source, .. } = e else {
        return false;
    };
    source.code().is_some_and(|c| {
        *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

async fn apply(
    pool: Pool,
    target: Arc<str>,
    limits: Limits,
    by_key: BTreeMap<DocKey, Vec<Vec<u8>>>,
    removes: Vec<String>,
) -> Result<Vec<Applied>, HubStoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_once(&pool, &target, &limits, &by_key, &removes).await {
            Err(e) if attempt < WRITE_ATTEMPTS && retryable(&e) => {
                tracing::debug!(attempt, error = %e, "retrying a hub store write");
                tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
            }
            other => return other,
        }
    }
}

/// A stored document row, locked.
struct Stored {
    body: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    chunk_count: i32,
    bytes: i64,
}

async fn apply_once(
    pool: &Pool,
    target: &str,
    limits: &Limits,
    by_key: &BTreeMap<DocKey, Vec<Vec<u8>>>,
    removes: &[String],
) -> Result<Vec<Applied>, HubStoreError> {
    let mut client = client(pool, target).await?;
    let tx = client
        .transaction()
        .await
        .map_err(db("starting a write transaction"))?;
    let keys: Vec<String> = by_key.keys().map(DocKey::to_string).collect();
    // Lock first (key order), read after: this statement's snapshot may predate a commit of
    // the lock holder we waited for; the next statement's snapshot sees it.
    tx.query(
        "SELECT key FROM documents WHERE key = ANY($1) ORDER BY key FOR UPDATE",
        &[&keys],
    )
    .await
    .map_err(db("locking documents"))?;
    let mut stored: BTreeMap<String, Stored> = BTreeMap::new();
    for row in tx
        .query(
            "SELECT key, body, chunk_count, bytes FROM documents WHERE key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(db("reading documents"))?
    {
        stored.insert(
            row.get(0),
            Stored {
                body: row.get(1),
                chunks: Vec::new(),
                chunk_count: row.get(2),
                bytes: row.get(3),
            },
        );
    }
    for row in tx
        .query(
            "SELECT key, data FROM chunks WHERE key = ANY($1) ORDER BY key, seq",
            &[&keys],
        )
        .await
        .map_err(db("reading chunks"))?
    {
        let key: String = row.get(0);
        if let Some(s) = stored.get_mut(&key) {
            s.chunks.push(row.get(1));
        }
    }
    let now = now_ms();
    let mut applied = Vec::with_capacity(by_key.len());
    let mut changed = false;
    for ((key, chunks), name) in by_key.iter().zip(&keys) {
        let existing = stored.remove(name);
        let doc = match &existing {
            Some(s) => {
                let mut all = Vec::with_capacity(s.chunks.len() + 1);
                all.push(s.body.clone());
                all.extend(s.chunks.iter().cloned());
                Some(merge::load_stored(key, &all)?)
            }
            None => None,
        };
        let parts: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let m = merge::merge(key, doc, &parts)?;
        applied.push(Applied {
            key: key.clone(),
            digest: m.digest,
            changed: m.append.is_some(),
        });
        let Some(append) = m.append else {
            continue;
        };
        changed = true;
        let digest = m.digest.0.to_vec();
        match existing {
            None => {
                merge::check_doc_size(key, append.len() as u64, limits)?;
                tx.execute(
                    "INSERT INTO documents (key, area, kind, digest, updated_at_ms, body, bytes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        name,
                        &key.area().as_str(),
                        &key.kind().to_string(),
                        &digest,
                        &now,
                        &append,
                        &to_i64(append.len() as u64),
                    ],
                )
                .await
                .map_err(db("inserting a document"))?;
            }
            Some(s) => {
                let bytes = to_u64(s.bytes) + append.len() as u64;
                merge::check_doc_size(key, bytes, limits)?;
                let chunks_after = u32::try_from(s.chunk_count).unwrap_or(0) + 2;
                if chunks_after >= limits.compact_after_chunks {
                    compact(&tx, name, &m.doc, &digest, now).await?;
                } else {
                    append_chunk(&tx, name, &append, &digest, now).await?;
                }
            }
        }
    }
    let removes: Vec<&String> = removes.iter().filter(|k| !keys.contains(k)).collect();
    if !removes.is_empty() {
        let n = tx
            .execute("DELETE FROM documents WHERE key = ANY($1)", &[&removes])
            .await
            .map_err(db("removing documents"))?;
        changed |= n > 0;
    }
    if changed {
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
            .await
            .map_err(db("notifying other hub processes"))?;
    }
    tx.commit().await.map_err(db("committing a write"))?;
    Ok(applied)
}

async fn append_chunk(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &String,
    chunk: &Vec<u8>,
    digest: &Vec<u8>,
    now: i64,
) -> Result<(), HubStoreError> {
    tx.execute(
        "INSERT INTO chunks (key, seq, data)
         SELECT key, next_seq, $2 FROM documents WHERE key = $1",
        &[name, chunk],
    )
    .await
    .map_err(db("appending a chunk"))?;
    tx.execute(
        "UPDATE documents SET digest = $2, updated_at_ms = $3, chunk_count = chunk_count + 1,
             next_seq = next_seq + 1, bytes = bytes + $4, txid = pg_current_xact_id()
         WHERE key = $1",
        &[name, digest, &now, &to_i64(chunk.len() as u64)],
    )
    .await
    .map_err(db("updating a document"))?;
    Ok(())
}

async fn compact(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &String,
    doc: &Automerge,
    digest: &Vec<u8>,
    now: i64,
) -> Result<(), HubStoreError> {
    let body = doc.save();
    tx.execute("DELETE FROM chunks WHERE key = $1", &[name])
        .await
        .map_err(db("compacting a document"))?;
    tx.execute(
        "UPDATE documents SET digest = $2, updated_at_ms = $3, body = $4, chunk_count = 0,
             bytes = $5, txid = pg_current_xact_id()
         WHERE key = $1",
        &[name, digest, &now, &body, &to_i64(body.len() as u64)],
    )
    .await
    .map_err(db("compacting a document"))?;
    Ok(())
}

impl HubStore for PgHubStore {
    fn backend(&self) -> BackendName {
        BackendName::Postgres
    }

    fn apply(
        &self,
        writes: Vec<HubWrite>,
        removes: Vec<DocKey>,
    ) -> Result<Vec<Applied>, HubStoreError> {
        let mut by_key: BTreeMap<DocKey, Vec<Vec<u8>>> = BTreeMap::new();
        for w in writes {
            merge::check_chunk(&w.key, &w.chunk, &self.limits)?;
            by_key.entry(w.key).or_default().push(w.chunk);
        }
        if by_key.is_empty() && removes.is_empty() {
            return Ok(Vec::new());
        }
        let removes = removes.iter().map(DocKey::to_string).collect();
        let applied = self.run(apply(
            self.pool.clone(),
            Arc::clone(&self.target),
            self.limits,
            by_key,
            removes,
        ))?;
        if applied.iter().any(|a| a.changed) {
            self.writes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(applied)
    }

    fn get(&self, key: &DocKey) -> Result<Option<Automerge>, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let key = key.clone();
        self.run(async move {
            let client = client(&pool, &target).await?;
            // One statement, one snapshot: the body and the chunks agree.
            let row = client
                .query_opt(
                    "SELECT body, ARRAY(SELECT data FROM chunks c WHERE c.key = d.key ORDER BY seq)
                     FROM documents d WHERE key = $1",
                    &[&key.to_string()],
                )
                .await
                .map_err(db("loading a document"))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut all: Vec<Vec<u8>> = vec![row.get(0)];
            all.extend(row.get::<_, Vec<Vec<u8>>>(1));
            merge::load_stored(&key, &all).map(Some)
        })
    }

    fn entry(&self, key: &DocKey) -> Result<Option<HubEntry>, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let key = key.to_string();
        self.run(async move {
            let client = client(&pool, &target).await?;
            let row = client
                .query_opt(
                    &format!("SELECT {ENTRY_COLUMNS} FROM documents WHERE key = $1"),
                    &[&key],
                )
                .await
                .map_err(db("reading a document entry"))?;
            row.as_ref()
                .map(entry_from)
                .transpose()
                .map(|e| e.map(|(_, e)| e))
        })
    }

    fn entries(
        &self,
        scope: &AreaScope,
        kind: Option<Kind>,
    ) -> Result<Vec<(DocKey, HubEntry)>, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let (start, end) = scope.key_range();
        let Some(kind) = kind else {
            return self.entries_range(&start, &end);
        };
        let (start, end) = (key_bound(&start), key_bound(&end));
        self.run(async move {
            let client = client(&pool, &target).await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM documents
                         WHERE kind = $3 AND key >= $1 AND key < $2 ORDER BY key"
                    ),
                    &[&start, &end, &kind.to_string()],
                )
                .await
                .map_err(db("listing an area"))?;
            rows.iter().map(entry_from).collect()
        })
    }

    fn entries_range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<(DocKey, HubEntry)>, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let (start, end) = (key_bound(start), key_bound(end));
        self.run(async move {
            let client = client(&pool, &target).await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM documents
                         WHERE key >= $1 AND key < $2 ORDER BY key"
                    ),
                    &[&start, &end],
                )
                .await
                .map_err(db("listing a key range"))?;
            rows.iter().map(entry_from).collect()
        })
    }

    fn changes_in_range(
        &self,
        since: FeedPos,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<FeedRow>, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let (start, end) = (key_bound(start), key_bound(end));
        self.run(async move {
            let client = client(&pool, &target).await?;
            let rows = client
                .query(
                    "SELECT key, digest, txid::text FROM documents
                     WHERE key >= $1 AND key < $2 AND txid >= $3::text::xid8 ORDER BY key",
                    &[&start, &end, &since.0.to_string()],
                )
                .await
                .map_err(db("reading the change feed of a key range"))?;
            rows.iter()
                .map(|r| {
                    let name: String = r.get(0);
                    let digest: Vec<u8> = r.get(1);
                    let txid: String = r.get(2);
                    Ok(FeedRow {
                        key: parse_key(&name)?,
                        digest: parse_digest(&name, &digest)?,
                        pos: parse_pos(&name, &txid)?,
                    })
                })
                .collect()
        })
    }

    fn watermark(&self) -> Result<FeedPos, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        self.run(async move {
            let client = client(&pool, &target).await?;
            let xmin: String = client
                .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
                .await
                .map_err(db("reading the snapshot's xmin"))?
                .get(0);
            parse_pos("<snapshot xmin>", &xmin)
        })
    }

    fn changes_since(&self, since: FeedPos) -> Result<FeedPage, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        self.run(async move {
            let mut client = client(&pool, &target).await?;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db("starting a feed read"))?;
            // The first statement takes the transaction's snapshot; the rows below are read in
            // the same snapshot.
            let xmin: String = tx
                .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
                .await
                .map_err(db("reading the snapshot's xmin"))?
                .get(0);
            let rows = tx
                .query(
                    "SELECT key, digest, txid::text FROM documents WHERE txid >= $1::text::xid8",
                    &[&since.0.to_string()],
                )
                .await
                .map_err(db("reading the change feed"))?;
            tx.commit().await.map_err(db("ending a feed read"))?;
            let next = parse_pos("<snapshot xmin>", &xmin)?;
            let rows = rows
                .iter()
                .map(|r| {
                    let name: String = r.get(0);
                    let digest: Vec<u8> = r.get(1);
                    let txid: String = r.get(2);
                    Ok(FeedRow {
                        key: parse_key(&name)?,
                        digest: parse_digest(&name, &digest)?,
                        pos: parse_pos(&name, &txid)?,
                    })
                })
                .collect::<Result<Vec<_>, HubStoreError>>()?;
            Ok(FeedPage {
                rows,
                next: next.max(since),
            })
        })
    }

    fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writes.subscribe()
    }

    fn writes(&self) -> u64 {
        *self.writes.borrow()
    }

    fn stats(&self) -> Result<HubStats, HubStoreError> {
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let writes = *self.writes.borrow();
        self.run(async move {
            let client = client(&pool, &target).await?;
            let row = client
                .query_one(
                    "SELECT count(*), coalesce(sum(chunk_count + 1), 0)::bigint,
                            coalesce(sum(bytes), 0)::bigint,
                            pg_total_relation_size('documents') + pg_total_relation_size('chunks')
                     FROM documents",
                    &[],
                )
                .await
                .map_err(db("counting documents"))?;
            Ok(HubStats {
                documents: to_u64(row.get(0)),
                chunks: to_u64(row.get(1)),
                bytes: to_u64(row.get(2)),
                writes,
                quarantined: 0,
                disk_bytes: to_u64(row.get(3)),
            })
        })
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, HubStoreError> {
        check_meta_name(name)?;
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let name = name.to_string();
        self.run(async move {
            let client = client(&pool, &target).await?;
            let row = client
                .query_opt("SELECT value FROM meta WHERE name = $1", &[&name])
                .await
                .map_err(db("reading a metadata value"))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), HubStoreError> {
        check_meta_name(name)?;
        if value.len() > MAX_META_BYTES {
            return Err(HubStoreError::TooLarge {
                key: format!("meta/{name}"),
                what: "单次写入",
                size: value.len() as u64,
                limit: MAX_META_BYTES as u64,
            });
        }
        let pool = self.pool.clone();
        let target = Arc::clone(&self.target);
        let name = name.to_string();
        let value = value.to_vec();
        self.run(async move {
            let client = client(&pool, &target).await?;
            client
                .execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    &[&name, &value],
                )
                .await
                .map_err(db("writing a metadata value"))?;
            Ok(())
        })
    }
}
