//! automerge-repo document ids for the node's documents, and finding the [`DocKey`] behind one.
//!
//! automerge-repo names a document by a *document id*: bs58check of 16 bytes (a random UUID v4
//! when a client creates the document), shown to users as the URL `automerge:<id>`. The node's
//! documents are named by [`DocKey`] instead, so each key gets a **stable derived id**: the
//! first 16 bytes of BLAKE3 (`derive_key` with [`DERIVE_CONTEXT`]) over the key's bytes, with
//! the UUID v4 version and variant bits set. Every node derives the same id for the same key,
//! so a household's URL is the same on the village node and the county node.
//!
//! The mapping back ([`DocIndex`]) is an in-memory table of the ids of every document in the
//! node's scope, built from the store's index (no document is loaded) and rebuilt only when a
//! lookup misses and the store has been written since the table was built. Ids that name no
//! stored document (e.g. a document a client created with `repo.create()`) are not accepted:
//! the node answers `doc-unavailable`, and documents are created through the HTTP API.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::DocKey;

use cunyun_platform::store::{DocStore, StoreError};

/// The BLAKE3 `derive_key` context of document ids. Changing it renames every document.
pub const DERIVE_CONTEXT: &str = "cunyun 2026-12 automerge-repo documentId v1";

/// The URL scheme automerge-repo uses.
pub const URL_PREFIX: &str = "automerge:";

/// A 16-byte automerge-repo document id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(pub [u8; 16]);

/// Why a string is not a document id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentIdError {
    /// Not bs58check, or its checksum is wrong.
    #[error("文档编号“{0}”不是有效的 bs58check 编码")]
    NotBs58Check(String),
    /// The decoded bytes are not 16 long.
    #[error("文档编号应为16字节，实际为{0}字节")]
    WrongLength(usize),
}

impl DocumentId {
    /// The stable id of the node's document `key`.
    pub fn for_key(key: &DocKey) -> DocumentId {
        let full = blake3::derive_key(DERIVE_CONTEXT, &key.to_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&full[..16]);
        // Shaped as a UUID v4 (RFC 9562 version and variant bits), like the ids clients make.
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        DocumentId(id)
    }

    /// Parses a bs58check document id, or an `automerge:` URL (its `/path` and `#heads` parts
    /// are ignored).
    pub fn parse(s: &str) -> Result<DocumentId, DocumentIdError> {
        let s = s.strip_prefix(URL_PREFIX).unwrap_or(s);
        let s = s.split(['/', '#']).next().unwrap_or(s);
        // Longer strings cannot be 16 bytes (bs58 of 20 bytes is at most 28 characters).
        if s.len() > 40 {
            return Err(DocumentIdError::NotBs58Check(s.chars().take(40).collect()));
        }
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|_| DocumentIdError::NotBs58Check(s.to_string()))?;
        let id: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| DocumentIdError::WrongLength(bytes.len()))?;
        Ok(DocumentId(id))
    }

    /// The `automerge:<id>` URL.
    pub fn url(&self) -> String {
        format!("{URL_PREFIX}{self}")
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = DocumentIdError;
    fn from_str(s: &str) -> Result<DocumentId, DocumentIdError> {
        DocumentId::parse(s)
    }
}

/// The `automerge:` URL of the node's document `key`.
pub fn url_for_key(key: &DocKey) -> String {
    DocumentId::for_key(key).url()
}

/// Finds the [`DocKey`] behind a document id, among the documents of one scope in a store.
pub struct DocIndex {
    store: DocStore,
    scope: AreaScope,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    keys: HashMap<DocumentId, DocKey>,
    /// The store's write count when the table was last built (`None`: never built).
    built_at: Option<u64>,
}

impl DocIndex {
    /// An index of the documents of `scope` in `store`; built on the first lookup.
    pub fn new(store: DocStore, scope: AreaScope) -> DocIndex {
        DocIndex {
            store,
            scope,
            table: Mutex::new(Table::default()),
        }
    }

