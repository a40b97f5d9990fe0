//! The content-addressed chunk store on disk (see the module doc of [`crate::blobs`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cunyun_protocol::blob::MissingChunk;
use cunyun_protocol::manifest::{
    ContentId, ContentManifest, Hash, ManifestError, Rendition, TrustedKeys,
};

use super::DEFAULT_CHUNK_SIZE;

/// What went wrong in the blob store. Messages are for operators (Chinese).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// A file could not be read or written.
    #[error("内容文件读写失败 {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Bytes do not match the hash they were stored or offered under.
    #[error("分块校验失败（BLAKE3 不符）")]
    HashMismatch,
    /// The item, rendition or chunk is not held.
    #[error("没有此内容：{0}")]
    NotFound(String),
    /// Not enough room even after evicting everything no longer wanted.
    #[error("内容缓存空间不足：需要 {need} 字节，上限 {quota} 字节，已用 {used} 字节")]
    QuotaExceeded {
        /// Bytes needed.
        need: u64,
        /// The quota.
        quota: u64,
        /// Bytes in use after eviction.
        used: u64,
    },
    /// A file's assembled bytes do not match the manifest's whole-file hash.
    #[error("文件整体校验失败：{0}")]
    FileMismatch(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What [`BlobStore::verify`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chunks checked.
    pub chunks_checked: u64,
    /// Chunks whose bytes did not match their name, removed.
    pub chunks_dropped: u64,
    /// Manifests that did not decode or verify, removed.
    pub manifests_dropped: u64,
}

#[derive(Debug, Default)]
struct State {
    manifests: BTreeMap<ContentId, ContentManifest>,
    chunks: HashMap<Hash, u64>,
    usage: u64,
    /// Last time each item was named in a wanted list, ms since the epoch.
    wanted: BTreeMap<ContentId, u64>,
}

struct Inner {
    dir: PathBuf,
    quota_bytes: u64,
    trusted: TrustedKeys,
    state: Mutex<State>,
}

/// The blob store; cheap to clone (shared).
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<Hash> {
    s.parse::<ContentId>().ok().map(|c| c.0)
}

impl BlobStore {
    /// Opens (creating) the store in `dir`, keeping at most `quota_bytes` of chunks, and
    /// checks it: every chunk is re-hashed and every manifest decoded and verified against
    /// `trusted`; whatever fails is removed (see [`BlobStore::verify`]).
    pub fn open(
        dir: &Path,
        quota_bytes: u64,
        trusted: TrustedKeys,
    ) -> Result<(BlobStore, VerifyReport), BlobError> {
        for sub in ["chunks", "manifests", "partial", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        // Temp files are writes that never completed.
        let tmp = dir.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let store = BlobStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                quota_bytes,
                trusted,
                state: Mutex::new(State::default()),
            }),
        };
        let wanted_path = dir.join("wanted.json");
        if let Ok(bytes) = fs::read(&wanted_path) {
            let parsed: BTreeMap<String, u64> = serde_json::from_slice(&bytes).unwrap_or_default();
            store.state().wanted = parsed
                .into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect();
        }
        let report = store.verify()?;
        Ok((store, report))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The disk quota for chunks, in bytes.
    pub fn quota_bytes(&self) -> u64 {
        self.inner.quota_bytes
    }

    /// Bytes of chunks held.
    pub fn usage_bytes(&self) -> u64 {
        self.state().usage
    }

    /// The hub keys manifests must be signed by.
    pub fn trusted(&self) -> &TrustedKeys {
        &self.inner.trusted
    }

    fn chunk_path(&self, hash: &Hash) -> PathBuf {
        let h = hex(hash);
        self.inner.dir.join("chunks").join(&h[..2]).join(h)
    }

    fn manifest_path(&self, id: &ContentId) -> PathBuf {
        self.inner.dir.join("manifests").join(format!("{id}.cm"))
    }

    fn partial_path(&self, hash: &Hash) -> PathBuf {
        self.inner.dir.join("partial").join(hex(hash))
    }

    /// Writes `data` to `path` atomically: temp file, fsync, rename (and, if `durable`, fsync
    /// of the directory so the rename itself survives power loss).
    fn write_atomic(&self, path: &Path, data: &[u8], durable: bool) -> Result<(), BlobError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self
            .inner
            .dir
            .join("tmp")
            .join(format!("{name}.{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::rename(&tmp, path).map_err(io(path))?;
        if durable {
            if let Some(parent) = path.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io(parent))?;
            }
        }
        Ok(())
    }

    /// Re-hashes every chunk and re-verifies every manifest, removing what fails, and rebuilds
    /// the in-memory index. Runs on open.
    pub fn verify(&self) -> Result<VerifyReport, BlobError> {
        let mut report = VerifyReport::default();
        let mut chunks = HashMap::new();
        let mut usage = 0;
        let root = self.inner.dir.join("chunks");
        for sub in fs::read_dir(&root).map_err(io(&root))?.flatten() {
            let Ok(files) = fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let name = f.file_name().to_string_lossy().into_owned();
                let ok = match (unhex32(&name), fs::read(&path)) {
                    (Some(h), Ok(data)) if *blake3::hash(&data).as_bytes() == h => {
                        chunks.insert(h, data.len() as u64);
                        usage += data.len() as u64;
                        true
                    }
                    _ => false,
                };
                report.chunks_checked += 1;
                if !ok {
                    tracing::warn!(
                        target: "cunyun::_events::blob_chunk_dropped",
                        path = %path.display()
                    );
                    let _ = fs::remove_file(&path);
                    report.chunks_dropped += 1;
                }
            }
        }
        let mut manifests = BTreeMap::new();
        let mdir = self.inner.dir.join("manifests");
        for f in fs::read_dir(&mdir).map_err(io(&mdir))?.flatten() {
            let path = f.path();
            let decoded = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                ContentManifest::decode_verified(&b, &self.inner.trusted).map_err(|e| e.to_string())
            });
            match decoded {
                Ok(m) if path == self.manifest_path(&m.content_id) => {
                    manifests.insert(m.content_id, m);
                }
                other => {
                    tracing::warn!(
                        target: "cunyun::_events::blob_manifest_dropped",
                        path = %path.display(),
                        error = ?other.err()
                    );
                    let _ = fs::remove_file(&path);
                    report.manifests_dropped += 1;
                }
            }
        }
        let mut st = self.state();
        st.chunks = chunks;
        st.usage = usage;
        st.manifests = manifests;
        Ok(report)
    }

    /// Whether the chunk is held.
    pub fn has_chunk(&self, hash: &Hash) -> bool {
        self.state().chunks.contains_key(hash)
    }

    /// Reads a chunk, checking its hash; a corrupt copy is removed and reported as absent.
    pub fn get_chunk(&self, hash: &Hash) -> Result<Option<Vec<u8>>, BlobError> {
        if !self.has_chunk(hash) {
            return Ok(None);
        }
        let path = self.chunk_path(hash);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget_chunk(hash);
                return Ok(None);
            }
            Err(e) => return Err(io(&path)(e)),
        };
        if *blake3::hash(&data).as_bytes() != *hash {
            tracing::warn!(
                target: "cunyun::_events::blob_chunk_dropped",
                path = %path.display()
            );
            let _ = fs::remove_file(&path);
            self.forget_chunk(hash);
            return Ok(None);
        }
        Ok(Some(data))
    }

    fn forget_chunk(&self, hash: &Hash) {
        let mut st = self.state();
        if let Some(len) = st.chunks.remove(hash) {
            st.usage -= len;
        }
    }

    /// Stores a chunk after checking that `data` hashes to `hash`.
    pub fn put_chunk(&self, hash: &Hash, data: &[u8]) -> Result<(), BlobError> {
        if *blake3::hash(data).as_bytes() != *hash {
            return Err(BlobError::HashMismatch);
        }
        if !self.has_chunk(hash) {
            self.write_atomic(&self.chunk_path(hash), data, false)?;
            let mut st = self.state();
            if st.chunks.insert(*hash, data.len() as u64).is_none() {
                st.usage += data.len() as u64;
            }
        }
        let _ = fs::remove_file(self.partial_path(hash));
        Ok(())
    }

    /// Keeps the received start of a chunk whose transfer was cut (unverified; a later
    /// transfer asks only for the rest and checks the whole).
    pub fn keep_partial(&self, hash: &Hash, prefix: &[u8]) -> Result<(), BlobError> {
        let path = self.partial_path(hash);
        fs::write(&path, prefix).map_err(io(&path))
    }

    /// Chunks a file into the store and describes it as a rendition (chunks of
    /// [`DEFAULT_CHUNK_SIZE`]). The file is read once, one chunk at a time.
    pub fn put_file(&self, path: &Path, name: &str, mime: &str) -> Result<Rendition, BlobError> {
        self.put_file_chunked(path, name, mime, DEFAULT_CHUNK_SIZE)
    }

    /// [`BlobStore::put_file`] with a given chunk size.
    pub fn put_file_chunked(
        &self,
        path: &Path,
        name: &str,
        mime: &str,
        chunk_size: u32,
    ) -> Result<Rendition, BlobError> {
        let mut f = File::open(path).map_err(io(path))?;
        let mut whole = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; chunk_size as usize];
        loop {
            let mut n = 0;
            while n < buf.len() {
                let got = f.read(&mut buf[n..]).map_err(io(path))?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            if n == 0 {
                break;
            }
            let data = &buf[..n];
            let h = *blake3::hash(data).as_bytes();
            self.put_chunk(&h, data)?;
            whole.update(data);
            chunks.push(h);
            total += n as u64;
            if n < buf.len() {
                break;
            }
        }
        Ok(Rendition {
            name: name.into(),
            mime: mime.into(),
            total_bytes: total,
            chunk_size,
            chunks,
            file_hash: *whole.finalize().as_bytes(),
        })
    }

    /// Stores a manifest after verifying it against the trusted keys. An older manifest for
    /// the same item (by `issued_at_ms`) replaces nothing; a newer one replaces the held one.
    pub fn put_manifest(&self, m: &ContentManifest) -> Result<(), BlobError> {
        m.verify(&self.inner.trusted)?;
        if let Some(old) = self.state().manifests.get(&m.content_id) {
            if old.issued_at_ms >= m.issued_at_ms {
                return Ok(());
            }
        }
        self.write_atomic(&self.manifest_path(&m.content_id), &m.encode(), true)?;
        self.state().manifests.insert(m.content_id, m.clone());
        Ok(())
    }

    /// The held manifest of an item.
    pub fn manifest(&self, id: &ContentId) -> Option<ContentManifest> {
        self.state().manifests.get(id).cloned()
    }

    /// Every item with a manifest held.
    pub fn contents(&self) -> Vec<ContentId> {
        self.state().manifests.keys().copied().collect()
    }

    /// Chunks of `m` not held, each with any prefix kept from a cut transfer.
    pub fn missing_chunks(&self, m: &ContentManifest) -> Vec<MissingChunk> {
        let mut out = Vec::new();
        let st = self.state();
        for (ri, r) in m.renditions.iter().enumerate() {
            for (ci, h) in r.chunks.iter().enumerate() {
                if st.chunks.contains_key(h) {
                    continue;
                }
                let prefix = fs::read(self.partial_path(h))
                    .ok()
                    .filter(|p| (p.len() as u64) < u64::from(r.chunk_len(ci as u32)))
                    .unwrap_or_default();
                out.push(MissingChunk {
                    rendition: ri as u8,
                    chunk: ci as u32,
                    prefix,
                });
            }
        }
        out
    }

    /// Bytes still to fetch for `m` (ignoring kept prefixes).
    pub fn missing_bytes(&self, m: &ContentManifest) -> u64 {
        let st = self.state();
        let mut seen = BTreeSet::new();
        m.renditions
            .iter()
            .flat_map(|r| {
                r.chunks
                    .iter()
                    .enumerate()
                    .map(move |(i, h)| (h, r.chunk_len(i as u32)))
            })
            .filter(|(h, _)| !st.chunks.contains_key(*h) && seen.insert(**h))
            .map(|(_, l)| u64::from(l))
            .sum()
    }

    /// Whether the item's manifest and every chunk of it are held.
    pub fn is_complete(&self, id: &ContentId) -> bool {
        let st = self.state();
        st.manifests.get(id).is_some_and(|m| {
            m.renditions
                .iter()
                .all(|r| r.chunks.iter().all(|h| st.chunks.contains_key(h)))
        })
    }

    /// Reads every rendition of a complete item and checks its whole-file hash.
    pub fn verify_content(&self, id: &ContentId) -> Result<(), BlobError> {
        let m = self
            .manifest(id)
            .ok_or_else(|| BlobError::NotFound(id.to_string()))?;
        for r in &m.renditions {
            let mut h = blake3::Hasher::new();
            for c in &r.chunks {
                let data = self
                    .get_chunk(c)?
                    .ok_or_else(|| BlobError::NotFound(format!("{id}/{}", r.name)))?;
                h.update(&data);
            }
            if *h.finalize().as_bytes() != r.file_hash {
                return Err(BlobError::FileMismatch(format!("{id}/{}", r.name)));
            }
        }
        Ok(())
    }

    /// Reads `len` bytes from `start` of a rendition of a held item (for serving files, with
    /// HTTP range requests). Reads only the chunks the range covers; each is verified.
    pub fn read_range(
        &self,
        id: &ContentId,
        rendition: &str,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>, BlobError> {
        let m = self
            .manifest(id)
            .ok_or_else(|| BlobError::NotFound(id.to_string()))?;
        let r = m
            .rendition(rendition)
            .ok_or_else(|| BlobError::NotFound(format!("{id}/{rendition}")))?;
        let end = start.saturating_add(len).min(r.total_bytes);
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let cs = u64::from(r.chunk_size);
        let mut pos = start;
        while pos < end {
            let idx = pos / cs;
            let hash = r.chunks[idx as usize];
            let data = self
                .get_chunk(&hash)?
                .ok_or_else(|| BlobError::NotFound(format!("{id}/{rendition} 分块 {idx}")))?;
            let from = (pos - idx * cs) as usize;
            let to = ((end - idx * cs).min(data.len() as u64)) as usize;
            out.extend_from_slice(&data[from..to]);
            pos = idx * cs + to as u64;
        }
        Ok(out)
    }

    /// Copies a whole rendition into `path` (written atomically).
    pub fn export(&self, id: &ContentId, rendition: &str, path: &Path) -> Result<(), BlobError> {
        let m = self
            .manifest(id)
            .ok_or_else(|| BlobError::NotFound(id.to_string()))?;
        let r = m
            .rendition(rendition)
            .ok_or_else(|| BlobError::NotFound(format!("{id}/{rendition}")))?;
        let data = self.read_range(id, rendition, 0, r.total_bytes)?;
        let mut f = File::create(path).map_err(io(path))?;
        f.write_all(&data).map_err(io(path))?;
        f.sync_all().map_err(io(path))
    }

    /// Records that `ids` are wanted (recommended) as of `now_ms`; eviction removes the items
    /// wanted least recently first.
    pub fn mark_wanted(&self, ids: &[ContentId], now_ms: u64) -> Result<(), BlobError> {
        let snapshot: BTreeMap<String, u64> = {
            let mut st = self.state();
            for id in ids {
                st.wanted.insert(*id, now_ms);
            }
            st.wanted.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(|e| BlobError::Io {
            path: self.inner.dir.join("wanted.json"),
            source: std::io::Error::other(e),
        })?;
        self.write_atomic(&self.inner.dir.join("wanted.json"), &bytes, true)
    }

    /// Makes room for `need` more bytes: while the store would exceed its quota, removes the
    /// item not in `wanted` that was wanted least recently (never wanted counts as oldest),
    /// with its chunks no other item uses. Fails, having evicted what it could, if the room
    /// cannot be made. Returns the items removed.
    pub fn make_room(&self, wanted: &[ContentId], need: u64) -> Result<Vec<ContentId>, BlobError> {
        let keep: BTreeSet<ContentId> = wanted.iter().copied().collect();
        let mut evicted = Vec::new();
        loop {
            let (usage, victim) = {
                let st = self.state();
                let victim = st
                    .manifests
                    .keys()
                    .filter(|id| !keep.contains(id))
                    .min_by_key(|id| (st.wanted.get(id).copied().unwrap_or(0), **id))
                    .copied();
                (st.usage, victim)
            };
            if usage.saturating_add(need) <= self.inner.quota_bytes {
                return Ok(evicted);
            }
            let Some(victim) = victim else {
                return Err(BlobError::QuotaExceeded {
                    need,
                    quota: self.inner.quota_bytes,
                    used: usage,
                });
            };
            self.remove_content(&victim)?;
            tracing::info!(target: "cunyun::_events::blob_evicted", content = %victim);
            evicted.push(victim);
        }
    }

    /// Removes an item's manifest and every chunk of it no other held item uses.
    pub fn remove_content(&self, id: &ContentId) -> Result<(), BlobError> {
        let path = self.manifest_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let orphans: Vec<Hash> = {
            let mut st = self.state();
            let Some(m) = st.manifests.remove(id) else {
                return Ok(());
            };
            st.wanted.remove(id);
            let used: BTreeSet<Hash> = st
                .manifests
                .values()
                .flat_map(|m| m.renditions.iter().flat_map(|r| r.chunks.iter().copied()))
                .collect();
            m.renditions
                .iter()
                .flat_map(|r| r.chunks.iter().copied())
                .filter(|h| !used.contains(h))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        for h in orphans {
            let p = self.chunk_path(&h);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
            let _ = fs::remove_file(self.partial_path(&h));
            self.forget_chunk(&h);
        }
        Ok(())
    }
}
