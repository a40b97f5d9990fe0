//! Where the hub keeps content files: the [`FileStore`] trait and a simple whole-file store.
//!
//! The content library stores each rendition's file through [`FileStore`], so the chunked,
//! content-addressed store with signed manifests (the file side of the hub milestone) can replace
//! [`SimpleFileStore`] without touching the library or matching. [`SimpleFileStore`] keeps each
//! file whole under `<dir>/<blake3 hex>`: written to a temporary file, flushed to disk, then
//! renamed, so a stored file is complete or absent.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A stored file: its BLAKE3 hash (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredFile {
    /// BLAKE3 of the whole file, lower-case hex.
    pub blake3: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Why a file could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStoreError {
    /// Reading the source or writing the store failed.
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
}

/// Content-addressed file storage for the content library.
pub trait FileStore: Send + Sync {
    /// Copies the file at `src` into the store (durably) and returns its hash and size. Storing
    /// the same bytes twice keeps one copy.
    fn put(&self, src: &Path) -> Result<StoredFile, FileStoreError>;
    /// Whether the store holds a file with this hash.
    fn contains(&self, blake3: &str) -> bool;
}

/// Whole files under one directory, named by their BLAKE3 hash.
#[derive(Debug, Clone)]
pub struct SimpleFileStore {
    dir: PathBuf,
}

impl SimpleFileStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<SimpleFileStore, FileStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| FileStoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(SimpleFileStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the file with `blake3` lives (whether or not it exists).
    pub fn path_of(&self, blake3: &str) -> PathBuf {
        self.dir.join(blake3)
    }
}

impl FileStore for SimpleFileStore {
    fn put(&self, src: &Path) -> Result<StoredFile, FileStoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FileStoreError::Io { path, source }
        };
        let meta = std::fs::metadata(src).map_err(io(src))?;
        if !meta.is_file() {
            return Err(FileStoreError::NotAFile(src.to_path_buf()));
        }
        if meta.len() == 0 {
            return Err(FileStoreError::Empty(src.to_path_buf()));
        }
        let tmp = self.dir.join(format!(
            ".incoming-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut hasher = blake3::Hasher::new();
        let mut bytes = 0u64;
        {
            let mut input = std::fs::File::open(src).map_err(io(src))?;
            let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = input.read(&mut buf).map_err(io(src))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io(&tmp))?;
                bytes += n as u64;
            }
            out.sync_all().map_err(io(&tmp))?;
        }
        let blake3 = hasher.finalize().to_hex().to_string();
        let dest = self.path_of(&blake3);
        if dest.exists() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        Ok(StoredFile { blake3, bytes })
    }

    fn contains(&self, blake3: &str) -> bool {
        blake3.len() == 64
            && blake3.bytes().all(|c| c.is_ascii_hexdigit())
            && self.path_of(blake3).is_file()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_hash_once_and_refuses_bad_sources() {
        let dir = tempfile::tempdir().unwrap();
        let store = SimpleFileStore::open(&dir.path().join("files")).unwrap();
        let src = dir.path().join("a.md");
        std::fs::write(&src, "# 防非洲猪瘟\n").unwrap();
        let f = store.put(&src).unwrap();
        assert_eq!(f.bytes, "# 防非洲猪瘟\n".len() as u64);
        assert_eq!(
            f.blake3,
            blake3::hash("# 防非洲猪瘟\n".as_bytes())
                .to_hex()
                .to_string()
        );
        assert!(store.contains(&f.blake3));
        assert_eq!(
            std::fs::read(store.path_of(&f.blake3)).unwrap(),
            std::fs::read(&src).unwrap()
        );
        assert_eq!(store.put(&src).unwrap(), f);
        assert_eq!(
            std::fs::read_dir(dir.path().join("files")).unwrap().count(),
            1
        );
        assert!(matches!(
            store.put(dir.path()),
            Err(FileStoreError::NotAFile(_))
        ));
        let empty = dir.path().join("e");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(store.put(&empty), Err(FileStoreError::Empty(_))));
        assert!(store.put(&dir.path().join("missing")).is_err());
        assert!(!store.contains("../etc/passwd"));
    }
}