    /// The key of the stored document with id `id`, if there is one. A miss rescans the store's
    /// index only if the store has been written since the last scan.
    pub fn lookup(&self, id: &DocumentId) -> Result<Option<DocKey>, StoreError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = table.keys.get(id) {
            return Ok(Some(k.clone()));
        }
        let writes = self.store.writes();
        if table.built_at == Some(writes) {
            return Ok(None);
        }
        let mut keys = HashMap::new();
        for item in self.store.scan(&self.scope) {
            match item {
                Ok((key, _)) => {
                    keys.insert(DocumentId::for_key(&key), key);
                }
                Err(StoreError::Corrupt { key, reason }) => {
                    tracing::warn!(
                        key,
                        reason,
                        "corrupt index entry left out of the document-id index"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(
            documents = keys.len(),
            "automerge-repo document-id index built"
        );
        table.keys = keys;
        table.built_at = Some(writes);
        Ok(table.keys.get(id).cloned())
    }

    /// Records that `key` is stored (so a lookup of its id needs no scan).
    pub fn note(&self, key: &DocKey) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.keys.insert(DocumentId::for_key(key), key.clone());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn derived_ids_are_stable_uuid_shaped_and_distinct() {
        let a = DocKey::parse("510122104201/hh/h000000000001").unwrap();
        let b = a.with_kind(cunyun_protocol::key::Kind::Hp);
        let ida = DocumentId::for_key(&a);
        assert_eq!(ida, DocumentId::for_key(&a.clone()));
        assert_ne!(ida, DocumentId::for_key(&b));
        assert_eq!(ida.0[6] >> 4, 4);
        assert_eq!(ida.0[8] >> 6, 0b10);
        // Pinned: every node and every client must keep deriving this id for this key.
        assert_eq!(
            ida.to_string(),
            DocumentId::parse(&ida.url()).unwrap().to_string()
        );
        assert_eq!(ida.to_string(), "2aQ1R99zh9mqaBT3Qxpj53hdLHxB");
    }

    #[test]
    fn parses_js_ids_and_urls_and_refuses_bad_ones() {
        // A document id as automerge-repo's generateAutomergeUrl makes them.
        let id = DocumentId([7; 16]);
        let s = id.to_string();
        assert_eq!(DocumentId::parse(&s).unwrap(), id);
        assert_eq!(DocumentId::parse(&format!("automerge:{s}")).unwrap(), id);
        assert_eq!(
            DocumentId::parse(&format!("automerge:{s}#abc|def")).unwrap(),
            id
        );
        assert!(matches!(
            DocumentId::parse("not base58 0OIl"),
            Err(DocumentIdError::NotBs58Check(_))
        ));
        // Valid bs58check, wrong length.
        let short = bs58::encode([1u8; 8]).with_check().into_string();
        assert_eq!(
            DocumentId::parse(&short),
            Err(DocumentIdError::WrongLength(8))
        );
        // Checksum broken.
        let mut bad = s.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'2' { b'3' } else { b'2' };
        assert!(DocumentId::parse(std::str::from_utf8(&bad).unwrap()).is_err());
        assert!(DocumentId::parse(&"1".repeat(10_000)).is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(bytes in any::<[u8; 16]>()) {
            let id = DocumentId(bytes);
            prop_assert_eq!(DocumentId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = DocumentId::parse(&s);
        }
    }

    #[test]
    fn index_finds_stored_documents_and_rescans_after_writes() {
        use automerge::transaction::Transactable;
        use cunyun_platform::store::{DocWrite, StoreConfig};
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(dir.path(), StoreConfig::default()).unwrap();
        let put = |k: &DocKey| {
            let mut doc = automerge::AutoCommit::new();
            doc.put(automerge::ROOT, "x", 1).unwrap();
            store
                .commit(vec![DocWrite {
                    key: k.clone(),
                    chunk: doc.save(),
                    heads: doc.get_heads(),
                    updated_at_ms: 1,
                }])
                .unwrap();
        };
        let a = DocKey::parse("510122104201/hh/h1").unwrap();
        let other = DocKey::parse("510122104202/hh/h2").unwrap();
        put(&a);
        put(&other);
        let index = DocIndex::new(store.clone(), AreaScope::parse("510122104201").unwrap());
        assert_eq!(
            index.lookup(&DocumentId::for_key(&a)).unwrap(),
            Some(a.clone())
        );
        // Outside the scope: not found.
        assert_eq!(index.lookup(&DocumentId::for_key(&other)).unwrap(), None);
        assert_eq!(index.lookup(&DocumentId([0; 16])).unwrap(), None);
        // Written after the first scan: found by the rescan.
        let b = DocKey::parse("510122104201/hp/h1").unwrap();
        put(&b);
        assert_eq!(index.lookup(&DocumentId::for_key(&b)).unwrap(), Some(b));
    }
}
