//! Household and local-need records: the operations behind the HTTP API.
//!
//! A household is two documents with the same id: the profile (`<village>/hh/<id>`) and the
//! private part (`<village>/hp/<id>`). They are created and updated together and committed in
//! one durable batch, so a cadre never sees one without the other.
//!
//! Every change is made under the acting account's automerge [`Author`] and stamped with the
//! time, so who changed what survives sync. Writes to one document are serialised by a striped
//! lock: the store's heads digest must describe the document after *all* concurrent edits.
//!
//! Listing keeps a small in-memory summary per household, keyed by the index's heads digest: a
//! summary is rebuilt only when its document changed, so listing a village of 1,000 households
//! loads only what changed since the last listing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Author, Automerge, ChangeHash};
use cunyun_protocol::area::{AreaCode, AreaScope, Level};
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::fields::{Date, FieldError, FieldErrors};
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::need::LocalNeed;
use cunyun_protocol::triggers::derive_tags;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use cunyun_platform::clock::now_ms;
use cunyun_platform::store::{DocStore, DocWrite, StoreError};

/// Why a record operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The input has field errors; nothing was stored.
    #[error("输入有误，共{}处", .0.0.len())]
    Invalid(FieldErrors),
    /// The request body is not shaped as expected (e.g. not a JSON object).
    #[error("{0}")]
    BadRequest(String),
    /// No record with that id in this node's scope.
    #[error("未找到编号为 {0} 的记录")]
    NotFound(String),
    /// The stored document could not be read back as a record (damaged or of a newer schema).
    #[error("记录 {key} 无法读取: {reason}")]
    Unreadable {
        /// Document key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed or found the document corrupt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the document view failed.
    #[error(transparent)]
    View(#[from] cunyun_protocol::fields::ViewError),
}

/// What the API returns for one household: both documents plus what follows from them.
#[derive(Debug, Clone, Serialize)]
pub struct HouseholdRecord {
    /// The household's pseudonymous id.
    pub id: String,
    /// Key of the profile document.
    pub profile_key: DocKey,
    /// Key of the private document.
    pub private_key: DocKey,
    /// The profile (`hh`).
    pub profile: HouseholdProfile,
    /// The private part (`hp`); stays in the county.
    pub private: HouseholdPrivate,
    /// The profile document's automerge-repo URL (`automerge:<documentId>`), for syncing it
    /// over `/automerge` with a stock `@automerge/automerge-repo` client.
    pub automerge_url: String,
    /// The private document's automerge-repo URL.
    pub private_automerge_url: String,
    /// Tags derived from the profile, each with its reason, for the cadre to check.
    pub derived_tags: Vec<DerivedTag>,
    /// Heads of the profile document (hex), for edits made offline against this state.
    pub heads: Vec<String>,
    /// Heads of the private document (hex), likewise.
    pub private_heads: Vec<String>,
    /// Last update, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

/// A derived tag with the reason it applies.
#[derive(Debug, Clone, Serialize)]
pub struct DerivedTag {
    /// Tag id, e.g. `liv.asf`.
    pub tag: String,
    /// Tag name in Chinese.
    pub name: String,
    /// Why it applies, in Chinese.
    pub reason: String,
}

/// One row of the household list.
#[derive(Debug, Clone, Serialize)]
pub struct HouseholdSummary {
    /// Pseudonymous id.
    pub id: String,
    /// Village code.
    pub village: AreaCode,
    /// 村民小组 number.
    pub group: u32,
    /// Head of household's name (private; shown to the cadre only).
    pub head_name: String,
    /// Roster number (private).
    pub roster_no: String,
    /// Residents.
    pub residents: u32,
    /// Derived and stated tag ids, sorted.
    pub tags: Vec<String>,
    /// Last update, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

/// Filters for listing households. Every set filter must match.
#[derive(Debug, Clone, Default)]
pub struct HouseholdFilter {
    /// Only this 村民小组.
    pub group: Option<u32>,
    /// Only households with this tag, derived or stated.
    pub tag: Option<String>,
    /// Only households updated at or after this time (ms since the epoch).
    pub updated_since_ms: Option<u64>,
    /// Only households whose head's name or roster number contains this text.
    pub text: Option<String>,
}

/// Filters for listing local needs.
#[derive(Debug, Clone, Default)]
pub struct NeedFilter {
    /// Only needs with this tag.
    pub tag: Option<String>,
    /// Only needs in this status (its id, e.g. `open`).
    pub status: Option<String>,
    /// Only needs updated at or after this time (ms since the epoch).
    pub updated_since_ms: Option<u64>,
}

/// A local need as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct NeedRecord {
    /// Document key.
    pub key: DocKey,
    /// The need.
    pub need: LocalNeed,
    /// Heads (hex).
    pub heads: Vec<String>,
    /// Last update, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

/// How an update body is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// `PUT`: each part given replaces the stored part whole; a part left out is unchanged.
    Replace,
    /// `PATCH`: each part given is a JSON merge patch (RFC 7396) onto the stored part.
    MergePatch,
}

const LOCK_STRIPES: usize = 64;

/// While listing: a household's profile key, its (digest, updated) and its private digest.
type ListSlot = (DocKey, Option<(HeadsDigest, u64)>, Option<HeadsDigest>);

/// The parts of a household record that come from the documents.
pub(crate) struct HouseholdParts {
    pub(crate) hh: DocKey,
    pub(crate) hp: DocKey,
    pub(crate) profile: HouseholdProfile,
    pub(crate) private: HouseholdPrivate,
}

/// The record service over one node's store and scope.
pub struct Records {
    store: DocStore,
    scope: AreaScope,
    locks: Vec<tokio::sync::Mutex<()>>,
    summaries: Mutex<HashMap<DocKey, (HeadsDigest, HeadsDigest, HouseholdSummary)>>,
    ids: Mutex<Option<HashMap<String, DocKey>>>,
}

/// Today's date in China Standard Time, for the `created`/`updated` fields of needs.
fn today() -> Option<Date> {
    let (y, m, d) = cunyun_platform::timefmt::cst_date(now_ms());
    Date::new(u16::try_from(y).ok()?, m as u8, d as u8)
}

pub(crate) fn heads_hex(heads: &[ChangeHash]) -> Vec<String> {
    heads.iter().map(|h| h.to_string()).collect()
}

pub(crate) fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> RecordError {
    RecordError::Invalid(FieldErrors(vec![FieldError {
        field: field.to_string(),
        code,
        message: message.into(),
    }]))
}

/// Applies an RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Prefixes every field path of `errs` with `prefix.`.
pub(crate) fn prefixed(prefix: &str, errs: FieldErrors) -> Vec<FieldError> {
    errs.0
        .into_iter()
        .map(|mut e| {
            e.field = format!("{prefix}.{}", e.field);
            e
        })
        .collect()
}

impl Records {
    /// A record service over `store`, serving `scope`.
    pub fn new(store: DocStore, scope: AreaScope) -> Records {
        Records {
            store,
            scope,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            summaries: Mutex::new(HashMap::new()),
            ids: Mutex::new(None),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &DocStore {
        &self.store
    }

    /// The scope this node serves.
    pub fn scope(&self) -> AreaScope {
        self.scope
    }

    /// Holds off every other write to the documents of record `id` (a household's `hh` and
    /// `hp`, or a need) until the guard is dropped. Anyone who loads, changes and commits one of
    /// these documents outside this service (the automerge-repo endpoint) takes it, so that the
    /// store's heads digest describes the document after all concurrent edits.
    pub async fn write_lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock_for(id).lock().await
    }

    pub(crate) fn lock_for(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCK_STRIPES]
    }

    pub(crate) fn author(account: &str) -> Author<'static> {
        Author::from(account.as_bytes().to_vec())
    }

    pub(crate) fn commit_options(account: &str, what: &str) -> CommitOptions {
        CommitOptions::default()
            .with_message(format!("{what} by {account}"))
            .with_time((now_ms() / 1000) as i64)
    }

    /// Splits `{"profile": …, "private": …}` into its parts, refusing anything else.
    fn split_household_body(body: &Value) -> Result<(Option<&Value>, Option<&Value>), RecordError> {
        let Value::Object(map) = body else {
            return Err(RecordError::BadRequest(
                "请求内容应为JSON对象：{\"profile\": {…}, \"private\": {…}}".into(),
            ));
        };
        let mut errs = Vec::new();
        for k in map.keys() {
            if k != "profile" && k != "private" {
                errs.push(FieldError {
                    field: k.clone(),
                    code: "unknown_field",
                    message: format!("未知字段“{k}”，只能包含 profile 和 private"),
                });
            }
        }
        if !errs.is_empty() {
            return Err(RecordError::Invalid(FieldErrors(errs)));
        }
        Ok((map.get("profile"), map.get("private")))
    }

    /// For a village node, a profile without a village code is in the node's village.
    pub(crate) fn default_village(&self, profile: &mut Value) {
        if self.scope.level() == Level::Village {
            if let Value::Object(m) = profile {
                m.entry("village")
                    .or_insert_with(|| Value::String(self.scope.area().to_string()));
            }
        }
    }

    fn parse_household(
        &self,
        profile: &Value,
        private: &Value,
    ) -> Result<(HouseholdProfile, HouseholdPrivate), RecordError> {
        let mut errs = Vec::new();
        let p =
            HouseholdProfile::from_json(profile).map_err(|e| errs.extend(prefixed("profile", e)));
        let q =
            HouseholdPrivate::from_json(private).map_err(|e| errs.extend(prefixed("private", e)));
        if let Ok(p) = &p {
            if !self.scope.contains(&p.village) {
                errs.push(FieldError {
                    field: "profile.village".into(),
                    code: "out_of_scope",
                    message: format!(
                        "村代码 {} 不在本节点的服务范围（{}）内",
                        p.village, self.scope
                    ),
                });
            }
        }
        match (p, q) {
            (Ok(p), Ok(q)) if errs.is_empty() => Ok((p, q)),
            _ => Err(RecordError::Invalid(FieldErrors(errs))),
        }
    }

    /// Creates a household from `{"profile": …, "private": …}`; durable when it returns.
    pub async fn create_household(
        &self,
        account: &str,
        body: &Value,
    ) -> Result<HouseholdRecord, RecordError> {
        let (profile, private) = Self::split_household_body(body)?;
        let mut profile = profile
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        self.default_village(&mut profile);
        let private = private
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let (profile, private) = self.parse_household(&profile, &private)?;
        let id = self.fresh_id()?;
        let hh = DocKey::new(profile.village, Kind::Hh, id.clone())
            .map_err(|e| RecordError::BadRequest(e.to_string()))?;
        let hp = hh.with_kind(Kind::Hp);
        let _guard = self.lock_for(&id).lock().await;
        let now = now_ms();
        let mut writes = Vec::with_capacity(2);
        let mut hh_doc = Automerge::new().with_author(Some(Self::author(account)));
        let mut tx = hh_doc.transaction();
        profile.write_to(&mut tx)?;
        tx.commit_with(Self::commit_options(account, "create household"));
        writes.push(DocWrite {
            key: hh.clone(),
            chunk: hh_doc.save(),
            heads: hh_doc.get_heads(),
            updated_at_ms: now,
        });
        let mut hp_doc = Automerge::new().with_author(Some(Self::author(account)));
        let mut tx = hp_doc.transaction();
        private.write_to(&mut tx)?;
        tx.commit_with(Self::commit_options(account, "create household"));
        writes.push(DocWrite {
            key: hp.clone(),
            chunk: hp_doc.save(),
            heads: hp_doc.get_heads(),
            updated_at_ms: now,
        });
        self.store.commit_async(writes).await?;
        if let Ok(mut ids) = self.ids.lock() {
            if let Some(ids) = ids.as_mut() {
                ids.insert(id.clone(), hh.clone());
            }
        }
        tracing::info!(target: "cunyun::_events::household_created", key = %hh, author = account);
        Ok(self.household_record(
            &id,
            HouseholdParts {
                hh,
                hp,
                profile,
                private,
            },
            &hh_doc,
            &hp_doc.get_heads(),
            now,
        ))
    }

    pub(crate) fn household_record(
        &self,
        id: &str,
        parts: HouseholdParts,
        hh_doc: &Automerge,
        hp_heads: &[ChangeHash],
        updated_at_ms: u64,
    ) -> HouseholdRecord {
        let HouseholdParts {
            hh,
            hp,
            profile,
            private,
        } = parts;
        let derived_tags = derive_tags(&profile)
            .into_iter()
            .map(|(tag, reason)| DerivedTag {
                tag: tag.id().to_string(),
                name: tag.zh_name().to_string(),
                reason: reason.message(),
            })
            .collect();
        HouseholdRecord {
            id: id.to_string(),
            automerge_url: crate::automerge_repo::docid::url_for_key(&hh),
            private_automerge_url: crate::automerge_repo::docid::url_for_key(&hp),
            profile_key: hh,
            private_key: hp,
            profile,
            private,
            derived_tags,
            heads: heads_hex(&hh_doc.get_heads()),
            private_heads: heads_hex(hp_heads),
            updated_at_ms,
        }
    }

    fn fresh_id(&self) -> Result<String, RecordError> {
        let mut rng = rand::thread_rng();
        for _ in 0..16 {
            let id = format!("h{:012x}", rng.gen::<u64>() & 0xffff_ffff_ffff);
            if self.find_household(&id)?.is_none() {
                return Ok(id);
            }
        }
        Err(RecordError::BadRequest("无法生成新的户编号，请重试".into()))
    }

    /// Ids of every household in scope, built once from the index and kept up to date.
    pub(crate) fn find_household(&self, id: &str) -> Result<Option<DocKey>, RecordError> {
        let mut ids = self
            .ids
            .lock()
            .map_err(|_| RecordError::BadRequest("内部状态异常，请重试".into()))?;
        if ids.is_none() {
            let mut map = HashMap::new();
            for item in self.store.scan(&self.scope) {
                let (key, _) = item?;
                if key.kind() == Kind::Hh {
                    map.insert(key.id().to_string(), key);
                }
            }
            *ids = Some(map);
        }
        Ok(ids.as_ref().and_then(|m| m.get(id).cloned()))
    }

    /// Drops household `id` from the in-memory id map and list summaries (after a deletion).
    pub(crate) fn forget_household(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            if let Some(ids) = ids.as_mut() {
                ids.remove(id);
            }
        }
        if let Ok(mut cache) = self.summaries.lock() {
            cache.retain(|k, _| k.id() != id);
        }
    }

    pub(crate) fn load(&self, key: &DocKey) -> Result<Automerge, RecordError> {
        self.store
            .load(key)?
            .ok_or_else(|| RecordError::NotFound(key.id().to_string()))
    }

    pub(crate) fn read_profile(
        key: &DocKey,
        doc: &Automerge,
    ) -> Result<HouseholdProfile, RecordError> {
        HouseholdProfile::read_from(doc).map_err(|e| RecordError::Unreadable {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    pub(crate) fn read_private(
        key: &DocKey,
        doc: &Automerge,
    ) -> Result<HouseholdPrivate, RecordError> {
        HouseholdPrivate::read_from(doc).map_err(|e| RecordError::Unreadable {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads one household.
    pub fn get_household(&self, id: &str) -> Result<HouseholdRecord, RecordError> {
        let hh = self
            .find_household(id)?
            .ok_or_else(|| RecordError::NotFound(id.to_string()))?;
        let hp = hh.with_kind(Kind::Hp);
        let hh_doc = self.load(&hh)?;
        let profile = Self::read_profile(&hh, &hh_doc)?;
        let (private, hp_heads) = match self.store.load(&hp)? {
            Some(doc) => (Self::read_private(&hp, &doc)?, doc.get_heads()),
            None => (HouseholdPrivate::default(), Vec::new()),
        };
        let updated = self.store.entry(&hh)?.map_or(0, |e| e.updated_at_ms);
        Ok(self.household_record(
            id,
            HouseholdParts {
                hh,
                hp,
                profile,
                private,
            },
            &hh_doc,
            &hp_heads,
            updated,
        ))
    }

    /// Updates a household; durable when it returns. Only fields that changed are written, so
    /// a concurrent edit of other fields (from another cadre or node) is kept on merge.
    pub async fn update_household(
        &self,
        account: &str,
        id: &str,
        body: &Value,
        mode: UpdateMode,
    ) -> Result<HouseholdRecord, RecordError> {
        let (profile_in, private_in) = Self::split_household_body(body)?;
        let hh = self
            .find_household(id)?
            .ok_or_else(|| RecordError::NotFound(id.to_string()))?;
        let hp = hh.with_kind(Kind::Hp);
        let _guard = self.lock_for(id).lock().await;
        let mut hh_doc = self.load(&hh)?;
        let mut hp_doc = self.store.load(&hp)?.unwrap_or_else(Automerge::new);
        let old_profile = Self::read_profile(&hh, &hh_doc)?;
        let old_private = Self::read_private(&hp, &hp_doc)?;
        let next = |old: Value, given: Option<&Value>| -> Value {
            match (given, mode) {
                (None, _) => old,
                (Some(v), UpdateMode::Replace) => v.clone(),
                (Some(v), UpdateMode::MergePatch) => {
                    let mut t = old;
                    merge_patch(&mut t, v);
                    t
                }
            }
        };
        let to_json = |v: serde_json::Result<Value>| {
            v.map_err(|e| RecordError::BadRequest(format!("内部序列化失败: {e}")))
        };
        let mut profile_json = next(to_json(serde_json::to_value(&old_profile))?, profile_in);
        self.default_village(&mut profile_json);
        let private_json = next(to_json(serde_json::to_value(&old_private))?, private_in);
        let (profile, private) = self.parse_household(&profile_json, &private_json)?;
        if profile.village != old_profile.village {
            return Err(invalid(
                "profile.village",
                "immutable",
                "户所属村不能修改；迁出请删除后在新村重新登记",
            ));
        }
        let now = now_ms();
        let mut writes = Vec::new();
        for (key, doc, is_profile) in [(&hh, &mut hh_doc, true), (&hp, &mut hp_doc, false)] {
            let before = doc.get_heads();
            doc.set_author(Some(Self::author(account)));
            let mut tx = doc.transaction();
            if is_profile {
                profile.write_to(&mut tx)?;
            } else {
                private.write_to(&mut tx)?;
            }
            if tx.pending_ops() == 0 {
                tx.rollback();
                continue;
            }
            tx.commit_with(Self::commit_options(account, "update household"));
            writes.push(DocWrite {
                key: key.clone(),
                chunk: doc.save_after(&before),
                heads: doc.get_heads(),
                updated_at_ms: now,
            });
        }
        let updated = if writes.is_empty() {
            self.store.entry(&hh)?.map_or(0, |e| e.updated_at_ms)
        } else {
            self.store.commit_async(writes).await?;
            tracing::info!(target: "cunyun::_events::household_updated", key = %hh, author = account);
            now
        };
        Ok(self.household_record(
            id,
            HouseholdParts {
                hh,
                hp,
                profile,
                private,
            },
            &hh_doc,
            &hp_doc.get_heads(),
            updated,
        ))
    }

    /// Lists households in scope matching `filter`, ordered by key (village, then id).
    pub fn list_households(
        &self,
        filter: &HouseholdFilter,
    ) -> Result<Vec<HouseholdSummary>, RecordError> {
        let mut entries: BTreeMap<String, ListSlot> = BTreeMap::new();
        for item in self.store.scan(&self.scope) {
            let (key, entry) = item?;
            match key.kind() {
                Kind::Hh => {
                    let slot = entries
                        .entry(format!("{}/{}", key.area(), key.id()))
                        .or_insert((key.clone(), None, None));
                    slot.0 = key;
                    slot.1 = Some((entry.digest, entry.updated_at_ms));
                }
                Kind::Hp => {
                    let slot = entries
                        .entry(format!("{}/{}", key.area(), key.id()))
                        .or_insert((key.with_kind(Kind::Hh), None, None));
                    slot.2 = Some(entry.digest);
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for (_, (hh, hh_entry, hp_digest)) in entries {
            let Some((hh_digest, updated)) = hh_entry else {
                continue;
            };
            if filter.updated_since_ms.is_some_and(|since| updated < since) {
                continue;
            }
            let hp_digest = hp_digest.unwrap_or_else(HeadsDigest::empty);
            let summary = match self.cached_summary(&hh, hh_digest, hp_digest) {
                Some(s) => s,
                None => match self.build_summary(&hh, updated) {
                    Ok(s) => {
                        if let Ok(mut cache) = self.summaries.lock() {
                            cache.insert(hh.clone(), (hh_digest, hp_digest, s.clone()));
                        }
                        s
                    }
                    Err(e) => {
                        // One damaged record must not hide the rest of the village.
                        tracing::warn!(key = %hh, error = %e, "household skipped in listing");
                        continue;
                    }
                },
            };
            if filter.group.is_some_and(|g| g != summary.group) {
                continue;
            }
            if let Some(tag) = &filter.tag {
                if !summary.tags.iter().any(|t| t == tag) {
                    continue;
                }
            }
            if let Some(text) = &filter.text {
                if !summary.head_name.contains(text.as_str())
                    && !summary.roster_no.contains(text.as_str())
                {
                    continue;
                }
            }
            out.push(summary);
        }
        Ok(out)
    }

    fn cached_summary(
        &self,
        key: &DocKey,
        hh: HeadsDigest,
        hp: HeadsDigest,
    ) -> Option<HouseholdSummary> {
        let cache = self.summaries.lock().ok()?;
        match cache.get(key) {
            Some((a, b, s)) if *a == hh && *b == hp => Some(s.clone()),
            _ => None,
        }
    }

    fn build_summary(
        &self,
        hh: &DocKey,
        updated_at_ms: u64,
    ) -> Result<HouseholdSummary, RecordError> {
        let hp = hh.with_kind(Kind::Hp);
        let profile = Self::read_profile(hh, &self.load(hh)?)?;
        let private = match self.store.load(&hp)? {
            Some(doc) => Self::read_private(&hp, &doc)?,
            None => HouseholdPrivate::default(),
        };
        let mut tags: BTreeSet<String> = derive_tags(&profile)
            .into_iter()
            .map(|(t, _)| t.id().to_string())
            .collect();
        tags.extend(profile.stated_needs.keys().map(|t| t.id().to_string()));
        Ok(HouseholdSummary {
            id: hh.id().to_string(),
            village: *hh.area(),
            group: u32::from(profile.group),
            head_name: private.head_name.clone(),
            roster_no: private.roster_no.clone(),
            residents: u32::from(profile.residents),
            tags: tags.into_iter().collect(),
            updated_at_ms,
        })
    }

    // ----- local needs -----

    /// Creates a local need; durable when it returns.
    pub async fn create_need(
        &self,
        account: &str,
        body: &Value,
    ) -> Result<NeedRecord, RecordError> {
        let mut body = body.clone();
        if self.scope.level() == Level::Village {
            if let Value::Object(m) = &mut body {
                m.entry("area")
                    .or_insert_with(|| Value::String(self.scope.area().to_string()));
            }
        }
        let mut need = LocalNeed::from_json(&body).map_err(RecordError::Invalid)?;
        self.check_need_scope(&need)?;
        need.created = need.created.or_else(today);
        need.updated = today().or(need.updated);
        let id = {
            let mut rng = rand::thread_rng();
            format!("n{:012x}", rng.gen::<u64>() & 0xffff_ffff_ffff)
        };
        let key = DocKey::new(need.area, Kind::Need, id.clone())
            .map_err(|e| RecordError::BadRequest(e.to_string()))?;
        let _guard = self.lock_for(&id).lock().await;
        let mut doc = Automerge::new().with_author(Some(Self::author(account)));
        let mut tx = doc.transaction();
        need.write_to(&mut tx)?;
        tx.commit_with(Self::commit_options(account, "create need"));
        let now = now_ms();
        self.store
            .commit_async(vec![DocWrite {
                key: key.clone(),
                chunk: doc.save(),
                heads: doc.get_heads(),
                updated_at_ms: now,
            }])
            .await?;
        tracing::info!(target: "cunyun::_events::need_created", key = %key, author = account);
        Ok(NeedRecord {
            key,
            need,
            heads: heads_hex(&doc.get_heads()),
            updated_at_ms: now,
        })
    }

    fn check_need_scope(&self, need: &LocalNeed) -> Result<(), RecordError> {
        if self.scope.contains(&need.area) {
            Ok(())
        } else {
            Err(invalid(
                "area",
                "out_of_scope",
                format!(
                    "区划代码 {} 不在本节点的服务范围（{}）内",
                    need.area, self.scope
                ),
            ))
        }
    }

    pub(crate) fn find_need(&self, id: &str) -> Result<DocKey, RecordError> {
        for item in self.store.scan(&self.scope) {
            let (key, _) = item?;
            if key.kind() == Kind::Need && key.id() == id {
                return Ok(key);
            }
        }
        Err(RecordError::NotFound(id.to_string()))
    }

    fn read_need(key: &DocKey, doc: &Automerge) -> Result<LocalNeed, RecordError> {
        LocalNeed::read_from(doc).map_err(|e| RecordError::Unreadable {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads one local need.
    pub fn get_need(&self, id: &str) -> Result<NeedRecord, RecordError> {
        let key = self.find_need(id)?;
        let doc = self.load(&key)?;
        let need = Self::read_need(&key, &doc)?;
        let updated = self.store.entry(&key)?.map_or(0, |e| e.updated_at_ms);
        Ok(NeedRecord {
            key,
            need,
            heads: heads_hex(&doc.get_heads()),
            updated_at_ms: updated,
        })
    }

    /// Updates a local need; status changes must follow the allowed transitions.
    pub async fn update_need(
        &self,
        account: &str,
        id: &str,
        body: &Value,
        mode: UpdateMode,
    ) -> Result<NeedRecord, RecordError> {
        let key = self.find_need(id)?;
        let _guard = self.lock_for(id).lock().await;
        let mut doc = self.load(&key)?;
        let old = Self::read_need(&key, &doc)?;
        let old_json = serde_json::to_value(&old)
            .map_err(|e| RecordError::BadRequest(format!("内部序列化失败: {e}")))?;
        let json = match mode {
            UpdateMode::Replace => body.clone(),
            UpdateMode::MergePatch => {
                let mut t = old_json;
                merge_patch(&mut t, body);
                t
            }
        };
        let mut need = LocalNeed::from_json(&json).map_err(RecordError::Invalid)?;
        if need.area != old.area {
            return Err(invalid("area", "immutable", "需求所属区划不能修改"));
        }
        if let Err(e) = old.check_transition(&need) {
            return Err(RecordError::Invalid(e));
        }
        // Stamp the update date only when something else changed.
        let mut probe = need.clone();
        probe.updated = old.updated;
        if probe != old {
            need.updated = today().or(need.updated);
        }
        let before = doc.get_heads();
        doc.set_author(Some(Self::author(account)));
        let mut tx = doc.transaction();
        need.write_to(&mut tx)?;
        let changed = tx.pending_ops() > 0;
        let now = now_ms();
        let updated = if changed {
            tx.commit_with(Self::commit_options(account, "update need"));
            self.store
                .commit_async(vec![DocWrite {
                    key: key.clone(),
                    chunk: doc.save_after(&before),
                    heads: doc.get_heads(),
                    updated_at_ms: now,
                }])
                .await?;
            now
        } else {
            tx.rollback();
            self.store.entry(&key)?.map_or(0, |e| e.updated_at_ms)
        };
        Ok(NeedRecord {
            key,
            need,
            heads: heads_hex(&doc.get_heads()),
            updated_at_ms: updated,
        })
    }

    /// Lists local needs in scope matching `filter`, ordered by key.
    pub fn list_needs(&self, filter: &NeedFilter) -> Result<Vec<NeedRecord>, RecordError> {
        let mut out = Vec::new();
        for item in self.store.scan(&self.scope) {
            let (key, entry) = item?;
            if key.kind() != Kind::Need {
                continue;
            }
            if filter
                .updated_since_ms
                .is_some_and(|s| entry.updated_at_ms < s)
            {
                continue;
            }
            let doc = match self.load(&key) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "need skipped in listing");
                    continue;
                }
            };
            let need = match Self::read_need(&key, &doc) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "need skipped in listing");
                    continue;
                }
            };
            if let Some(tag) = &filter.tag {
                if !need.tags.iter().any(|t| t.id() == tag) {
                    continue;
                }
            }
            if let Some(status) = &filter.status {
                if need.status.id() != status {
                    continue;
                }
            }
            out.push(NeedRecord {
                key,
                need,
                heads: heads_hex(&doc.get_heads()),
                updated_at_ms: entry.updated_at_ms,
            });
        }
        Ok(out)
    }

    /// Counts for the status page: households, by group, needs.
    pub fn overview(&self) -> Result<Overview, RecordError> {
        let list = self.list_households(&HouseholdFilter::default())?;
        let mut by_group: BTreeMap<u32, usize> = BTreeMap::new();
        for h in &list {
            *by_group.entry(h.group).or_default() += 1;
        }
        let needs = self
            .store
            .scan(&self.scope)
            .filter_map(Result::ok)
            .filter(|(k, _)| k.kind() == Kind::Need)
            .count();
        Ok(Overview {
            households: list.len(),
            by_group,
            needs,
        })
    }
}

/// Counts shown on the status page.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Households recorded.
    pub households: usize,
    /// Households per 村民小组.
    pub by_group: BTreeMap<u32, usize>,
    /// Local needs recorded.
    pub needs: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut t = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": null, "b": {"c": 5}, "e": [1]}),
        );
        assert_eq!(t, serde_json::json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
