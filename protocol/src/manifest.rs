//! Content manifests: the hub-signed description of one content item's files.
//!
//! A [`ContentManifest`] names an item by its [`ContentId`], carries the item's metadata as
//! opaque JSON bytes (the content library's `ContentMeta`; at most [`MAX_META_LEN`]) and lists
//! its [`Rendition`]s — the same item as, say, a Markdown article and a PDF, or a video in two
//! sizes. Each rendition is cut into fixed-size chunks; the manifest holds the BLAKE3 hash of
//! every chunk and of the whole file, so a node can verify each chunk on arrival, from any
//! peer, before it stores it.
//!
//! # Content id
//!
//! The content id is BLAKE3 (in `derive_key` mode, context [`CONTENT_ID_CONTEXT`]) of the
//! item's **files**: for each rendition in order, its name, byte length and whole-file hash.
//! It is therefore fixed by the files alone: the hub may re-sign a manifest with corrected
//! metadata (a new title, more tags) and `rec` documents that name the id stay valid; the
//! manifest with the later `issued_at_ms` wins. Changing a file makes a new item. Decoding
//! checks that the id matches the renditions, so an id cannot be pointed at other files.
//!
//! # Signature and trusted keys
//!
//! The hub signs the canonical unsigned body (everything before the signature) with Ed25519
//! (`ed25519-dalek`), prefixed by [`SIGNATURE_CONTEXT`]; verification uses `verify_strict`.
//! The body names the signer by a [`KeyId`] (the first 8 bytes of BLAKE3 of its public key).
//! Nodes do not learn hub keys over the network: the operator puts the hub's public key(s)
//! (64 hex digits each, printed by the hub) into the node config as trusted content keys, and
//! [`TrustedKeys`] holds them. A manifest whose key id is not trusted, or whose signature does
//! not verify under that key, is rejected. Several keys may be trusted at once, so a hub key
//! can be rotated by adding the new key before the hub switches to it.
//!
//! # Encoding (version 1)
//!
//! ```text
//! body      = "CYCM" | u8 version = 1 | content id [32] | issued_at_ms varint | issuer key id [8]
//!             | meta length varint | meta bytes | rendition count u8 | rendition*
//! rendition = name length u8 | name | mime length u8 | mime | total bytes varint
//!             | chunk size varint | whole-file BLAKE3 [32] | chunk BLAKE3 [32] × chunk count
//! manifest  = body | Ed25519 signature [64]
//! ```
//! The chunk count is not stored: it is `ceil(total / chunk size)`. Varints are LEB128 in their
//! shortest form, so a manifest has exactly one encoding. A whole encoded manifest is at most
//! [`MAX_MANIFEST_LEN`] bytes. Decoding never panics and never allocates more than the input.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::codec::{CodecError, Reader, Writer};

/// The encoding version this build writes and reads.
pub const MANIFEST_VERSION: u8 = 1;
/// First four bytes of every encoded manifest.
pub const MAGIC: [u8; 4] = *b"CYCM";
/// Largest encoded manifest.
pub const MAX_MANIFEST_LEN: usize = 1 << 20;
/// Largest metadata (JSON) in a manifest.
pub const MAX_META_LEN: usize = 64 * 1024;
/// Most renditions of one item.
pub const MAX_RENDITIONS: usize = 8;
/// Most chunks of one rendition (4 GiB at the default chunk size).
pub const MAX_CHUNKS: u64 = 16_384;
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size.
pub const MAX_CHUNK_SIZE: u32 = 4 << 20;
/// Longest rendition name.
pub const MAX_NAME_LEN: usize = 32;
/// Longest MIME type.
pub const MAX_MIME_LEN: usize = 100;
/// Bytes of a BLAKE3 hash.
pub const HASH_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of a [`KeyId`].
pub const KEY_ID_LEN: usize = 8;
/// BLAKE3 `derive_key` context of content ids.
pub const CONTENT_ID_CONTEXT: &str = "cunyun 2026-12 content id v1";
/// Prefix of the message the hub signs (followed by the body bytes).
pub const SIGNATURE_CONTEXT: &[u8] = b"cunyun content manifest v1\0";

/// A BLAKE3 hash of a chunk or a file.
pub type Hash = [u8; HASH_LEN];

/// Identifies one content item: BLAKE3 of its files (see the module doc). Shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentId(pub [u8; 32]);

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

