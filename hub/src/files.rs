//! Where the hub keeps content files: the node's chunked [`BlobStore`] plus the hub's Ed25519
//! content key, which signs one [`ContentManifest`] per library item.
//!
//! Layout under the hub's data directory:
//!
//! ```text
//! blobs/           the BlobStore (chunks, signed manifests); served to nodes on the sync
//!                  port by ALPN `cunyun-blob/1`
//! content.key      the hub's content signing key: 64 hex digits (Ed25519 seed), mode 0600,
//!                  created on `cunyun-hub init` or first start; `cunyun-hub content key`
//!                  prints its public key for the nodes' `[content] trusted_hub_keys`
//! ```
//!
//! Every file of an item is chunked into the store ([`HubFiles::put`]); then
//! [`HubFiles::publish`] signs a manifest whose opaque meta is
//! `{"item_id": <library item id>, "meta": <ContentMeta JSON>}` and stores it. The manifest's
//! [`ContentId`] (BLAKE3-derived from the files) is what `rec` items carry in `content`.

use std::io::Write;
use std::path::{Path, PathBuf};

use cunyun_platform::blobs::{BlobError, BlobStore};
use cunyun_protocol::library::{ContentMeta, Format};
use cunyun_protocol::manifest::{
    key_to_hex, ContentId, ContentManifest, ManifestError, Rendition, SigningKey, TrustedKeys,
};

/// A stored file: its BLAKE3 hash (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredFile {
    /// BLAKE3 of the whole file, lower-case hex.
    pub blake3: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Why a file could not be stored or published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStoreError {
    /// Reading the source, the key or writing the store failed.
    #[error("文件读写失败（{path}）：{source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The source is not a regular file.
    #[error("“{0}”不是文件")]
    NotAFile(PathBuf),
    /// The source is empty.
    #[error("文件“{0}”是空的")]
    Empty(PathBuf),
    /// The key file is not 64 hex digits.
    #[error("内容签名密钥文件 {0} 已损坏（应为64位十六进制数字）")]
    BadKey(PathBuf),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The manifest could not be built.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Name of the key file in the hub's data directory.
pub const KEY_FILE: &str = "content.key";

/// Loads the hub's content signing key from `path`, creating it (mode 0600) when missing.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, FileStoreError> {
    let io = |source| FileStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let t = text.trim();
            if t.len() != 64 {
                return Err(FileStoreError::BadKey(path.to_path_buf()));
            }
            let mut seed = [0u8; 32];
            for (i, b) in seed.iter_mut().enumerate() {
                *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                    .map_err(|_| FileStoreError::BadKey(path.to_path_buf()))?;
            }
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(io)?;
            f.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            if let Some(d) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
                let _ = d.sync_all();
            }
            tracing::info!(target: "cunyun::_events::hub_content_key_created", path = %path.display());
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(io(e)),
    }
}

/// The MIME type of a content file, from its extension, else from the rendition's format.
pub fn mime_of(path: &Path, format: Format) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "md" | "markdown" => "text/markdown",
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "opus" | "ogg" | "oga" => "audio/ogg",
        "m4a" | "aac" => "audio/mp4",
        "wav" => "audio/wav",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        _ => match format {
            Format::Article => "text/plain",
            Format::Pdf => "application/pdf",
            _ => "application/octet-stream",
        },
    }
}

/// The hub's content files: its blob store and signing key (see the module documentation).
pub struct HubFiles {
    blobs: BlobStore,
    key: SigningKey,
}

impl HubFiles {
    /// Opens (creating) the key `<data_dir>/content.key` and the store `<data_dir>/blobs`.
    /// The hub's store has no quota: it is the origin of every item.
    pub fn open(data_dir: &Path) -> Result<HubFiles, FileStoreError> {
        let key = load_or_create_key(&data_dir.join(KEY_FILE))?;
        let mut trusted = TrustedKeys::new();
        trusted.add(key.verifying_key());
        let (blobs, report) = BlobStore::open(&data_dir.join("blobs"), u64::MAX, trusted)?;
        if report.chunks_dropped + report.manifests_dropped > 0 {
            tracing::warn!(
                chunks_dropped = report.chunks_dropped,
                manifests_dropped = report.manifests_dropped,
                "hub blob store dropped corrupt files on open"
            );
        }
        Ok(HubFiles { blobs, key })
    }

