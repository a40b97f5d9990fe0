//! Exporting every document of an open store as backup records (the `D` records and the end
//! record of [`super::format`]), through the store's public API only.
//!
//! Used in two places: by `cunyun-node backup` on a stopped node's store, and by the running
//! node itself on its backup socket ([`super::socket`]), because sled allows one process per
//! store and a running node holds it.

use std::io::Write;

use cunyun_platform::store::{DocStore, StoreError};

use super::format::{write_record, EndRecord, Tag};

/// Writes every document of `store` as a `D` record (its index time and automerge `save()`),
/// in key order,
/// then the end record; returns what the end record says. A document the store reports
/// damaged is left out and named in [`EndRecord::damaged`]; one removed between the index scan
/// and its load (a deletion running meanwhile) is left out silently.
pub fn export_docs(store: &DocStore, out: &mut impl Write) -> Result<EndRecord, ExportError> {
    let end = export_doc_records(store, out)?;
    let body = serde_json::to_vec(&end).map_err(std::io::Error::other)?;
    write_record(out, Tag::End, "", &body)?;
    out.flush()?;
    Ok(end)
}

/// [`export_docs`] without the end record (the backup file's own end record also counts the
/// files).
pub fn export_doc_records(
    store: &DocStore,
    out: &mut impl Write,
) -> Result<EndRecord, ExportError> {
    let mut end = EndRecord::default();
    // Every key begins with its area digits; [0x00, 0xff) is the whole index.
    for item in store.scan_range(&[0x00], &[0xff]) {
        let (key, entry) = match item {
            Ok(found) => found,
            Err(StoreError::Corrupt { key, reason }) => {
                tracing::error!(doc = %key, %reason, "damaged document left out of the backup");
                end.damaged.push(key);
                continue;
            }
            Err(e) => return Err(ExportError::Store(e)),
        };
        match store.load(&key) {
            Ok(Some(doc)) => {
                let mut body = entry.updated_at_ms.to_be_bytes().to_vec();
                body.extend_from_slice(&doc.save());
                write_record(out, Tag::Doc, &key.to_string(), &body)?;
                end.docs += 1;
            }
            Ok(None) => {}
            Err(StoreError::Corrupt { key, reason }) => {
                tracing::error!(doc = %key, %reason, "damaged document left out of the backup");
                end.damaged.push(key);
            }
            Err(e) => return Err(ExportError::Store(e)),
        }
    }
    Ok(end)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed (not a single damaged document: those are left out).
    #[error("读取文档库失败：{0}")]
    Store(#[from] StoreError),
    /// Writing the records failed.
    #[error("写出备份数据失败：{0}")]
    Io(#[from] std::io::Error),
}