impl FromStr for ContentId {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<ContentId, ManifestError> {
        parse_hex32(s)
            .map(ContentId)
            .ok_or_else(|| ManifestError::Invalid(format!("内容编号格式无效：{s}")))
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Names a signing key: the first 8 bytes of BLAKE3 of its public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        let h = blake3::hash(key.as_bytes());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&h.as_bytes()[..KEY_ID_LEN]);
        KeyId(id)
    }
}

/// The hub public keys a node accepts manifests from (from its config).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, VerifyingKey>,
}

impl TrustedKeys {
    /// No trusted key: every manifest is rejected.
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Trusts `key`.
    pub fn add(&mut self, key: VerifyingKey) {
        self.keys.insert(KeyId::of(&key), key);
    }

    /// Parses public keys written as 64 hex digits each (the config form).
    pub fn from_hex<S: AsRef<str>>(keys: &[S]) -> Result<TrustedKeys, ManifestError> {
        let mut out = TrustedKeys::new();
        for k in keys {
            let k = k.as_ref();
            let bytes = parse_hex32(k).ok_or_else(|| {
                ManifestError::Invalid(format!("公钥格式无效（应为64位十六进制）：{k}"))
            })?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| ManifestError::Invalid(format!("不是有效的 Ed25519 公钥：{k}")))?;
            out.add(key);
        }
        Ok(out)
    }

    /// The key with id `id`, if trusted.
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A public key as 64 hex digits (the config form of a trusted key).
pub fn key_to_hex(key: &VerifyingKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// One file of an item, cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// Short name, unique within the item: `[a-z0-9._-]`, 1 to 32 bytes (e.g. `article.md`).
    pub name: String,
    /// MIME type, printable ASCII without spaces, 1 to 100 bytes.
    pub mime: String,
    /// File length in bytes.
    pub total_bytes: u64,
    /// Chunk length (a power of two); the last chunk may be shorter.
    pub chunk_size: u32,
    /// BLAKE3 of each chunk, in order.
    pub chunks: Vec<Hash>,
    /// BLAKE3 of the whole file.
    pub file_hash: Hash,
}

/// Number of chunks of a file of `total` bytes in chunks of `chunk_size`.
pub fn chunk_count(total: u64, chunk_size: u32) -> u64 {
    total.div_ceil(u64::from(chunk_size.max(1)))
}

impl Rendition {
    /// Byte offset of chunk `index` in the file.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Length of chunk `index` (0 if out of range).
    pub fn chunk_len(&self, index: u32) -> u32 {
        let start = self.chunk_offset(index);
        if start >= self.total_bytes {
            return 0;
        }
        // At most chunk_size, so it fits in u32.
        (self.total_bytes - start).min(u64::from(self.chunk_size)) as u32
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let bad = |m: String| Err(ManifestError::Invalid(m));
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return bad(format!("文件名无效：{:?}", self.name));
        }
        if self.mime.is_empty()
            || self.mime.len() > MAX_MIME_LEN
            || !self.mime.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad(format!("文件类型无效：{:?}", self.mime));
        }
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
        {
            return bad(format!("分块大小无效：{}", self.chunk_size));
        }
        let n = chunk_count(self.total_bytes, self.chunk_size);
        if n > MAX_CHUNKS {
            return bad(format!("文件过大：{} 字节", self.total_bytes));
        }
        if self.chunks.len() as u64 != n {
            return bad(format!(
                "分块数量 {} 与文件长度不符（应为 {n}）",
                self.chunks.len()
            ));
        }
        Ok(())
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes are not a well-formed manifest.
    #[error("内容清单格式错误：{0}")]
    Malformed(String),
    /// A field breaks a rule (limits, names, chunk counts).
    #[error("内容清单无效：{0}")]
    Invalid(String),
    /// An encoding version this build does not read.
    #[error("不支持的内容清单版本 {0}")]
    Version(u8),
    /// The content id does not match the files the manifest lists.
    #[error("内容编号与文件不符")]
    IdMismatch,
    /// Signed by a key this node does not trust.
    #[error("内容清单的签名密钥不受信任")]
    UnknownKey,
    /// The signature does not verify.
    #[error("内容清单签名无效")]
    BadSignature,
}

impl From<CodecError> for ManifestError {
    fn from(e: CodecError) -> ManifestError {
        ManifestError::Malformed(e.to_string())
    }
}

/// A signed content manifest (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentManifest {
    /// The item's id, derived from its files.
    pub content_id: ContentId,
    /// Metadata: a JSON object, opaque here (the content library's `ContentMeta`).
    pub meta: Vec<u8>,
    /// The item's files.
    pub renditions: Vec<Rendition>,
    /// When the hub signed it, ms since the epoch; a later manifest for the same id wins.
    pub issued_at_ms: u64,
    /// The signing key.
    pub issuer: KeyId,
    /// Ed25519 signature over [`SIGNATURE_CONTEXT`] followed by the body.
    pub signature: [u8; SIGNATURE_LEN],
}