    /// The blob store (for the sync listener to serve).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The public key nodes put in `trusted_hub_keys`, 64 hex digits.
    pub fn public_key_hex(&self) -> String {
        key_to_hex(&self.key.verifying_key())
    }

    /// Chunks the file at `src` into the store as rendition `name`. Storing the same bytes
    /// twice keeps one copy (chunks are content-addressed).
    pub fn put(
        &self,
        src: &Path,
        name: &str,
        format: Format,
    ) -> Result<(StoredFile, Rendition), FileStoreError> {
        let meta = std::fs::metadata(src).map_err(|source| FileStoreError::Io {
            path: src.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(FileStoreError::NotAFile(src.to_path_buf()));
        }
        if meta.len() == 0 {
            return Err(FileStoreError::Empty(src.to_path_buf()));
        }
        let r = self.blobs.put_file(src, name, mime_of(src, format))?;
        let stored = StoredFile {
            blake3: r.file_hash.iter().map(|b| format!("{b:02x}")).collect(),
            bytes: r.total_bytes,
        };
        Ok((stored, r))
    }

    /// Signs and stores the manifest of library item `item_id` with these renditions; returns
    /// its content id.
    pub fn publish(
        &self,
        item_id: &str,
        meta: &ContentMeta,
        renditions: Vec<Rendition>,
        now_ms: u64,
    ) -> Result<ContentId, FileStoreError> {
        let meta_json = serde_json::json!({ "item_id": item_id, "meta": meta });
        let bytes = serde_json::to_vec(&meta_json)
            .map_err(|e| ManifestError::Invalid(format!("元数据编码失败：{e}")))?;
        let m = ContentManifest::sign(bytes, renditions, now_ms, &self.key)?;
        self.blobs.put_manifest(&m)?;
        tracing::info!(
            target: "cunyun::_events::content_published",
            item = %item_id,
            content = %m.content_id,
            bytes = m.total_bytes()
        );
        Ok(m.content_id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded_and_files_publish_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let files = HubFiles::open(dir.path()).unwrap();
        let pk = files.public_key_hex();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(files);
        let files = HubFiles::open(dir.path()).unwrap();
        assert_eq!(files.public_key_hex(), pk);

        let src = dir.path().join("a.md");
        std::fs::write(&src, "# 防非洲猪瘟\n").unwrap();
        let (f, r) = files.put(&src, "main", Format::Article).unwrap();
        assert_eq!(f.bytes, "# 防非洲猪瘟\n".len() as u64);
        assert_eq!(
            f.blake3,
            blake3::hash("# 防非洲猪瘟\n".as_bytes())
                .to_hex()
                .to_string()
        );
        assert_eq!(r.mime, "text/markdown");
        let meta = ContentMeta::from_json(&serde_json::json!({"title": "防非洲猪瘟",
            "tags": ["liv.asf"], "format": "article", "bytes": f.bytes,
            "review_date": "2026-03-01"}))
        .unwrap();
        let id = files
            .publish("c0123456789abcdef", &meta, vec![r], 1)
            .unwrap();
        assert!(files.blobs().is_complete(&id));
        let m = files.blobs().manifest(&id).unwrap();
        m.verify(&TrustedKeys::from_hex(&[pk]).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.meta).unwrap();
        assert_eq!(v["item_id"], "c0123456789abcdef");
        assert_eq!(v["meta"]["title"], "防非洲猪瘟");
        assert_eq!(
            files.blobs().read_range(&id, "main", 0, 1000).unwrap(),
            std::fs::read(&src).unwrap()
        );

        assert!(matches!(
            files.put(dir.path(), "main", Format::Article),
            Err(FileStoreError::NotAFile(_))
        ));
        let empty = dir.path().join("e");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            files.put(&empty, "main", Format::Article),
            Err(FileStoreError::Empty(_))
        ));
        std::fs::write(dir.path().join(KEY_FILE), "zz").unwrap();
        assert!(matches!(
            HubFiles::open(dir.path()),
            Err(FileStoreError::BadKey(_))
        ));
    }
}
