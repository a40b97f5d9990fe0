//! [`verify`]: the structural consistency check behind
//! [`DocStore::verify`](super::DocStore::verify). It walks the index and the chunks and
//! compares them with each other and with the persisted totals. Read-only; run on the writer
//! thread so that no batch lands halfway through the walk.

use std::collections::{BTreeMap, HashMap};

use super::backend::{KvBackend, TreeId};
use super::codec::{decode_entry, split_chunk_key, unseal, Tag};
use super::error::StoreError;
use super::load_totals;
use super::types::VerifyReport;

/// Checks index, chunks and totals against each other.
pub(crate) fn verify(backend: &dyn KvBackend) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut entries = BTreeMap::new();
    for item in backend.range(TreeId::Index, &[], None) {
        match item {
            Ok((doc, value)) => match decode_entry(&doc, &value) {
                Ok(e) => {
                    entries.insert(doc, e);
                }
                Err(r) => report
                    .problems
                    .push(format!("{}: {r}", String::from_utf8_lossy(&doc))),
            },
            Err(e) => report.problems.push(format!("index scan stopped: {e}")),
        }
    }
    // Per document: (chunks, bytes, highest seq).
    let mut seen: HashMap<Vec<u8>, (u32, u64, u32)> = HashMap::new();
    for item in backend.range(TreeId::Docs, &[], None) {
        let (k, v) = match item {
            Ok(kv) => kv,
            Err(e) => {
                report.problems.push(format!("chunk scan stopped: {e}"));
                break;
            }
        };
        let Some((doc, seq)) = split_chunk_key(&k) else {
            report.problems.push(format!(
                "malformed chunk key {:?}",
                String::from_utf8_lossy(&k)
            ));
            continue;
        };
        match unseal(Tag::Chunk, &k, &v) {
            Ok(payload) => {
                report.chunks += 1;
                report.bytes += payload.len() as u64;
                let s = seen.entry(doc.to_vec()).or_insert((0, 0, 0));
                s.0 += 1;
                s.1 += payload.len() as u64;
                s.2 = s.2.max(seq);
            }
            Err(r) => report
                .problems
                .push(format!("{} chunk {seq}: {r}", String::from_utf8_lossy(doc))),
        }
    }
    report.docs = entries.len() as u64;
    for (doc, e) in &entries {
        let name = String::from_utf8_lossy(doc);
        match seen.remove(doc) {
            None => report
                .problems
                .push(format!("{name}: index entry without chunks")),
            Some((chunks, bytes, max_seq)) => {
                if chunks != e.entry.chunks || bytes != e.entry.bytes {
                    report.problems.push(format!(
                        "{name}: index says {} chunks / {} bytes, found {chunks} / {bytes}",
                        e.entry.chunks, e.entry.bytes
                    ));
                }
                if max_seq >= e.next_seq {
                    report.problems.push(format!(
                        "{name}: chunk {max_seq} beyond next seq {}",
                        e.next_seq
                    ));
                }
            }
        }
    }
    let mut orphans: Vec<_> = seen.keys().collect();
    orphans.sort();
    for doc in orphans {
        report.problems.push(format!(
            "{}: chunks without an index entry",
            String::from_utf8_lossy(doc)
        ));
    }
    let totals = load_totals(backend)?;
    if (totals.docs, totals.chunks, totals.bytes) != (report.docs, report.chunks, report.bytes) {
        report.problems.push(format!(
            "persisted totals {} docs / {} chunks / {} bytes, found {} / {} / {}",
            totals.docs, totals.chunks, totals.bytes, report.docs, report.chunks, report.bytes
        ));
    }
    Ok(report)
}