/// The content id of an item with these renditions.
pub fn content_id_of(renditions: &[Rendition]) -> ContentId {
    let mut h = blake3::Hasher::new_derive_key(CONTENT_ID_CONTEXT);
    h.update(&[renditions.len() as u8]);
    for r in renditions {
        h.update(&[r.name.len() as u8]);
        h.update(r.name.as_bytes());
        h.update(&r.total_bytes.to_le_bytes());
        h.update(&r.file_hash);
    }
    ContentId(*h.finalize().as_bytes())
}

fn validate_parts(meta: &[u8], renditions: &[Rendition]) -> Result<(), ManifestError> {
    if meta.len() > MAX_META_LEN {
        return Err(ManifestError::Invalid(format!(
            "元数据过大：{} 字节（上限 {MAX_META_LEN}）",
            meta.len()
        )));
    }
    match serde_json::from_slice::<serde_json::Value>(meta) {
        Ok(serde_json::Value::Object(_)) => {}
        _ => return Err(ManifestError::Invalid("元数据必须是 JSON 对象".into())),
    }
    if renditions.is_empty() || renditions.len() > MAX_RENDITIONS {
        return Err(ManifestError::Invalid(format!(
            "文件数量 {} 无效（1 到 {MAX_RENDITIONS}）",
            renditions.len()
        )));
    }
    for (i, r) in renditions.iter().enumerate() {
        r.validate()?;
        if renditions[..i].iter().any(|o| o.name == r.name) {
            return Err(ManifestError::Invalid(format!("文件名重复：{}", r.name)));
        }
    }
    Ok(())
}

impl ContentManifest {
    /// Builds and signs a manifest. Fails on anything [`ContentManifest::decode`] would refuse.
    pub fn sign(
        meta: Vec<u8>,
        renditions: Vec<Rendition>,
        issued_at_ms: u64,
        key: &SigningKey,
    ) -> Result<ContentManifest, ManifestError> {
        validate_parts(&meta, &renditions)?;
        let mut m = ContentManifest {
            content_id: content_id_of(&renditions),
            meta,
            renditions,
            issued_at_ms,
            issuer: KeyId::of(&key.verifying_key()),
            signature: [0u8; SIGNATURE_LEN],
        };
        let body = m.body_bytes();
        if body.len() + SIGNATURE_LEN > MAX_MANIFEST_LEN {
            return Err(ManifestError::Invalid(format!(
                "内容清单过大：{} 字节",
                body.len() + SIGNATURE_LEN
            )));
        }
        m.signature = key.sign(&signed_message(&body)).to_bytes();
        Ok(m)
    }

