//! Local needs (科技所需) as the hub sees them, and the operator's status changes.
//!
//! This module owns two operations over the province's `need` documents (synced up from the
//! villages and counties): [`list`], each need with its `match` document's suggested experts,
//! filtered by area and status; and [`set_status`], the hub operator moving a need along
//! [`NeedStatus::can_become`] (typically matched → 「服务中」). The hub writes only the need's
//! `status` (and `updated`) field under the operator's Automerge author; the change syncs down to
//! the village like any other, and what the village changes (resolved, a satisfaction rating)
//! syncs up and shows in the next [`list`].

use std::collections::BTreeMap;

use crate::store::{HubStore, HubStoreError, HubWrite};
use automerge::Author;
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::expert::{Expert, NeedMatch};
use cunyun_protocol::fields::{Date, FieldError, FieldErrors};
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::need::{LocalNeed, NeedStatus};
use serde::Serialize;

/// Which needs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeedFilter {
    /// Only needs whose area is inside this prefix.
    pub area: Option<AreaScope>,
    /// Only needs in this status.
    pub status: Option<NeedStatus>,
}

/// One suggested expert, with the expert's public name for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuggestedExpert {
    /// The expert's id.
    pub expert_id: String,
    /// Name (empty when the expert document is not held).
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Score in thousandths.
    pub score: u32,
    /// Why, in Chinese.
    pub reason: String,
}

/// One need with its suggestions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeedRow {
    /// The need's id (its document id).
    pub id: String,
    /// The need.
    pub need: LocalNeed,
    /// Suggested experts, best first.
    pub suggestions: Vec<SuggestedExpert>,
    /// When the document last changed here, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

/// Why a need operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NeedError {
    /// No such need.
    #[error("没有这条需求（{0}）")]
    NotFound(String),
    /// The change is not allowed (every problem, in Chinese).
    #[error("需求状态不能这样修改")]
    Invalid(FieldErrors),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] HubStoreError),
    /// A document could not be read or written.
    #[error("需求记录读写失败（{key}）：{message}")]
    Document {
        /// The document.
        key: String,
        /// What went wrong.
        message: String,
    },
}

use cunyun_platform::clock::now_ms;

/// Every need inside `scope` that passes `filter`, by key, with suggestions named from the
/// expert documents keyed at `province`.
pub fn list(
    store: &dyn HubStore,
    scope: &AreaScope,
    province: AreaCode,
    filter: &NeedFilter,
) -> Result<Vec<NeedRow>, NeedError> {
    let mut experts: BTreeMap<String, Expert> = BTreeMap::new();
    let mut out = Vec::new();
    let range = filter.area.unwrap_or(*scope);
    for (key, entry) in store.entries(&range, Some(Kind::Need))? {
        let Some(doc) = store.get(&key)? else {
            continue;
        };
        let need = match LocalNeed::read_from(&doc) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "need unreadable; not listed");
                continue;
            }
        };
        if filter.status.is_some_and(|s| s != need.status) {
            continue;
        }
        let mut suggestions = Vec::new();
        if let Some(m) = store
            .get(&key.with_kind(Kind::Match))?
            .and_then(|d| NeedMatch::read_from(&d).ok())
        {
            let mut ranked: Vec<_> = m.suggestions.into_iter().collect();
            ranked.sort_by(|a, b| b.1.score.cmp(&a.1.score).then(a.0.cmp(&b.0)));
            for (expert_id, s) in ranked {
                if !experts.contains_key(&expert_id) {
                    if let Ok(k) = DocKey::new(province, Kind::Expert, expert_id.as_str()) {
                        if let Some(e) = store.get(&k)?.and_then(|d| Expert::read_from(&d).ok()) {
                            experts.insert(expert_id.clone(), e);
                        }
                    }
                }
                let e = experts.get(&expert_id);
                suggestions.push(SuggestedExpert {
                    name: e.map(|e| e.name.clone()).unwrap_or_default(),
                    organisation: e.map(|e| e.organisation.clone()).unwrap_or_default(),
                    expert_id,
                    score: s.score,
                    reason: s.reason,
                });
            }
        }
        out.push(NeedRow {
            id: key.id().to_string(),
            need,
            suggestions,
            updated_at_ms: entry.updated_at_ms,
        });
    }
    Ok(out)
}

/// Moves the need `<area>/need/<id>` to `status` as `author` (durable when it returns); a
/// change [`NeedStatus::can_become`] does not allow changes nothing. `today` stamps `updated`
/// (never before the need was raised).
pub fn set_status(
    store: &dyn HubStore,
    area: &str,
    id: &str,
    status: NeedStatus,
    author: &str,
    today: Date,
) -> Result<NeedRow, NeedError> {
    let not_found = || NeedError::NotFound(format!("{area}/need/{id}"));
    let area_code = AreaCode::parse(area).map_err(|_| not_found())?;
    let key = DocKey::new(area_code, Kind::Need, id).map_err(|_| not_found())?;
    let mut doc = store.get(&key)?.ok_or_else(not_found)?;
    let doc_err = |message: String| NeedError::Document {
        key: key.to_string(),
        message,
    };
    let need = LocalNeed::read_from(&doc).map_err(|e| doc_err(e.to_string()))?;
    let mut next = need.clone();
    next.status = status;
    if status != need.status {
        next.updated = Some(need.created.map_or(today, |c| c.max(today)));
    }
    need.check_transition(&next).map_err(NeedError::Invalid)?;
    if let Err(errs) = next.validate() {
        // e.g. a satisfaction rating on a need that is no longer resolved.
        let mut v = errs.0;
        v.push(FieldError::new(
            "status",
            "inconsistent",
            format!("需求不能改为“{}”", status.zh_name()),
        ));
        return Err(NeedError::Invalid(FieldErrors(v)));
    }
    let heads = doc.get_heads();
    doc.set_author(Some(Author::from(author.as_bytes().to_vec())));
    let mut tx = doc.transaction();
    next.write_to(&mut tx).map_err(|e| doc_err(e.to_string()))?;
    tx.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_message(format!("need status {} by {author}", status.id()))
            .with_time((now_ms() / 1000) as i64),
    );
    let now = now_ms();
    if doc.get_heads() != heads {
        store.apply(
            vec![HubWrite {
                key: key.clone(),
                chunk: doc.save_after(&heads),
            }],
            Vec::new(),
        )?;
        tracing::info!(target: "cunyun::_events::need_status", key = %key, author, from = need.status.id(), to = status.id());
    }
    Ok(NeedRow {
        id: id.to_string(),
        need: next,
        suggestions: Vec::new(),
        updated_at_ms: now,
    })
}
