//! [`StoreConfig`]: the document store's tunables, deserialised from the node's TOML config with
//! a default for every field.

use serde::Deserialize;

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

/// Settings of a [`DocStore`](super::DocStore). Every field has a default suited to a
/// Raspberry-Pi-class village node, so an empty `[store]` table is a valid configuration.
///
/// ```toml
/// [store]
/// cache_capacity_bytes = 16777216
/// compact_after_chunks = 8
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Upper bound of the backend's page cache, in bytes (sled `cache_capacity`). This is most
    /// of the store's resident memory; default 16 MiB. sled may hold somewhat more than this in
    /// write buffers and index structures.
    pub cache_capacity_bytes: u64,
    /// Once a document has at least this many chunks, it is rewritten as one `save()` snapshot
    /// (on the writer thread, after the commit that crossed the threshold is acknowledged).
    /// Default 8; `0` or `1` would compact after every write and are treated as 2.
    pub compact_after_chunks: u32,
    /// Largest single chunk accepted by [`commit`](super::DocStore::commit), in bytes;
    /// default 1 MiB. A larger chunk is refused with
    /// [`StoreError::TooLarge`](super::StoreError::TooLarge) and nothing is stored.
    pub max_chunk_bytes: u64,
    /// Largest total size of one document's chunks, in bytes; default 8 MiB. A write that would
    /// grow a document past it is refused and nothing is stored.
    pub max_doc_bytes: u64,
    /// Most document writes applied in one group commit (one atomic batch and one fsync). More
    /// queued writes wait for the next group. Default 4096.
    pub max_group_writes: usize,
    /// When the last handle to the store is dropped, reopen the backend once so that it records
    /// a recovery snapshot covering everything written (sled only writes its snapshot while
    /// opening). Default `true`; see the module docs for why this matters for corruption.
    pub seal_on_close: bool,
    /// Interval of sled's background thread, in milliseconds; `0` turns it off. That thread
    /// writes sled's buffers out and, more importantly, is the only place sled 0.34 cleans
    /// (garbage-collects) log segments, so turning it off makes the file grow without bound.
    /// It never acknowledges anything: commits are acknowledged only after the writer's own
    /// flush and fsync. Default 1000.
    pub sled_background_ms: u64,
    /// Vacuum the store while opening it when its files are larger than this many times an
    /// estimate of the live data (payload plus 256 bytes per document) and larger than
    /// 64 MiB; `0` never does. sled 0.34 never shrinks its file by itself (see
    /// [`DocStore::vacuum`](super::DocStore::vacuum)). Default 4.
    pub vacuum_at_open_ratio: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity_bytes: 16 * MIB,
            compact_after_chunks: 8,
            max_chunk_bytes: MIB,
            max_doc_bytes: 8 * MIB,
            max_group_writes: 4096,
            seal_on_close: true,
            sled_background_ms: 1000,
            vacuum_at_open_ratio: 4,
        }
    }
}

impl StoreConfig {
    /// The compaction threshold actually used: at least 2 chunks.
    pub(crate) fn compact_threshold(&self) -> u32 {
        self.compact_after_chunks.max(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults_and_unknown_fields_are_refused() {
        let cfg: StoreConfig = toml::from_str("").expect("empty config");
        assert_eq!(cfg, StoreConfig::default());
        let cfg: StoreConfig = toml::from_str("compact_after_chunks = 4").expect("one field");
        assert_eq!(cfg.compact_after_chunks, 4);
        assert_eq!(cfg.cache_capacity_bytes, 16 * MIB);
        assert!(toml::from_str::<StoreConfig>("cache_capacity = 1").is_err());
    }
}