    /// The canonical unsigned body (what the signature covers, after the context prefix).
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&MAGIC);
        w.u8(MANIFEST_VERSION);
        w.bytes(&self.content_id.0);
        w.varint(self.issued_at_ms);
        w.bytes(&self.issuer.0);
        w.varint(self.meta.len() as u64);
        w.bytes(&self.meta);
        w.u8(self.renditions.len() as u8);
        for r in &self.renditions {
            w.u8(r.name.len() as u8);
            w.bytes(r.name.as_bytes());
            w.u8(r.mime.len() as u8);
            w.bytes(r.mime.as_bytes());
            w.varint(r.total_bytes);
            w.varint(u64::from(r.chunk_size));
            w.bytes(&r.file_hash);
            for c in &r.chunks {
                w.bytes(c);
            }
        }
        w.buf
    }

    /// The encoded manifest: body then signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body_bytes();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a manifest and checks its structure and content id, **not** its signature
    /// (use [`ContentManifest::decode_verified`] for anything received).
    pub fn decode(bytes: &[u8]) -> Result<ContentManifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::Malformed(format!(
                "{} 字节，超过上限",
                bytes.len()
            )));
        }
        let mut r = Reader::new(bytes);
        if r.take(4, "magic")? != MAGIC {
            return Err(ManifestError::Malformed("不是内容清单".into()));
        }
        let version = r.u8("version")?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Version(version));
        }
        let content_id = ContentId(r.array("content id")?);
        let issued_at_ms = r.varint("issued at")?;
        let issuer = KeyId(r.array("issuer")?);
        let meta_len = r.varint("meta length")?;
        if meta_len > MAX_META_LEN as u64 {
            return Err(ManifestError::Invalid(format!(
                "元数据过大：{meta_len} 字节"
            )));
        }
        let meta = r.take(meta_len as usize, "meta")?.to_vec();
        let count = usize::from(r.u8("rendition count")?);
        if count == 0 || count > MAX_RENDITIONS {
            return Err(ManifestError::Invalid(format!("文件数量 {count} 无效")));
        }
        let mut renditions = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = usize::from(r.u8("name length")?);
            let name = utf8(r.take(name_len, "name")?)?;
            let mime_len = usize::from(r.u8("mime length")?);
            let mime = utf8(r.take(mime_len, "mime")?)?;
            let total_bytes = r.varint("total bytes")?;
            let chunk_size = r.varint("chunk size")?;
            let chunk_size = u32::try_from(chunk_size)
                .ok()
                .filter(|c| c.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(c))
                .ok_or_else(|| ManifestError::Invalid(format!("分块大小无效：{chunk_size}")))?;
            let file_hash = r.array("file hash")?;
            let n = chunk_count(total_bytes, chunk_size);
            if n > MAX_CHUNKS || n.saturating_mul(HASH_LEN as u64) > r.buf.len() as u64 {
                return Err(ManifestError::Malformed("分块列表被截断或过长".into()));
            }
            let mut chunks = Vec::with_capacity(n as usize);
            for _ in 0..n {
                chunks.push(r.array("chunk hash")?);
            }
            renditions.push(Rendition {
                name,
                mime,
                total_bytes,
                chunk_size,
                chunks,
                file_hash,
            });
        }
        let signature = r.array("signature")?;
        if !r.is_empty() {
            return Err(ManifestError::Malformed(format!(
                "末尾有多余的 {} 字节",
                r.buf.len()
            )));
        }
        validate_parts(&meta, &renditions)?;
        if content_id_of(&renditions) != content_id {
            return Err(ManifestError::IdMismatch);
        }
        Ok(ContentManifest {
            content_id,
            meta,
            renditions,
            issued_at_ms,
            issuer,
            signature,
        })
    }

    /// Checks the signature against the trusted keys.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<(), ManifestError> {
        let key = trusted.get(&self.issuer).ok_or(ManifestError::UnknownKey)?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&signed_message(&self.body_bytes()), &sig)
            .map_err(|_| ManifestError::BadSignature)
    }

    /// Decodes and verifies a manifest: what every received manifest goes through.
    pub fn decode_verified(
        bytes: &[u8],
        trusted: &TrustedKeys,
    ) -> Result<ContentManifest, ManifestError> {
        let m = ContentManifest::decode(bytes)?;
        m.verify(trusted)?;
        Ok(m)
    }

    /// The rendition named `name`.
    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.name == name)
    }

    /// Total bytes of all renditions.
    pub fn total_bytes(&self) -> u64 {
        self.renditions.iter().map(|r| r.total_bytes).sum()
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(body);
    m
}

fn utf8(b: &[u8]) -> Result<String, ManifestError> {
    String::from_utf8(b.to_vec()).map_err(|_| ManifestError::Malformed("文本不是 UTF-8".into()))
}

