//! Household deletion on request, on the node: writing a tombstone and removing the household's
//! documents in one durable batch ([`Records::delete_household`]), the same removal when a
//! tombstone arrives by sync ([`removals_for`], used by `sync::adapter`), and the guard that
//! refuses a deleted household's documents from then on ([`deleted`]).
//!
//! The tombstone (`<village>/del/<id>`, [`cunyun_protocol::deletion`]) reaches every node the
//! household's documents reached; each removes `hh`, `hp`, `rec` and `fb` of that id from its
//! store (chunks and index entry) and the store vacuums at its next open, so the bytes leave
//! sled's files too.

use automerge::Automerge;
use cunyun_protocol::deletion::{removed_by, tombstone_for, DeletionReason, Tombstone};
use cunyun_protocol::fields::Date;
use cunyun_protocol::key::{DocKey, Kind};

use crate::records::{now_ms, RecordError, Records};
use crate::store::{DocStore, DocWrite, StoreError};

/// Whether `key` belongs to a household this store holds a tombstone for.
pub fn deleted(store: &DocStore, key: &DocKey) -> Result<bool, StoreError> {
    match tombstone_for(key) {
        Some(t) => Ok(store.entry(&t)?.is_some()),
        None => Ok(false),
    }
}

/// The documents to remove along with the write of `key`: the household's documents when `key`
/// is a tombstone, nothing otherwise.
pub fn removals_for(key: &DocKey) -> Vec<DocKey> {
    removed_by(key)
}

/// Today's date in China Standard Time.
fn today() -> Result<Date, RecordError> {
    let (y, m, d) = crate::timefmt::cst_date(now_ms());
    u16::try_from(y)
        .ok()
        .and_then(|y| Date::new(y, m as u8, d as u8))
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
    let removes = removals_for(&del);
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
