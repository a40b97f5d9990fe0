//! Vacuum: rewriting a closed store's files compactly, and finishing a vacuum a crash cut short.
//!
//! sled 0.34 never gives disk space back: its file only shrinks when the last segments become
//! free, so after bursts of writes and compactions it stays at its high-water mark (about six
//! times the live data after building a 50,000-household store in one go). A vacuum copies
//! every key of every tree, in key order and in small batches, into a fresh store next to the
//! old one, makes it durable, and swaps the directories. Values are copied byte for byte, so
//! checksums, quarantine records and damaged documents' raw bytes carry over unchanged.
//!
//! Crash safety: the copy is built in `<dir>.vacuum-new` and marked complete (a file written
//! and fsynced after the copy is durable) before anything else happens. Then `<dir>` is
//! renamed to `<dir>.vacuum-old` and the new copy to `<dir>`, and the old copy is deleted.
//! [`finish_interrupted`], run before every open, completes or rolls back whichever step a
//! crash interrupted: an incomplete new copy is deleted; a complete one whose swap was cut
//! short is moved into place; a leftover old copy is deleted once `<dir>` exists.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::backend::{KvBackend, TreeId, WriteBatch};
use super::codec::META_VACUUM_DUE;
use super::config::StoreConfig;
use super::error::StoreError;
use super::sled_backend::SledBackend;

/// Written into the new copy once it is complete and durable.
const COMPLETE_MARKER: &str = "cunyun-vacuum-complete";
/// Files of the store directory that are not sled's and move with the store.
const CARRIED_FILES: [&str; 2] = ["cunyun-log-repairs.txt", "cunyun-log-repaired"];
/// Keys per batch while copying (small batches keep sled's own write amplification low).
const BATCH: usize = 1000;

/// What a vacuum did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VacuumStats {
    /// Size of the store directory before.
    pub bytes_before: u64,
    /// Size after.
    pub bytes_after: u64,
    /// Keys copied, all trees together.
    pub keys: u64,
    /// Time taken, in milliseconds.
    pub millis: u64,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

fn io(context: &str, dir: &Path) -> impl Fn(std::io::Error) -> StoreError {
    let context = format!("{context} ({})", dir.display());
    move |source| StoreError::Io {
        context: context.clone(),
        source,
    }
}

fn sync_parent(dir: &Path) -> Result<(), StoreError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing the directory holding the store", parent))?;
    }
    Ok(())
}

/// Total size of the regular files below `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Completes or rolls back a vacuum that a crash interrupted (see the module docs).
pub(crate) fn finish_interrupted(dir: &Path) -> Result<(), StoreError> {
    let new = sibling(dir, ".vacuum-new");
    let old = sibling(dir, ".vacuum-old");
    if new.exists() {
        if !dir.exists() && new.join(COMPLETE_MARKER).exists() {
            tracing::warn!(path = %dir.display(), "finishing a vacuum interrupted during the swap");
            std::fs::rename(&new, dir).map_err(io("moving the vacuumed copy into place", dir))?;
            sync_parent(dir)?;
        } else {
            tracing::warn!(path = %new.display(), "removing an incomplete vacuum copy");
            std::fs::remove_dir_all(&new)
                .map_err(io("removing an incomplete vacuum copy", &new))?;
        }
    }
    if old.exists() && dir.exists() {
        std::fs::remove_dir_all(&old).map_err(io("removing the pre-vacuum copy", &old))?;
    }
    let marker = dir.join(COMPLETE_MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(io("removing the vacuum marker", dir))?;
    }
    Ok(())
}

/// Copies every tree of `from` into `to`, in key order, except the `vacuum_due` flag (the copy
/// is the vacuum it asked for).
fn copy_trees(from: &dyn KvBackend, to: &dyn KvBackend, dir: &Path) -> Result<u64, StoreError> {
    let mut keys = 0u64;
    for tree in TreeId::ALL {
        let mut batch = WriteBatch::new();
        for item in from.range(tree, &[], None) {
            let (k, v) = item.map_err(|e| {
                StoreError::from_backend(
                    e,
                    &dir.display().to_string(),
                    "reading the store to vacuum it",
                )
            })?;
            if tree == TreeId::Meta && k == META_VACUUM_DUE {
                continue;
            }
            batch.put(tree, k, v);
            keys += 1;
            if batch.len() >= BATCH {
                to.apply(&std::mem::take(&mut batch)).map_err(|e| {
                    StoreError::from_backend(e, "<vacuum copy>", "writing the vacuum copy")
                })?;
            }
        }
        to.apply(&batch)
            .map_err(|e| StoreError::from_backend(e, "<vacuum copy>", "writing the vacuum copy"))?;
    }
    to.sync()
        .map_err(|e| StoreError::from_backend(e, "<vacuum copy>", "syncing the vacuum copy"))?;
    Ok(keys)
}

/// Rewrites the closed store in `dir` compactly (see the module docs). Fails, changing
/// nothing, if the store is open elsewhere or a page cannot be read.
pub(crate) fn vacuum(dir: &Path, cfg: &StoreConfig) -> Result<VacuumStats, StoreError> {
    let started = Instant::now();
    finish_interrupted(dir)?;
    let bytes_before = dir_size(dir);
    let new = sibling(dir, ".vacuum-new");
    let quiet = StoreConfig {
        sled_background_ms: 0,
        seal_on_close: true,
        ..cfg.clone()
    };
    let source = StoreConfig {
        seal_on_close: false,
        ..quiet.clone()
    };
    let open_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: super::backend::BackendError| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    let keys = {
        let from = SledBackend::open(dir, &source).map_err(open_err(dir))?;
        let to = SledBackend::open(&new, &quiet).map_err(open_err(&new))?;
        copy_trees(&from, &to, dir)?
    };
    for name in CARRIED_FILES {
        let src = dir.join(name);
        if src.exists() {
            std::fs::copy(&src, new.join(name)).map_err(io("copying store files", dir))?;
        }
    }
    std::fs::File::create(new.join(COMPLETE_MARKER))
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::File::open(&new))
        .and_then(|d| d.sync_all())
        .map_err(io("marking the vacuum copy complete", &new))?;
    let old = sibling(dir, ".vacuum-old");
    std::fs::rename(dir, &old).map_err(io("moving the old store aside", dir))?;
    std::fs::rename(&new, dir).map_err(io("moving the vacuumed copy into place", dir))?;
    sync_parent(dir)?;
    finish_interrupted(dir)?;
    let stats = VacuumStats {
        bytes_before,
        bytes_after: dir_size(dir),
        keys,
        millis: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        path = %dir.display(),
        bytes_before = stats.bytes_before,
        bytes_after = stats.bytes_after,
        keys = stats.keys,
        millis = stats.millis,
        "store vacuumed"
    );
    Ok(stats)
}
