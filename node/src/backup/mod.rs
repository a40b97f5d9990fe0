//! Backup and restore of a node's data directory (`cunyun-node backup` / `restore`).
//!
//! # What a backup holds
//! Every file of the data directory — `tls/` (node certificate and key, trust clock), `ca/` (a
//! county's certificate authority and tokens), `web-tls/`, `accounts.json`, `audit.jsonl` and
//! whatever else is there — plus every document of the store. Left out: `blobs/` (the content
//! cache, fetched again from upstream after a restore) and the store's own files (`store/`),
//! which are exported document by document instead.
//!
//! # Consistency while the node runs
//! sled lets only one process open a store, so the backup command cannot read a running node's
//! store. It asks the node over its backup socket ([`socket`]), and the node exports through the
//! store API ([`export`]); on a stopped node the command opens the store itself and runs the
//! same export. The export scans the index and loads every document through
//! [`DocStore::load`], which reads a document's index entry and chunks as one consistent
//! version (retrying past a concurrent compaction) and checks every checksum, then stores its
//! `save()`. What this guarantees, and why it is enough:
//! - every write acknowledged before the backup started is in it: acknowledged writes are
//!   durable and visible to reads, the scan starts after them, and documents are only removed
//!   by a household deletion;
//! - every document is a whole, checksummed, automerge-loadable version of itself, never a
//!   torn mix of chunks;
//! - the restored store is rebuilt through [`DocStore::commit`], so its index, chunks and
//!   totals agree by construction, and [`DocStore::verify`] checks it before it is put in place;
//! - a write made *during* the backup may be in it or not, per document: the backup is not one
//!   point in time across documents. That is the same guarantee sync gives between nodes, and
//!   automerge documents are independent. The one cross-document rule, that a deleted
//!   household's documents are gone when its tombstone exists, restore enforces by removing the
//!   documents of every restored tombstone.
//!
//! A point-in-time copy of sled's files was rejected: sled rewrites its segments in place
//! while running, so a file copy is not a consistent state, and stopping the writer for a full
//! copy would block every cadre's save for the whole backup.
//!
//! # Encryption
//! [age](https://age-encryption.org) with a scrypt passphrase recipient (work factor 2^17,
//! 128 MiB, about a second on a Pi 4), through the `age` crate: no hand-rolled cryptography. A
//! wrong passphrase fails at the header, before anything is written; a tampered or truncated
//! file fails age's per-chunk authentication. File format: [`format`].
//!
//! # Restore
//! Into a staging directory beside the target, which replaces the target only once every
//! record was read, every document committed and loaded again, and `verify` is clean. A
//! non-empty target is refused unless `force`, and then kept, renamed `<dir>.replaced-<time>`.

pub mod export;
pub mod format;
pub mod passphrase;
pub mod socket;

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use age::secrecy::SecretString;
use automerge::Automerge;
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig, StoreError};
use cunyun_protocol::key::{DocKey, Kind};

use format::{read_record, write_record, EndRecord, Manifest, Record, Tag};

/// scrypt work factor (log2 N) used for new backups: 128 MiB and about a second on a Pi 4.
pub const WORK_FACTOR: u8 = 17;
/// Largest work factor a restore accepts (a crafted file cannot make it use more than 256 MiB).
const MAX_WORK_FACTOR: u8 = 18;
/// Shortest passphrase accepted for a new backup.
pub const MIN_PASSPHRASE_CHARS: usize = 8;
/// Documents per commit during a restore.
const RESTORE_BATCH_DOCS: usize = 256;
/// Bytes per commit during a restore.
const RESTORE_BATCH_BYTES: usize = 8 << 20;

/// Top-level entries of the data directory that are not copied as files.
const SKIPPED: &[&str] = &["store", "blobs", socket::SOCKET_NAME];

