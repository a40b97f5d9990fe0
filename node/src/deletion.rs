//! Household deletion on request, on the node: writing a tombstone and removing the household's
//! documents in one durable batch ([`Records::delete_household`]), the same removal when a
//! tombstone arrives by sync (`cunyun_protocol::deletion::removed_by`, used by the platform's
//! sync adapter; the guard that refuses a deleted household's documents from then on is
//! `DocStore::deleted`).
//!
//! The tombstone (`<village>/del/<id>`, [`cunyun_protocol::deletion`]) reaches every node the
//! household's documents reached; each removes `hh`, `hp`, `rec` and `fb` of that id from its
//! store (chunks and index entry) and the store vacuums at its next open, so the bytes leave
//! sled's files too.

use automerge::Automerge;
use cunyun_protocol::deletion::{removed_by, DeletionReason, Tombstone};
use cunyun_protocol::fields::Date;
use cunyun_protocol::key::{DocKey, Kind};

use crate::records::{RecordError, Records};
use cunyun_platform::clock::now_ms;
use cunyun_platform::store::{DocStore, DocWrite};

/// Today's date in China Standard Time.
fn today() -> Result<Date, RecordError> {
    cunyun_platform::clock::today_cst()
        .ok_or_else(|| RecordError::BadRequest("本机时钟异常，无法记录删除日期".into()))
}

/// Deletes the household whose profile is `hh` directly in `store` (blocking): writes its
/// tombstone under `account` and removes its documents in one durable batch. The caller holds
/// the record's write lock (or the node is stopped, for the operator's CLI). `NotFound` if the
/// store holds no document of the household.
pub fn delete_in_store(
    store: &DocStore,
    hh: &DocKey,
    account: &str,
    reason: DeletionReason,
) -> Result<Tombstone, RecordError> {
    let id = hh.id();
    let tomb =
        Tombstone::new(*hh.area(), id, today()?, reason, account).map_err(RecordError::Invalid)?;
    let del = hh.with_kind(Kind::Del);
    let removes = removed_by(&del);
    let mut held = false;
    for k in &removes {
        held |= store.entry(k)?.is_some();
    }
    if !held {
        return Err(RecordError::NotFound(id.to_string()));
    }
    let mut doc = Automerge::new().with_author(Some(Records::author(account)));
    let mut tx = doc.transaction();
    tomb.write_to(&mut tx)?;
    tx.commit_with(Records::commit_options(account, "delete household"));
    let write = DocWrite {
        key: del.clone(),
        chunk: doc.save(),
        heads: doc.get_heads(),
        updated_at_ms: now_ms(),
    };
    store.commit_with_removals(vec![write], removes)?;
    tracing::info!(
        target: "cunyun::_events::household_deleted",
        key = %del,
        author = account,
        reason = reason.id(),
        origin = "local"
    );
    Ok(tomb)
}

impl Records {
    /// Deletes household `id` on request: writes its tombstone under `account` and removes its
    /// `hh`, `hp`, `rec` and `fb` documents, in one durable batch. The tombstone then travels
    /// wherever the household's documents went and removes them there.
    pub async fn delete_household(
        &self,
        account: &str,
        id: &str,
        reason: DeletionReason,
    ) -> Result<Tombstone, RecordError> {
        let hh = self
            .find_household(id)?
            .ok_or_else(|| RecordError::NotFound(id.to_string()))?;
        let _guard = self.lock_for(id).lock().await;
        let store = self.store().clone();
        let account_owned = account.to_string();
        let tomb = tokio::task::spawn_blocking(move || {
            delete_in_store(&store, &hh, &account_owned, reason)
        })
        .await
        .map_err(|e| RecordError::BadRequest(format!("删除未完成，请重试（{e}）")))??;
        self.forget_household(id);
        Ok(tomb)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    use super::*;
    use cunyun_platform::host::NodeHost;
    use cunyun_platform::store::StoreConfig;
    use cunyun_platform::sync::adapter::{apply_changes, ApplyError, ReceivePolicy};

    fn key(s: &str) -> DocKey {
        DocKey::parse(s).unwrap()
    }

    /// A one-change document at `k` filled by `fill`, as a store write and as raw changes.
    fn doc(
        k: &DocKey,
        fill: impl FnOnce(&mut automerge::transaction::Transaction<'_>),
    ) -> (DocWrite, Vec<Vec<u8>>) {
        let mut d = Automerge::new();
        let mut tx = d.transaction();
        fill(&mut tx);
        tx.commit();
        let changes = d
            .get_changes(&[])
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        (
            DocWrite {
                key: k.clone(),
                chunk: d.save(),
                heads: d.get_heads(),
                updated_at_ms: 1_700_000_000_000,
            },
            changes,
        )
    }

    #[test]
    fn a_received_tombstone_removes_and_then_refuses_a_malformed_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(&dir.path().join("s"), StoreConfig::default()).unwrap();
        let host = NodeHost::new(store.clone(), dir.path());
        let hh = key("510122104201/hh/h1");
        let hp = key("510122104201/hp/h1");
        let other = key("510122104201/hh/h2");
        let (w_hp, _) = doc(&hp, |tx| {
            tx.put(ROOT, "notes", "x").unwrap();
        });
        let (w_other, _) = doc(&other, |tx| {
            tx.put(ROOT, "group", 1).unwrap();
        });
        store.commit(vec![w_hp, w_other]).unwrap();
        let del = hh.with_kind(Kind::Del);
        // A tombstone naming another household than its key: refused, nothing removed.
        let (_, bad) = doc(&del, |tx| {
            Tombstone::new(
                *del.area(),
                "h9",
                Date::parse("2026-12-01").unwrap(),
                DeletionReason::Mistake,
                "wang",
            )
            .unwrap()
            .write_to(tx)
            .unwrap();
        });
        let applied =
            apply_changes(&host, vec![(del.clone(), bad)], ReceivePolicy::default()).unwrap();
        assert!(matches!(applied.failed[..], [ApplyError::Invalid { .. }]));
        assert!(store.entry(&del).unwrap().is_none());
        assert!(store.entry(&hp).unwrap().is_some());
        // A good tombstone with the household's profile in the same batch: the profile is
        // refused, the private part removed, the other household untouched.
        let (_, good) = doc(&del, |tx| {
            Tombstone::new(
                *del.area(),
                "h1",
                Date::parse("2026-12-01").unwrap(),
                DeletionReason::Withdrawn,
                "wang",
            )
            .unwrap()
            .write_to(tx)
            .unwrap();
        });
        let (_, stale) = doc(&hh, |tx| {
            tx.put(ROOT, "group", 2).unwrap();
        });
        let applied = apply_changes(
            &host,
            vec![(hh.clone(), stale.clone()), (del.clone(), good)],
            ReceivePolicy::default(),
        )
        .unwrap();
        assert!(matches!(applied.failed[..], [ApplyError::Deleted { .. }]));
        assert_eq!(applied.removed, vec![hp.clone()]);
        assert!(store.entry(&del).unwrap().is_some());
        assert!(store.entry(&hp).unwrap().is_none());
        assert!(store.entry(&hh).unwrap().is_none());
        assert!(store.entry(&other).unwrap().is_some());
        assert!(store.deleted(&hp).unwrap());
        assert!(!store.deleted(&other).unwrap());
        // Later, alone: still refused.
        let applied =
            apply_changes(&host, vec![(hh.clone(), stale)], ReceivePolicy::default()).unwrap();
        assert!(matches!(applied.failed[..], [ApplyError::Deleted { .. }]));
        assert!(store.entry(&hh).unwrap().is_none());
    }
}
