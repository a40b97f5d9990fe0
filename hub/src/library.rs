//! The hub's content library: operators' content items (metadata + files), kept durably.
//!
//! This module owns the library records: one JSON file per item under `<data>/library/`, each
//! `{"id", "meta", "files", "added_ms"}` where `meta` is the item's [`ContentMeta`] JSON (the blob
//! the signed `content` manifest will carry) and `files` maps each rendition id to its stored file
//! (BLAKE3 and size), and `content` is the [`ContentId`](cunyun_protocol::manifest::ContentId)
//! (hex) of the signed manifest published for it. Files are chunked into the hub's blob store
//! and the manifest signed through [`HubFiles`]. A record is written to a temporary file,
//! flushed, then renamed, and only then acknowledged.
//!
//! An item's id is `c` + the first 16 hex digits of its main file's BLAKE3, so adding the same
//! file again updates that item's metadata instead of duplicating it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cunyun_protocol::fields::FieldErrors;
use cunyun_protocol::library::{ContentMeta, MAIN_RENDITION};
use serde::Serialize;
use serde_json::Value;

use crate::files::{FileStoreError, HubFiles, StoredFile};

/// One content item of the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContentRecord {
    /// The content id.
    pub id: String,
    /// Its metadata.
    pub meta: ContentMeta,
    /// The stored file of each rendition (`main` and the others).
    pub files: BTreeMap<String, StoredFile>,
    /// The content id (hex) of the item's signed manifest (what `rec` items carry).
    pub content: Option<String>,
    /// When it was added or last changed, ms since the Unix epoch.
    pub added_ms: u64,
}

/// Why a library operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryError {
    /// The metadata is invalid.
    #[error("资源信息有误：{0}")]
    Invalid(FieldErrors),
    /// A rendition has no file, or a file was given for no rendition.
    #[error("{0}")]
    Files(String),
    /// A file could not be stored.
    #[error(transparent)]
    FileStore(#[from] FileStoreError),
    /// The library directory could not be read or written.
    #[error("资源库读写失败（{path}）：{source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A stored record is unreadable.
    #[error("资源记录 {path} 已损坏：{message}")]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No such item.
    #[error("没有编号为“{0}”的资源")]
    NotFound(String),
}

/// The content library (see the module documentation).
pub struct ContentLibrary {
    dir: PathBuf,
    files: Arc<HubFiles>,
    records: Mutex<BTreeMap<String, ContentRecord>>,
    /// Bumped on every change, so the matcher can tell when to reload.
    version: std::sync::atomic::AtomicU64,
}

use cunyun_platform::clock::now_ms;