/// Why a backup or restore failed. Messages are for technicians (zh-CN).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The directory is not a node's data directory.
    #[error("{0} 不是村云节点的数据目录（其中没有 store/ 文档库）")]
    NotADataDir(PathBuf),
    /// The backup file already exists.
    #[error("备份文件 {0} 已存在，不会覆盖；请换一个文件名")]
    TargetExists(PathBuf),
    /// The backup file would be inside the directory it backs up.
    #[error("备份文件 {0} 不能放在数据目录里面（请放到 U 盘等别处）")]
    InsideDataDir(PathBuf),
    /// The passphrase is too short.
    #[error("备份口令太短：至少 {MIN_PASSPHRASE_CHARS} 个字符")]
    WeakPassphrase,
    /// No passphrase could be obtained.
    #[error("无法取得备份口令：{0}")]
    NoPassphrase(String),
    /// The store is held by a process that does not answer on the backup socket.
    #[error("文档库正被另一个进程占用，而节点的备份接口 {0} 无法连接（节点版本过旧？请先停止节点再备份）")]
    NodeBusy(PathBuf),
    /// A restore target whose node is running.
    #[error("节点正在使用 {0}，请先停止节点（systemctl stop cunyun-node）再恢复")]
    NodeRunning(PathBuf),
    /// A non-empty restore target without `--force`.
    #[error("目标目录 {0} 不是空的，未做任何改动；确认要替换时加 --force（原有内容会改名保留）")]
    NotEmpty(PathBuf),
    /// Not a backup file at all.
    #[error("{0} 不是村云备份文件")]
    NotABackup(PathBuf),
    /// A backup written by a newer version.
    #[error("备份文件格式版本 {0} 比本程序新，请用新版 cunyun-node 恢复")]
    NewerFormat(String),
    /// The passphrase does not open the file.
    #[error("备份口令不正确，未写入任何内容")]
    WrongPassphrase,
    /// The file is damaged, cut short or altered.
    #[error("备份文件已损坏、不完整或被改动过（{0}），未写入任何内容")]
    Damaged(String),
    /// The restored store did not check out.
    #[error("恢复后的文档库校验未通过（{0}），目标目录未被替换")]
    Verify(String),
    /// The store failed.
    #[error("文档库出错：{0}")]
    Store(#[from] StoreError),
    /// Exporting the store failed.
    #[error(transparent)]
    Export(#[from] export::ExportError),
    /// A file system operation failed.
    #[error("{context}：{source}")]
    Io {
        /// What was being done (zh-CN).
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Files of the data directory included.
    pub files: u64,
    /// Store documents included.
    pub docs: u64,
    /// Damaged documents left out (their keys).
    pub damaged: Vec<String>,
    /// Size of the backup file in bytes.
    pub bytes: u64,
    /// Whether the store was exported by the running node over its socket.
    pub from_running_node: bool,
}

/// What a restore put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Files written.
    pub files: u64,
    /// Documents restored (and loaded again after the commit).
    pub docs: u64,
    /// Documents dropped because the backup also holds their household's tombstone.
    pub dropped_deleted: u64,
    /// Where the previous contents of the target went (with `force`).
    pub replaced: Option<PathBuf>,
}

/// Writes an encrypted backup of the node data directory `data_dir` to `to` (which must not
/// exist). Works whether the node is running (the store is exported by the node over
/// [`socket`]) or stopped.
pub fn backup(
    data_dir: &Path,
    to: &Path,
    passphrase: SecretString,
) -> Result<BackupSummary, BackupError> {
    use age::secrecy::ExposeSecret;
    if passphrase.expose_secret().chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(BackupError::WeakPassphrase);
    }
    if !data_dir.join("store").is_dir() {
        return Err(BackupError::NotADataDir(data_dir.to_path_buf()));
    }
    if to.exists() {
        return Err(BackupError::TargetExists(to.to_path_buf()));
    }
    if inside(to, data_dir) {
        return Err(BackupError::InsideDataDir(to.to_path_buf()));
    }
    let partial = partial_path(to);
    let result = write_backup(data_dir, &partial, passphrase);
    match result {
        Ok(mut summary) => {
            std::fs::rename(&partial, to)
                .map_err(io_ctx(format!("无法写入备份文件 {}", to.display())))?;
            sync_parent(to);
            summary.bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Whether the file `to` (which need not exist) would be inside the directory `dir`.
fn inside(to: &Path, dir: &Path) -> bool {
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn write_backup(
    data_dir: &Path,
    partial: &Path,
    passphrase: SecretString,
) -> Result<BackupSummary, BackupError> {
    let ctx = || format!("无法写入备份文件 {}", partial.display());
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .map_err(io_ctx(ctx()))?;
    let mut out = BufWriter::new(file);
    out.write_all(format::MAGIC_LINE).map_err(io_ctx(ctx()))?;
    let mut recipient = age::scrypt::Recipient::new(passphrase);
    recipient.set_work_factor(WORK_FACTOR);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as _)).map_err(|e| {
            BackupError::Io {
                context: "无法加密".to_string(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
    let mut w = BufWriter::new(encryptor.wrap_output(out).map_err(io_ctx(ctx()))?);

    let manifest = Manifest {
        format: format::FORMAT_VERSION,
        software: env!("CARGO_PKG_VERSION").to_string(),
        created_ms: cunyun_platform::clock::now_ms(),
        node: node_identity(data_dir),
    };
    let body = serde_json::to_vec(&manifest).map_err(std::io::Error::other);
    let body = body.map_err(io_ctx(ctx()))?;
    write_record(&mut w, Tag::Manifest, "", &body).map_err(io_ctx(ctx()))?;

    let mut files = 0u64;
    for rel in data_files(data_dir)? {
        let path = data_dir.join(&rel);
        let bytes = std::fs::read(&path).map_err(io_ctx(format!("无法读取 {}", path.display())))?;
        write_record(&mut w, Tag::File, &rel, &bytes).map_err(io_ctx(ctx()))?;
        files += 1;
    }

    let (docs_end, from_running_node) = export_store(data_dir, &mut w)?;
    let end = EndRecord {
        files,
        docs: docs_end.docs,
        damaged: docs_end.damaged,
    };
    let body = serde_json::to_vec(&end).map_err(std::io::Error::other);
    write_record(&mut w, Tag::End, "", &body.map_err(io_ctx(ctx()))?).map_err(io_ctx(ctx()))?;
    let stream = w.into_inner().map_err(|e| BackupError::Io {
        context: ctx(),
        source: e.into_error(),
    })?;
    let out = stream.finish().map_err(io_ctx(ctx()))?;
    let file = out.into_inner().map_err(|e| BackupError::Io {
        context: ctx(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_ctx(ctx()))?;
    Ok(BackupSummary {
        files,
        docs: end.docs,
        damaged: end.damaged,
        bytes: 0,
        from_running_node,
    })
}

/// The node identity URI in `tls/node.crt`, if readable.
fn node_identity(data_dir: &Path) -> Option<String> {
    let pem = std::fs::read_to_string(data_dir.join("tls").join("node.crt")).ok()?;
    let der = first_cert_der(&pem)?;
    cunyun_protocol::cert::parse_cert(&der)
        .ok()
        .map(|c| c.identity.to_uri())
}

/// The DER bytes of the first certificate in `pem`.
fn first_cert_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Every regular file under `data_dir` except [`SKIPPED`], as `/`-separated relative paths, in
/// a stable order.
fn data_files(data_dir: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    let mut stack = vec![(data_dir.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(io_ctx(format!("无法读取目录 {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_ctx(format!("无法读取目录 {}", dir.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %entry.path().display(), "file name is not UTF-8; not backed up");
                continue;
            };
            if prefix.is_empty() && SKIPPED.contains(&name.as_str()) {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let ft = entry
                .file_type()
                .map_err(io_ctx(format!("无法读取 {}", entry.path().display())))?;
            if ft.is_dir() {
                stack.push((entry.path(), format!("{rel}/")));
            } else if ft.is_file() {
                out.push(rel);
            } else {
                tracing::warn!(path = %entry.path().display(), "not a regular file; not backed up");
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Exports the store's documents into `w`: from the running node over its socket if it
/// answers, else by opening the store here. Returns the export's end record (without its own
/// record written: the caller writes the final end record) and whether the node did it.
fn export_store(data_dir: &Path, w: &mut impl Write) -> Result<(EndRecord, bool), BackupError> {
    let sock = socket::socket_path(data_dir);
    match std::os::unix::net::UnixStream::connect(&sock) {
        Ok(stream) => Ok((export_from_node(stream, &sock, w)?, true)),
        Err(_) => {
            let store = open_store_here(data_dir)?;
            Ok((export::export_doc_records(&store, w)?, false))
        }
    }
}

fn open_store_here(data_dir: &Path) -> Result<DocStore, BackupError> {
    DocStore::open(&data_dir.join("store"), StoreConfig::default()).map_err(|e| match e {
        StoreError::Open { ref reason, .. } if reason.contains("lock") => {
            BackupError::NodeBusy(socket::socket_path(data_dir))
        }
        e => BackupError::Store(e),
    })
}

fn export_from_node(
    mut stream: std::os::unix::net::UnixStream,
    sock: &Path,
    w: &mut impl Write,
) -> Result<EndRecord, BackupError> {
    let ctx = || format!("从运行中的节点（{}）读取文档失败", sock.display());
    stream.write_all(socket::REQUEST).map_err(io_ctx(ctx()))?;
    let mut r = BufReader::new(stream);
    loop {
        match read_record(&mut r).map_err(io_ctx(ctx()))? {
            Some(Record {
                tag: Tag::Doc,
                name,
                body,
            }) => write_record(w, Tag::Doc, &name, &body).map_err(io_ctx(ctx()))?,
            Some(Record {
                tag: Tag::End,
                body,
                ..
            }) => {
                return serde_json::from_slice(&body).map_err(|e| BackupError::Io {
                    context: ctx(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })
            }
            Some(_) | None => {
                return Err(BackupError::Io {
                    context: ctx(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "节点未完成导出（节点是否在备份过程中停止了？）",
                    ),
                })
            }
        }
    }
}

/// Restores the backup `from` into the data directory `data_dir`. Refuses a non-empty target
/// unless `force` (the old contents are then kept beside it, renamed), a running node's
/// directory always, and a wrong passphrase or a damaged file before anything is written in
/// place.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    force: bool,
    passphrase: SecretString,
) -> Result<RestoreSummary, BackupError> {
    if std::os::unix::net::UnixStream::connect(socket::socket_path(data_dir)).is_ok() {
        return Err(BackupError::NodeRunning(data_dir.to_path_buf()));
    }
    let non_empty = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(io_ctx(format!("无法读取目录 {}", data_dir.display()))(
                e,
            ))
        }
    };
    if non_empty && !force {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    let file = std::fs::File::open(from)
        .map_err(io_ctx(format!("无法打开备份文件 {}", from.display())))?;
    let mut input = BufReader::new(file);
    check_magic(&mut input, from)?;
    let mut identity = age::scrypt::Identity::new(passphrase);
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let decryptor = age::Decryptor::new_buffered(input).map_err(decrypt_error)?;
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(decrypt_error)?;

    let staging = staging_path(data_dir);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_ctx(format!(
            "无法清理上次未完成的恢复 {}",
            staging.display()
        )))?;
    }
    let restored = restore_into(BufReader::new(reader), &staging);
    let (files, docs, dropped_deleted) = match restored {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    give_to_owner_of(&staging, data_dir);
    let replaced = put_in_place(&staging, data_dir, non_empty)?;
    Ok(RestoreSummary {
        files,
        docs,
        dropped_deleted,
        replaced,
    })
}

fn check_magic(input: &mut impl std::io::BufRead, from: &Path) -> Result<(), BackupError> {
    let mut line = Vec::new();
    std::io::BufRead::read_until(&mut input.take(64), b'\n', &mut line)
        .map_err(io_ctx(format!("无法读取备份文件 {}", from.display())))?;
    if line == format::MAGIC_LINE {
        return Ok(());
    }
    match line.strip_prefix(format::MAGIC_PREFIX) {
        Some(v) => Err(BackupError::NewerFormat(
            String::from_utf8_lossy(v).trim().to_string(),
        )),
        None => Err(BackupError::NotABackup(from.to_path_buf())),
    }
}

fn decrypt_error(e: age::DecryptError) -> BackupError {
    use age::DecryptError as D;
    match e {
        D::DecryptionFailed | D::KeyDecryptionFailed | D::NoMatchingKeys => {
            BackupError::WrongPassphrase
        }
        D::ExcessiveWork { required, .. } => {
            BackupError::Damaged(format!("口令强度参数 2^{required} 超出允许范围"))
        }
        D::InvalidMac | D::InvalidHeader | D::UnknownFormat => {
            BackupError::Damaged("文件头校验失败".to_string())
        }
        D::Io(e) => BackupError::Damaged(format!("读取失败：{e}")),
    }
}

fn staging_path(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".to_string());
    data_dir.with_file_name(format!(".{name}.restoring"))
}

/// A record read from the decrypted stream; a read failure is the file's fault.
fn next_record(r: &mut impl Read) -> Result<Option<Record>, BackupError> {
    read_record(r).map_err(|e| BackupError::Damaged(e.to_string()))
}

/// Reads every record into `staging` (files, then a fresh store), checks the end record, then
/// removes the documents of restored tombstones and verifies the store. Returns (files, docs,
/// documents dropped as deleted).
fn restore_into(mut r: impl Read, staging: &Path) -> Result<(u64, u64, u64), BackupError> {
    let manifest = match next_record(&mut r)? {
        Some(Record {
            tag: Tag::Manifest,
            body,
            ..
        }) => serde_json::from_slice::<Manifest>(&body)
            .map_err(|e| BackupError::Damaged(format!("清单无法解析：{e}")))?,
        _ => return Err(BackupError::Damaged("缺少清单".to_string())),
    };
    if manifest.format > format::FORMAT_VERSION {
        return Err(BackupError::NewerFormat(manifest.format.to_string()));
    }
    create_private_dir(staging)?;
    let store = DocStore::open(&staging.join("store"), StoreConfig::default())?;
    let (mut files, mut docs) = (0u64, 0u64);
    let mut tombstones = Vec::new();
    let mut batch: Vec<DocWrite> = Vec::new();
    let mut batch_bytes = 0usize;
    let end = loop {
        let Some(rec) = next_record(&mut r)? else {
            return Err(BackupError::Damaged("缺少结束记录".to_string()));
        };
        match rec.tag {
            Tag::File => {
                let rel = safe_relative(&rec.name)?;
                write_private_file(&staging.join(rel), &rec.body)?;
                files += 1;
            }
            Tag::Doc => {
                let write = doc_write(&rec)?;
                if write.key.kind() == Kind::Del {
                    tombstones.push(write.key.clone());
                }
                batch_bytes += write.chunk.len();
                batch.push(write);
                docs += 1;
                if batch.len() >= RESTORE_BATCH_DOCS || batch_bytes >= RESTORE_BATCH_BYTES {
                    store.commit(std::mem::take(&mut batch))?;
                    batch_bytes = 0;
                }
            }
            Tag::End => {
                break serde_json::from_slice::<EndRecord>(&rec.body)
                    .map_err(|e| BackupError::Damaged(format!("结束记录无法解析：{e}")))?
            }
            Tag::Manifest => return Err(BackupError::Damaged("重复的清单".to_string())),
        }
    };
    store.commit(batch)?;
    // Nothing may follow the end record, and age checks its final chunk at the end of input.
    let mut rest = [0u8; 1];
    match r.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err(BackupError::Damaged("结束记录之后还有数据".to_string())),
        Err(e) => return Err(BackupError::Damaged(e.to_string())),
    }
    if end.files != files || end.docs != docs {
        return Err(BackupError::Damaged(format!(
            "记录数不符：应有文件 {} 个、文档 {} 份，读到 {files} 个、{docs} 份",
            end.files, end.docs
        )));
    }
    let dropped = drop_deleted(&store, &tombstones)?;
    check_restored(&store, docs - dropped)?;
    drop(store);
    sync_dir(staging);
    Ok((files, docs - dropped, dropped))
}

fn doc_write(rec: &Record) -> Result<DocWrite, BackupError> {
    let key = DocKey::parse(&rec.name)
        .map_err(|e| BackupError::Damaged(format!("文档名 {} 无效：{e}", rec.name)))?;
    let (time, bytes) = rec
        .body
        .split_at_checked(8)
        .ok_or_else(|| BackupError::Damaged(format!("文档 {key} 不完整")))?;
    let mut t = [0u8; 8];
    t.copy_from_slice(time);
    let doc = Automerge::load(bytes)
        .map_err(|e| BackupError::Damaged(format!("文档 {key} 无法读取：{e}")))?;
    Ok(DocWrite {
        heads: doc.get_heads(),
        key,
        chunk: bytes.to_vec(),
        updated_at_ms: u64::from_be_bytes(t),
    })
}

/// Removes the restored documents of every restored tombstone's household (a deletion that
/// ran while the backup was taken); returns how many.
fn drop_deleted(store: &DocStore, tombstones: &[DocKey]) -> Result<u64, BackupError> {
    let mut gone = Vec::new();
    for t in tombstones {
        for k in cunyun_protocol::deletion::removed_by(t) {
            if store.entry(&k)?.is_some() {
                gone.push(k);
            }
        }
    }
    let n = gone.len() as u64;
    if n > 0 {
        tracing::warn!(
            documents = n,
            "the backup holds documents of deleted households; removed them"
        );
        store.commit_with_removals(Vec::new(), gone)?;
    }
    Ok(n)
}

/// `verify` must be clean and every document must load again.
fn check_restored(store: &DocStore, expected: u64) -> Result<(), BackupError> {
    let report = store.verify()?;
    if !report.problems.is_empty() {
        return Err(BackupError::Verify(report.problems.join("；")));
    }
    let mut loaded = 0u64;
    for item in store.scan_range(&[0x00], &[0xff]) {
        let (key, _) = item?;
        match store.load(&key)? {
            Some(_) => loaded += 1,
            None => return Err(BackupError::Verify(format!("文档 {key} 读不回来"))),
        }
    }
    if loaded != expected {
        return Err(BackupError::Verify(format!(
            "应有 {expected} 份文档，读回 {loaded} 份"
        )));
    }
    Ok(())
}

/// A backup's file name as a relative path inside the data dir: plain components only, and
/// not where the store, the content cache or the socket live.
fn safe_relative(name: &str) -> Result<PathBuf, BackupError> {
    let path = Path::new(name);
    let plain = !name.is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && !path
            .components()
            .next()
            .is_some_and(|c| SKIPPED.iter().any(|s| c.as_os_str() == *s));
    if plain {
        Ok(path.to_path_buf())
    } else {
        Err(BackupError::Damaged(format!("文件名 {name} 不允许")))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_ctx(format!("无法创建目录 {}", dir.display())))
}

/// Writes `bytes` to `path` readable by the node's user only (keys are among these files).
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    let ctx = || format!("无法写入 {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_ctx(ctx()))?;
    f.write_all(bytes).map_err(io_ctx(ctx()))?;
    f.sync_all().map_err(io_ctx(ctx()))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Gives the restored tree the owner of the directory it replaces (a restore run as root into
/// the package's `/var/lib/cunyun` leaves it to the `cunyun` user). Without permission to
/// change owners (not root) the files stay the caller's, which is then the node's own user.
fn give_to_owner_of(staging: &Path, data_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(target), Ok(mine)) = (std::fs::metadata(data_dir), std::fs::metadata(staging)) else {
        return;
    };
    if (target.uid(), target.gid()) == (mine.uid(), mine.gid()) {
        return;
    }
    let mut stack = vec![staging.to_path_buf()];
    while let Some(p) = stack.pop() {
        if let Err(e) = std::os::unix::fs::lchown(&p, Some(target.uid()), Some(target.gid())) {
            tracing::warn!(path = %p.display(), error = %e, "could not give the restored file to the data directory's owner");
            return;
        }
        if p.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
}

/// Swaps the staging directory in for `data_dir`; a non-empty target is renamed aside first.
fn put_in_place(
    staging: &Path,
    data_dir: &Path,
    non_empty: bool,
) -> Result<Option<PathBuf>, BackupError> {
    let ctx = || format!("无法把恢复的数据放到 {}", data_dir.display());
    let replaced = if non_empty {
        let aside = data_dir.with_file_name(format!(
            "{}.replaced-{}",
            data_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cunyun_platform::clock::now_ms() / 1000
        ));
        std::fs::rename(data_dir, &aside).map_err(io_ctx(ctx()))?;
        Some(aside)
    } else {
        if data_dir.exists() {
            std::fs::remove_dir(data_dir).map_err(io_ctx(ctx()))?;
        }
        None
    };
    std::fs::rename(staging, data_dir).map_err(io_ctx(ctx()))?;
    sync_parent(data_dir);
    Ok(replaced)
}