/// Describes `data` as a rendition: cuts it into `chunk_size` chunks and hashes each and the
/// whole. For in-memory data (tests, small files); the node's blob store chunks files itself.
pub fn rendition_of(name: &str, mime: &str, data: &[u8], chunk_size: u32) -> Rendition {
    Rendition {
        name: name.into(),
        mime: mime.into(),
        total_bytes: data.len() as u64,
        chunk_size,
        chunks: data
            .chunks(chunk_size.max(1) as usize)
            .map(|c| *blake3::hash(c).as_bytes())
            .collect(),
        file_hash: *blake3::hash(data).as_bytes(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trusted(k: &SigningKey) -> TrustedKeys {
        let mut t = TrustedKeys::new();
        t.add(k.verifying_key());
        t
    }

    fn sample() -> ContentManifest {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        ContentManifest::sign(
            br#"{"title":"\u751f\u732a\u975e\u6d32\u732a\u761f\u9632\u63a7"}"#.to_vec(),
            vec![
                rendition_of("article.md", "text/markdown", &data, 4096),
                rendition_of("poster.png", "image/png", &data[..5000], 4096),
            ],
            1_764_000_000_000,
            &key(1),
        )
        .unwrap()
    }

    #[test]
    fn signed_manifest_round_trips_and_verifies() {
        let m = sample();
        let bytes = m.encode();
        let back = ContentManifest::decode_verified(&bytes, &trusted(&key(1))).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.renditions[0].chunks.len(), 3);
        assert_eq!(back.renditions[0].chunk_len(2), 10_000 - 8192);
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let m = sample();
        let bytes = m.encode();
        let t = trusted(&key(1));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                ContentManifest::decode_verified(&bad, &t).is_err(),
                "flipped byte {i} accepted"
            );
        }
    }

    #[test]
    fn unknown_key_and_forged_signature_are_rejected() {
        let m = sample();
        assert_eq!(m.verify(&trusted(&key(2))), Err(ManifestError::UnknownKey));
        assert_eq!(
            m.verify(&TrustedKeys::new()),
            Err(ManifestError::UnknownKey)
        );
        // Signed by another key but claiming the trusted key's id.
        let mut forged =
            ContentManifest::sign(m.meta.clone(), m.renditions.clone(), 1, &key(2)).unwrap();
        forged.issuer = m.issuer;
        assert_eq!(
            forged.verify(&trusted(&key(1))),
            Err(ManifestError::BadSignature)
        );
    }

    #[test]
    fn content_id_ignores_metadata_and_follows_files() {
        let m = sample();
        let re = ContentManifest::sign(
            br#"{"title":"x"}"#.to_vec(),
            m.renditions.clone(),
            2,
            &key(1),
        )
        .unwrap();
        assert_eq!(re.content_id, m.content_id);
        let mut r = m.renditions.clone();
        r[1] = rendition_of("poster.png", "image/png", b"other", 4096);
        let other = ContentManifest::sign(m.meta.clone(), r, 2, &key(1)).unwrap();
        assert_ne!(other.content_id, m.content_id);
    }

    #[test]
    fn invalid_parts_are_refused_when_signing() {
        let r = rendition_of("a.md", "text/markdown", b"hello", 4096);
        let k = key(1);
        assert!(ContentManifest::sign(b"[1]".to_vec(), vec![r.clone()], 0, &k).is_err());
        assert!(ContentManifest::sign(b"{}".to_vec(), vec![], 0, &k).is_err());
        assert!(ContentManifest::sign(b"{}".to_vec(), vec![r.clone(), r.clone()], 0, &k).is_err());
        let mut bad = r.clone();
        bad.chunk_size = 5000;
        assert!(ContentManifest::sign(b"{}".to_vec(), vec![bad], 0, &k).is_err());
        let mut bad = r;
        bad.name = "Bad Name".into();
        assert!(ContentManifest::sign(b"{}".to_vec(), vec![bad], 0, &k).is_err());
    }

    #[test]
    fn trusted_keys_parse_from_hex() {
        let k = key(3).verifying_key();
        let t = TrustedKeys::from_hex(&[key_to_hex(&k)]).unwrap();
        assert!(t.get(&KeyId::of(&k)).is_some());
        assert!(TrustedKeys::from_hex(&["zz"]).is_err());
        assert_eq!(
            key_to_hex(&k).parse::<ContentId>().map(|c| c.0),
            Ok(*k.as_bytes())
        );
    }

    fn arb_rendition(i: usize) -> impl Strategy<Value = Rendition> {
        (
            proptest::collection::vec(any::<u8>(), 0..20_000),
            prop_oneof![Just(4096u32), Just(8192), Just(65_536)],
            "[a-z]{1,8}/[a-z0-9.+-]{1,20}",
        )
            .prop_map(move |(data, cs, mime)| rendition_of(&format!("r{i}.bin"), &mime, &data, cs))
    }

    proptest! {
        #[test]
        fn round_trip(
            title in "\\PC{0,200}",
            n in 1usize..4,
            at in any::<u64>(),
            seed in any::<u8>(),
            rs in proptest::collection::vec(arb_rendition(0), 3),
        ) {
            let renditions: Vec<Rendition> = rs
                .into_iter()
                .take(n)
                .enumerate()
                .map(|(i, mut r)| { r.name = format!("r{i}.bin"); r })
                .collect();
            let meta = serde_json::to_vec(&serde_json::json!({ "title": title })).unwrap();
            let k = key(seed);
            let m = ContentManifest::sign(meta, renditions, at, &k).unwrap();
            let bytes = m.encode();
            let back = ContentManifest::decode_verified(&bytes, &trusted(&k)).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.encode(), bytes);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = ContentManifest::decode(&bytes);
        }

        #[test]
        fn truncation_is_an_error(cut in 0usize..10_000) {
            let bytes = sample().encode();
            let cut = cut % bytes.len();
            prop_assert!(ContentManifest::decode(&bytes[..cut]).is_err());
        }
    }
}