fn valid_id(id: &str) -> bool {
    id.len() == 17
        && id.starts_with('c')
        && id[1..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

impl ContentLibrary {
    /// Opens the library in `dir` (created if missing), reading every record.
    pub fn open(dir: &Path, files: Arc<HubFiles>) -> Result<ContentLibrary, LibraryError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LibraryError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut records = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let rec = parse_record(&text).map_err(|message| LibraryError::Corrupt {
                path: path.clone(),
                message,
            })?;
            records.insert(rec.id.clone(), rec);
        }
        Ok(ContentLibrary {
            dir: dir.to_path_buf(),
            files,
            records: Mutex::new(records),
            version: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// A number that changes whenever the library does.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every item, by id.
    pub fn list(&self) -> Vec<ContentRecord> {
        self.records
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One item.
    pub fn get(&self, id: &str) -> Option<ContentRecord> {
        self.records.lock().ok()?.get(id).cloned()
    }

    /// Adds an item (or updates the item with the same main file): `meta` is the metadata JSON
    /// (its `bytes` and each rendition's `bytes` may be left out: they are taken from the files),
    /// `main` the main file and `others` the file of each further rendition by id. Nothing is
    /// stored unless everything is valid; durable when it returns.
    pub fn add(
        &self,
        meta: &Value,
        main: &Path,
        others: &BTreeMap<String, PathBuf>,
    ) -> Result<ContentRecord, LibraryError> {
        let mut meta = meta.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LibraryError::Io { path, source }
        };
        // Sizes come from the files; check every file before storing any.
        let size = |p: &Path| -> Result<u64, LibraryError> {
            let m = std::fs::metadata(p).map_err(io(p))?;
            if !m.is_file() {
                return Err(FileStoreError::NotAFile(p.to_path_buf()).into());
            }
            Ok(m.len())
        };
        let main_size = size(main)?;
        let mut sizes = BTreeMap::new();
        for (id, p) in others {
            sizes.insert(id.clone(), size(p)?);
        }
        if let Value::Object(m) = &mut meta {
            m.entry("bytes").or_insert(Value::from(main_size));
            if let Some(Value::Array(rs)) = m.get_mut("renditions") {
                for r in rs.iter_mut() {
                    if let Value::Object(r) = r {
                        let id = r.get("id").and_then(Value::as_str).map(str::to_string);
                        if let Some(s) = id.and_then(|id| sizes.get(&id)) {
                            r.entry("bytes").or_insert(Value::from(*s));
                        }
                    }
                }
            }
        }
        let meta = ContentMeta::from_json(&meta).map_err(LibraryError::Invalid)?;
        let wanted: Vec<String> = meta.renditions.iter().map(|r| r.id.clone()).collect();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|id| !others.contains_key(*id))
            .collect();
        let extra: Vec<&String> = others.keys().filter(|id| !wanted.contains(id)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            let mut msg = Vec::new();
            if !missing.is_empty() {
                msg.push(format!("版本{:?}缺少文件", missing));
            }
            if !extra.is_empty() {
                msg.push(format!("文件对应的版本{:?}不在资源信息中", extra));
            }
            return Err(LibraryError::Files(msg.join("；")));
        }
        for r in meta.all_renditions() {
            let actual = if r.id == MAIN_RENDITION {
                main_size
            } else {
                sizes.get(&r.id).copied().unwrap_or(0)
            };
            if actual != r.bytes {
                return Err(LibraryError::Files(format!(
                    "版本“{}”的文件大小为{}字节，资源信息中写的是{}字节",
                    r.id, actual, r.bytes
                )));
            }
        }
        let mut files = BTreeMap::new();
        let (main_file, main_r) = self.files.put(main, MAIN_RENDITION, meta.format)?;
        let mut renditions = vec![main_r];
        for r in &meta.renditions {
            if let Some(p) = others.get(&r.id) {
                let (f, rendition) = self.files.put(p, &r.id, r.format)?;
                files.insert(r.id.clone(), f);
                renditions.push(rendition);
            }
        }
        let id = format!("c{}", &main_file.blake3[..16]);
        files.insert(MAIN_RENDITION.to_string(), main_file);
        let added_ms = now_ms();
        let content = self.files.publish(&id, &meta, renditions, added_ms)?;
        let record = ContentRecord {
            id: id.clone(),
            meta,
            files,
            content: Some(content.to_string()),
            added_ms,
        };
        self.persist(&record)?;
        if let Ok(mut r) = self.records.lock() {
            r.insert(id.clone(), record.clone());
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(target: "cunyun::_events::content_added", id = %id, title = %record.meta.title);
        Ok(record)
    }

    /// Replaces an item's metadata and re-signs its manifest; the files, and so the content id,
    /// stay. `meta` is the new metadata JSON; the fields that describe the files (`format`,
    /// `bytes`, `renditions`) are taken from the stored item whatever `meta` says. Nothing
    /// changes unless the metadata is valid; durable when it returns.
    pub fn update_meta(&self, id: &str, meta: &Value) -> Result<ContentRecord, LibraryError> {
        let old = self
            .get(id)
            .filter(|_| valid_id(id))
            .ok_or_else(|| LibraryError::NotFound(id.to_string()))?;
        let mut meta = meta.clone();
        let Value::Object(m) = &mut meta else {
            return Err(LibraryError::Invalid(FieldErrors(vec![
                cunyun_protocol::fields::FieldError::new("", "wrong_type", "资源信息应为JSON对象"),
            ])));
        };
        let old_json = serde_json::to_value(&old.meta).map_err(|e| LibraryError::Corrupt {
            path: self.dir.join(format!("{id}.json")),
            message: e.to_string(),
        })?;
        for k in ["format", "bytes", "renditions"] {
            if let Some(v) = old_json.get(k) {
                m.insert(k.to_string(), v.clone());
            }
        }
        let meta = ContentMeta::from_json(&meta).map_err(LibraryError::Invalid)?;
        let cid: cunyun_protocol::manifest::ContentId = old
            .content
            .as_deref()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                LibraryError::Files(format!("资源“{id}”没有已发布的清单，请重新添加文件"))
            })?;
        let manifest = self.files.blobs().manifest(&cid).ok_or_else(|| {
            LibraryError::Files(format!("资源“{id}”的清单不在文件库中，请重新添加文件"))
        })?;
        // Strictly later than the manifest it replaces, so the blob store keeps the new one.
        let added_ms = now_ms().max(manifest.issued_at_ms + 1);
        let content = self
            .files
            .publish(id, &meta, manifest.renditions.clone(), added_ms)?;
        let record = ContentRecord {
            id: id.to_string(),
            meta,
            files: old.files,
            content: Some(content.to_string()),
            added_ms,
        };
        self.persist(&record)?;
        if let Ok(mut r) = self.records.lock() {
            r.insert(id.to_string(), record.clone());
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(target: "cunyun::_events::content_updated", id = %id, content = %content);
        Ok(record)
    }

    /// Removes an item (its files and signed manifest stay in the blob store, so nodes that
    /// still hold recommendations for it can finish fetching it).
    pub fn remove(&self, id: &str) -> Result<(), LibraryError> {
        if !valid_id(id) || self.get(id).is_none() {
            return Err(LibraryError::NotFound(id.to_string()));
        }
        let path = self.dir.join(format!("{id}.json"));
        std::fs::remove_file(&path).map_err(|source| LibraryError::Io {
            path: path.clone(),
            source,
        })?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        if let Ok(mut r) = self.records.lock() {
            r.remove(id);
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(target: "cunyun::_events::content_removed", id = %id);
        Ok(())
    }

    fn persist(&self, record: &ContentRecord) -> Result<(), LibraryError> {
        let path = self.dir.join(format!("{}.json", record.id));
        let tmp = self.dir.join(format!(".{}.json.tmp", record.id));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LibraryError::Io { path, source }
        };
        let text = serde_json::to_string_pretty(record).map_err(|e| LibraryError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn parse_record(text: &str) -> Result<ContentRecord, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| valid_id(id))
        .ok_or("缺少有效的资源编号")?
        .to_string();
    let meta =
        ContentMeta::from_json(v.get("meta").unwrap_or(&Value::Null)).map_err(|e| e.to_string())?;
    let files: BTreeMap<String, StoredFile> =
        serde_json::from_value(v.get("files").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("files: {e}"))?;
    let added_ms = v.get("added_ms").and_then(Value::as_u64).unwrap_or(0);
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .map(|s| {
            s.parse::<cunyun_protocol::manifest::ContentId>()
                .map(|c| c.to_string())
                .map_err(|e| format!("content: {e}"))
        })
        .transpose()?;
    Ok(ContentRecord {
        id,
        meta,
        files,
        content,
        added_ms,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lib(dir: &Path) -> ContentLibrary {
        let files = Arc::new(HubFiles::open(dir).unwrap());
        ContentLibrary::open(&dir.join("library"), files).unwrap()
    }

    #[test]
    fn add_persist_reopen_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("asf.md");
        std::fs::write(&main, "# 防非洲猪瘟\n不从疫区调猪。\n").unwrap();
        let audio = dir.path().join("asf.opus");
        std::fs::write(&audio, vec![7u8; 5000]).unwrap();
        let l = lib(dir.path());
        let meta = json!({"title": "防非洲猪瘟", "tags": ["liv.asf"], "format": "article",
            "review_date": "2026-03-01",
            "renditions": [{"id": "audio", "format": "audio", "language": "sichuanese"}]});
        let others = BTreeMap::from([("audio".to_string(), audio.clone())]);
        let rec = l.add(&meta, &main, &others).unwrap();
        assert_eq!(rec.meta.bytes, std::fs::metadata(&main).unwrap().len());
        assert_eq!(rec.meta.renditions[0].bytes, 5000);
        assert_eq!(rec.files.len(), 2);
        // The signed manifest is in the blob store, with both files complete.
        let files = HubFiles::open(dir.path()).unwrap();
        let cid: cunyun_protocol::manifest::ContentId =
            rec.content.as_deref().unwrap().parse().unwrap();
        assert!(files.blobs().is_complete(&cid));
        assert_eq!(
            files.blobs().read_range(&cid, "audio", 0, 10_000).unwrap(),
            vec![7u8; 5000]
        );
        drop(files);
        let v = l.version();
        drop(l);
        let l = lib(dir.path());
        assert_eq!(l.get(&rec.id).unwrap(), rec);
        // The same file again updates the item.
        let mut meta2 = meta.clone();
        meta2["title"] = json!("防非洲猪瘟（修订）");
        let rec2 = l.add(&meta2, &main, &others).unwrap();
        assert_eq!(rec2.id, rec.id);
        assert_eq!(l.list().len(), 1);
        assert!(l.version() >= v);
        // Editing the metadata re-signs the manifest; the id and the content id stay, and the
        // fields that describe the files cannot be changed this way.
        let edit = json!({"title": "防非洲猪瘟（第三版）", "tags": ["liv.asf", "liv.pig"],
            "format": "video", "bytes": 1, "review_date": "2026-03-02"});
        let rec3 = l.update_meta(&rec.id, &edit).unwrap();
        assert_eq!(
            (rec3.id.as_str(), rec3.content.as_deref()),
            (rec.id.as_str(), rec.content.as_deref())
        );
        assert_eq!(rec3.meta.format, rec.meta.format);
        assert_eq!(rec3.meta.bytes, rec.meta.bytes);
        assert_eq!(rec3.meta.renditions, rec.meta.renditions);
        let files = HubFiles::open(dir.path()).unwrap();
        let m = files.blobs().manifest(&cid).unwrap();
        let v: Value = serde_json::from_slice(&m.meta).unwrap();
        assert_eq!(v["meta"]["title"], "防非洲猪瘟（第三版）");
        drop(files);
        match l.update_meta(&rec.id, &json!({"title": "", "tags": []})) {
            Err(LibraryError::Invalid(e)) => assert!(e.len() >= 3, "{e:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.get(&rec.id).unwrap(), rec3);
        assert!(matches!(
            l.update_meta("c0000000000000000", &edit),
            Err(LibraryError::NotFound(_))
        ));
        l.remove(&rec.id).unwrap();
        assert!(l.list().is_empty());
        assert!(matches!(l.remove(&rec.id), Err(LibraryError::NotFound(_))));
        assert!(lib(dir.path()).list().is_empty());
    }

    #[test]
    fn bad_input_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("a.pdf");
        std::fs::write(&main, "pdf").unwrap();
        let l = lib(dir.path());
        let bad = json!({"title": "", "tags": [], "format": "pdf", "review_date": "2026-03-01"});
        match l.add(&bad, &main, &BTreeMap::new()) {
            Err(LibraryError::Invalid(e)) => assert!(e.len() >= 2),
            other => panic!("{other:?}"),
        }
        // A rendition without its file.
        let meta = json!({"title": "x", "tags": ["saf.drown"], "format": "pdf",
            "review_date": "2026-03-01", "renditions": [{"id": "a", "format": "audio", "bytes": 3}]});
        assert!(matches!(
            l.add(&meta, &main, &BTreeMap::new()),
            Err(LibraryError::Files(_))
        ));
        // A stated size that is not the file's.
        let meta = json!({"title": "x", "tags": ["saf.drown"], "format": "pdf", "bytes": 99,
            "review_date": "2026-03-01"});
        assert!(matches!(
            l.add(&meta, &main, &BTreeMap::new()),
            Err(LibraryError::Files(_))
        ));
        assert!(l.list().is_empty());
        assert!(std::fs::read_dir(dir.path().join("library"))
            .unwrap()
            .next()
            .is_none());
    }
}
