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
use cunyun_protocol::fields::{FieldError, FieldErrors};
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::need::LocalNeed;
use cunyun_protocol::triggers::derive_tags;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use cunyun_platform::clock::now_ms;
use cunyun_platform::store::{DocStore, DocWrite, IndexEntry, StoreError};

use crate::paging::{walk_kind, Visit};

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
    /// A create's `client_id` is not a client id ([`ClientId::parse`]); nothing was stored.
    #[error("{0}")]
    BadClientId(String),
    /// A record was already created under this `client_id` from a different body; the stored
    /// record is left unchanged.
    #[error("这条登记（编号 {client_id}）已经上传过，但这次的内容与已保存的不同；已保存的记录（{record}）未作修改。请打开该记录核对后再修改")]
    ClientIdReused {
        /// The client id.
        client_id: String,
        /// Id of the record created under it.
        record: String,
    },
    /// The record id this `client_id` maps to belongs to a record not created under it.
    #[error("编号 {0} 已被另一条记录占用，未保存；请重新登记")]
    ClientIdTaken(String),
    /// The household created under this `client_id` has been deleted since.
    #[error(
        "用编号 {client_id} 登记的农户（{record}）已被删除，不能再次上传；如需重新登记，请新建"
    )]
    CreatedThenDeleted {
        /// The client id.
        client_id: String,
        /// Id of the deleted household.
        record: String,
    },
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

impl HouseholdFilter {
    /// Whether `s` passes every filter but `updated_since_ms` (which the index answers).
    pub fn matches(&self, s: &HouseholdSummary) -> bool {
        self.group.is_none_or(|g| g == s.group)
            && self
                .tag
                .as_ref()
                .is_none_or(|tag| s.tags.iter().any(|t| t == tag))
            && self.text.as_ref().is_none_or(|text| {
                s.head_name.contains(text.as_str()) || s.roster_no.contains(text.as_str())
            })
    }
}

/// What one page of a list may return and read.
#[derive(Debug, Clone)]
pub struct PageSpec {
    /// First index key to read (inclusive): the range's start, or a cursor's position.
    pub from: Vec<u8>,
    /// End of the range (exclusive), e.g. of the reader's area.
    pub end: Vec<u8>,
    /// Most items to return.
    pub limit: usize,
    /// Most index entries to read (see [`crate::paging::walk_kind`]).
    pub scan_budget: usize,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Where the next page starts, or `None` on the last page.
    pub resume: Option<Vec<u8>>,
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

/// Name of the optional field of a create body that carries the [`ClientId`].
pub const CLIENT_ID_FIELD: &str = "client_id";

/// A client-generated id of a create: a random UUID (version 4) in its canonical lowercase
/// form, `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`, that the web app makes once when the cadre
/// saves a new record and sends with every retry.
///
/// The record's id is derived from it ([`ClientId::record_id`]), so every resend lands on the
/// same document key, and each created document's first change message carries it with a
/// fingerprint of that document's part of the body ([`ClientId::marker`]; the `hh` one covers the
/// profile only, so no hash of private data leaves the county): the per-record write lock and the
/// store's index decide whether the record exists, and the marker whether this create made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    /// Parses the `client_id` of a create body, strictly.
    pub fn parse(v: &Value) -> Result<ClientId, RecordError> {
        let bad = || {
            RecordError::BadClientId(
                "client_id 格式错误：应为应用生成的随机编号（小写UUID第4版，\
                 如 3f2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e6f），请重新登记"
                    .into(),
            )
        };
        let Value::String(s) = v else {
            return Err(bad());
        };
        let b = s.as_bytes();
        let ok = b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            })
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b');
        if ok {
            Ok(ClientId(s.clone()))
        } else {
            Err(bad())
        }
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The record id this client id maps to: `prefix` and 12 hex digits of a BLAKE3 hash (the
    /// shape of a server-chosen id).
    pub fn record_id(&self, prefix: char) -> String {
        let mut h = blake3::Hasher::new_derive_key("cunyun 2026 record id from client id");
        h.update(&[prefix as u8]);
        h.update(self.0.as_bytes());
        let hex = h.finalize().to_hex();
        format!("{prefix}{}", &hex.as_str()[..12])
    }

    /// What the creating change's message carries: the client id and a fingerprint of the
    /// parsed body, `[client <id> <32 hex>]`.
    fn marker(&self, fingerprint: &str) -> String {
        format!("[client {} {fingerprint}]", self.0)
    }

    /// The fingerprint recorded in `doc` for this client id, if a change of it carries one.
    fn recorded_fingerprint(&self, doc: &Automerge) -> Option<String> {
        let prefix = format!("[client {} ", self.0);
        doc.get_changes(&[]).iter().find_map(|c| {
            let m = c.message()?;
            let at = m.find(&prefix)? + prefix.len();
            m.get(at..at + 32).map(str::to_string)
        })
    }
}

/// BLAKE3 of the JSON of a parsed create body (128 bits, hex): equal for the same input.
fn fingerprint<T: Serialize>(parsed: &T) -> Result<String, RecordError> {
    let bytes = serde_json::to_vec(parsed)
        .map_err(|e| RecordError::BadRequest(format!("内部序列化失败: {e}")))?;
    Ok(blake3::hash(&bytes).to_hex().as_str()[..32].to_string())
}

/// Takes the optional `client_id` out of a create body, validating it; the rest is the body.
fn take_client_id(body: &Value) -> Result<(Option<ClientId>, Value), RecordError> {
    let mut body = body.clone();
    let client = match &mut body {
        Value::Object(m) => m
            .remove(CLIENT_ID_FIELD)
            .map(|v| ClientId::parse(&v))
            .transpose()?,
        _ => None,
    };
    Ok((client, body))
}

/// What a create returned: the record, and whether this call created it (`false`: it was
/// created before under the same [`ClientId`], and this is it as it is now).
#[derive(Debug, Clone)]
pub struct Created<T> {
    /// The record.
    pub record: T,
    /// True when this call created it.
    pub created: bool,
}

const LOCK_STRIPES: usize = 64;

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
    ids: Mutex<Option<(u64, HashMap<String, DocKey>)>>,
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

    /// Creates a household from `{"profile": …, "private": …}`; durable when it returns. With a
    /// `client_id` it is created once: see [`Records::create_household_once`].
    pub async fn create_household(
        &self,
        account: &str,
        body: &Value,
    ) -> Result<HouseholdRecord, RecordError> {
        Ok(self.create_household_once(account, body).await?.record)
    }

    /// Creates a household from `{"client_id"?: …, "profile": …, "private": …}`; durable when
    /// it returns.
    ///
    /// Without `client_id` the id is chosen here. With one (a [`ClientId`]) the id is derived
    /// from it, and under the record's write lock: if the household exists and was created under
    /// this client id from the same body, it is returned as it is now (`created: false`, nothing
    /// written); from a different body, [`RecordError::ClientIdReused`]; if the id is held by a
    /// record not created under it, [`RecordError::ClientIdTaken`]; if the household was deleted
    /// since, [`RecordError::CreatedThenDeleted`]. A bad client id changes nothing.
    pub async fn create_household_once(
        &self,
        account: &str,
        body: &Value,
    ) -> Result<Created<HouseholdRecord>, RecordError> {
        let (client, body) = take_client_id(body)?;
        let (profile, private) = Self::split_household_body(&body)?;
        let mut profile = profile
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        self.default_village(&mut profile);
        let private = private
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let (profile, private) = self.parse_household(&profile, &private)?;
        // One fingerprint per document: the profile's travels with `hh` (up to the hub), the
        // private part's stays with `hp` in the county, as the data they describe.
        let (id, marker) = match &client {
            Some(c) => {
                let prints = (fingerprint(&profile)?, fingerprint(&private)?);
                (c.record_id('h'), Some((c, prints)))
            }
            None => (self.fresh_id()?, None),
        };
        let hh = DocKey::new(profile.village, Kind::Hh, id.clone())
            .map_err(|e| RecordError::BadRequest(e.to_string()))?;
        let hp = hh.with_kind(Kind::Hp);
        let _guard = self.lock_for(&id).lock().await;
        let (what_hh, what_hp) = match &marker {
            Some((c, prints)) => {
                if let Some(existing) = self.created_before(c, prints, &hh)? {
                    return Ok(Created {
                        record: existing,
                        created: false,
                    });
                }
                (
                    format!("create household {}", c.marker(&prints.0)),
                    format!("create household {}", c.marker(&prints.1)),
                )
            }
            None => (
                "create household".to_string(),
                "create household".to_string(),
            ),
        };
        let now = now_ms();
        let mut writes = Vec::with_capacity(2);
        let mut hh_doc = Automerge::new().with_author(Some(Self::author(account)));
        let mut tx = hh_doc.transaction();
        profile.write_to(&mut tx)?;
        tx.commit_with(Self::commit_options(account, &what_hh));
        writes.push(DocWrite {
            key: hh.clone(),
            chunk: hh_doc.save(),
            heads: hh_doc.get_heads(),
            updated_at_ms: now,
        });
        let mut hp_doc = Automerge::new().with_author(Some(Self::author(account)));
        let mut tx = hp_doc.transaction();
        private.write_to(&mut tx)?;
        tx.commit_with(Self::commit_options(account, &what_hp));
        writes.push(DocWrite {
            key: hp.clone(),
            chunk: hp_doc.save(),
            heads: hp_doc.get_heads(),
            updated_at_ms: now,
        });
        self.store.commit_async(writes).await?;
        if let Ok(mut ids) = self.ids.lock() {
            if let Some((_, ids)) = ids.as_mut() {
                ids.insert(id.clone(), hh.clone());
            }
        }
        tracing::info!(target: "cunyun::_events::household_created", key = %hh, author = account);
        Ok(Created {
            record: self.household_record(
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
            ),
            created: true,
        })
    }

    /// For a create under `client` whose profile key is `hh`, with the fingerprints of its
    /// profile and private part (the caller holds the record's write lock): the household as it
    /// is now when this create was made before, `None` when the id is free, an error otherwise.
    fn created_before(
        &self,
        client: &ClientId,
        prints: &(String, String),
        hh: &DocKey,
    ) -> Result<Option<HouseholdRecord>, RecordError> {
        let id = hh.id();
        let held = match self.store.entry(hh)? {
            Some(_) => Some(hh.clone()),
            // The same id in another village of this node (a county node).
            None => self.find_household(id)?,
        };
        let Some(held) = held else {
            if self.store.deleted(hh)? {
                return Err(RecordError::CreatedThenDeleted {
                    client_id: client.as_str().to_string(),
                    record: id.to_string(),
                });
            }
            return Ok(None);
        };
        let doc = self.load(&held)?;
        // The private part, where this node holds it, must be the one sent too.
        let private_same = match self.store.load(&held.with_kind(Kind::Hp))? {
            Some(hp) => client.recorded_fingerprint(&hp).as_ref() == Some(&prints.1),
            None => true,
        };
        match client.recorded_fingerprint(&doc) {
            Some(p) if p == prints.0 && private_same && held == *hh => {
                tracing::info!(
                    target: "cunyun::_events::household_create_repeated",
                    key = %hh,
                    client_id = client.as_str()
                );
                Ok(Some(self.household_at(held)?))
            }
            Some(_) => Err(RecordError::ClientIdReused {
                client_id: client.as_str().to_string(),
                record: id.to_string(),
            }),
            None => Err(RecordError::ClientIdTaken(client.as_str().to_string())),
        }
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

    /// The profile key of household `id`. On a village node the key is `<village>/hh/<id>`, so
    /// this is one index lookup; on a wider node it comes from a map of the ids in scope, built
    /// once from the index and kept up to date by this service's creates and deletions.
    pub(crate) fn find_household(&self, id: &str) -> Result<Option<DocKey>, RecordError> {
        if self.scope.level() == Level::Village {
            let Ok(key) = DocKey::new(self.scope.area(), Kind::Hh, id) else {
                return Ok(None);
            };
            return Ok(self.store.entry(&key)?.map(|_| key));
        }
        let mut ids = self
            .ids
            .lock()
            .map_err(|_| RecordError::BadRequest("内部状态异常，请重试".into()))?;
        // The map is built once and built again on a miss when the store was written since
        // (a household synced in from a village after the map was built must be found).
        let stale = match ids.as_ref() {
            None => true,
            Some((built_at, map)) => !map.contains_key(id) && self.store.writes() != *built_at,
        };
        if stale {
            let built_at = self.store.writes();
            let mut map = HashMap::new();
            for item in self.store.scan(&self.scope) {
                let (key, _) = item?;
                if key.kind() == Kind::Hh {
                    map.insert(key.id().to_string(), key);
                }
            }
            *ids = Some((built_at, map));
        }
        Ok(ids.as_ref().and_then(|(_, m)| m.get(id).cloned()))
    }

    /// Drops household `id` from the in-memory id map and list summaries (after a deletion).
    pub(crate) fn forget_household(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            if let Some((_, ids)) = ids.as_mut() {
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
        self.household_at(hh)
    }

    /// Reads the household whose profile key is `hh`.
    fn household_at(&self, hh: DocKey) -> Result<HouseholdRecord, RecordError> {
        let id = hh.id().to_string();
        let id = id.as_str();
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

    /// Every household in scope matching `filter`, ordered by key (village, then id), as one
    /// list. For tools and tests; request handlers page with [`Records::households_page`].
    pub fn list_households(
        &self,
        filter: &HouseholdFilter,
    ) -> Result<Vec<HouseholdSummary>, RecordError> {
        let (from, end) = self.scope.key_range();
        let page = self.households_page(
            filter,
            &PageSpec {
                from,
                end,
                limit: usize::MAX,
                scan_budget: usize::MAX,
            },
        )?;
        Ok(page.items)
    }

    /// One page of the households matching `filter` with keys in `[spec.from, spec.end)`, in
    /// key order: at most `spec.limit` of them, reading at most `spec.scan_budget` index
    /// entries. A household that cannot be read is logged and left out (one damaged record must
    /// not hide the rest of the village).
    pub fn households_page(
        &self,
        filter: &HouseholdFilter,
        spec: &PageSpec,
    ) -> Result<Page<HouseholdSummary>, RecordError> {
        let mut items = Vec::new();
        let walked = walk_kind(
            &self.store,
            Kind::Hh,
            spec.from.clone(),
            &spec.end,
            spec.scan_budget,
            |hh, entry| {
                if filter
                    .updated_since_ms
                    .is_some_and(|since| entry.updated_at_ms < since)
                {
                    return Ok(Visit::More);
                }
                let Some(summary) = self.summary(&hh, entry) else {
                    return Ok(Visit::More);
                };
                if filter.matches(&summary) {
                    items.push(summary);
                    if items.len() >= spec.limit {
                        return Ok(Visit::Full);
                    }
                }
                Ok::<_, RecordError>(Visit::More)
            },
        )?;
        Ok(Page {
            items,
            resume: walked.resume,
        })
    }

    /// The list row of household `hh` whose index entry is `entry`, from the cache when neither
    /// document changed since; `None` (logged) when it cannot be read.
    fn summary(&self, hh: &DocKey, entry: IndexEntry) -> Option<HouseholdSummary> {
        let hp_digest = match self.store.entry(&hh.with_kind(Kind::Hp)) {
            Ok(e) => e.map_or_else(HeadsDigest::empty, |e| e.digest),
            Err(e) => {
                tracing::warn!(key = %hh, error = %e, "household skipped in listing");
                return None;
            }
        };
        if let Some(s) = self.cached_summary(hh, entry.digest, hp_digest) {
            return Some(s);
        }
        match self.build_summary(hh, entry.updated_at_ms) {
            Ok(s) => {
                if let Ok(mut cache) = self.summaries.lock() {
                    cache.insert(hh.clone(), (entry.digest, hp_digest, s.clone()));
                }
                Some(s)
            }
            Err(e) => {
                tracing::warn!(key = %hh, error = %e, "household skipped in listing");
                None
            }
        }
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

    /// Creates a local need; durable when it returns. With a `client_id` it is created once:
    /// see [`Records::create_need_once`].
    pub async fn create_need(
        &self,
        account: &str,
        body: &Value,
    ) -> Result<NeedRecord, RecordError> {
        Ok(self.create_need_once(account, body).await?.record)
    }

    /// Creates a local need from its fields and an optional `client_id`; durable when it
    /// returns. A client id works as for households ([`Records::create_household_once`]): the
    /// need's id is derived from it, and a resend of the same body returns the need as it is now
    /// (`created: false`); a different body is [`RecordError::ClientIdReused`].
    pub async fn create_need_once(
        &self,
        account: &str,
        body: &Value,
    ) -> Result<Created<NeedRecord>, RecordError> {
        let (client, mut body) = take_client_id(body)?;
        if self.scope.level() == Level::Village {
            if let Value::Object(m) = &mut body {
                m.entry("area")
                    .or_insert_with(|| Value::String(self.scope.area().to_string()));
            }
        }
        let mut need = LocalNeed::from_json(&body).map_err(RecordError::Invalid)?;
        self.check_need_scope(&need)?;
        let marker = match &client {
            Some(c) => Some((c, fingerprint(&need)?)),
            None => None,
        };
        need.created = need.created.or_else(cunyun_platform::clock::today_cst);
        need.updated = cunyun_platform::clock::today_cst().or(need.updated);
        let id = match &client {
            Some(c) => c.record_id('n'),
            None => {
                let mut rng = rand::thread_rng();
                format!("n{:012x}", rng.gen::<u64>() & 0xffff_ffff_ffff)
            }
        };
        let key = DocKey::new(need.area, Kind::Need, id.clone())
            .map_err(|e| RecordError::BadRequest(e.to_string()))?;
        let _guard = self.lock_for(&id).lock().await;
        let what = match &marker {
            Some((c, print)) => {
                if self.store.entry(&key)?.is_some() {
                    let doc = self.load(&key)?;
                    return match c.recorded_fingerprint(&doc) {
                        Some(p) if p == *print => {
                            tracing::info!(
                                target: "cunyun::_events::need_create_repeated",
                                key = %key,
                                client_id = c.as_str()
                            );
                            Ok(Created {
                                record: self.need_at(key, &doc)?,
                                created: false,
                            })
                        }
                        Some(_) => Err(RecordError::ClientIdReused {
                            client_id: c.as_str().to_string(),
                            record: id,
                        }),
                        None => Err(RecordError::ClientIdTaken(c.as_str().to_string())),
                    };
                }
                format!("create need {}", c.marker(print))
            }
            None => "create need".to_string(),
        };
        let mut doc = Automerge::new().with_author(Some(Self::author(account)));
        let mut tx = doc.transaction();
        need.write_to(&mut tx)?;
        tx.commit_with(Self::commit_options(account, &what));
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
        Ok(Created {
            record: NeedRecord {
                key,
                need,
                heads: heads_hex(&doc.get_heads()),
                updated_at_ms: now,
            },
            created: true,
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

    /// The key of need `id`. On a village node a need's key is `<village>/need/<id>` (its area
    /// is the village), so this is one index lookup; on a wider node the area is not in the id,
    /// and the walk reads only the need ranges of each area.
    pub(crate) fn find_need(&self, id: &str) -> Result<DocKey, RecordError> {
        let not_found = || RecordError::NotFound(id.to_string());
        if self.scope.level() == Level::Village {
            let key = DocKey::new(self.scope.area(), Kind::Need, id).map_err(|_| not_found())?;
            return match self.store.entry(&key)? {
                Some(_) => Ok(key),
                None => Err(not_found()),
            };
        }
        let (from, end) = self.scope.key_range();
        let mut found = None;
        walk_kind(&self.store, Kind::Need, from, &end, usize::MAX, |key, _| {
            if key.id() == id {
                found = Some(key);
                return Ok::<_, RecordError>(Visit::Full);
            }
            Ok(Visit::More)
        })?;
        found.ok_or_else(not_found)
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
        self.need_at(key, &doc)
    }

    /// The need stored under `key`, whose document is `doc`.
    fn need_at(&self, key: DocKey, doc: &Automerge) -> Result<NeedRecord, RecordError> {
        let need = Self::read_need(&key, doc)?;
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
            need.updated = cunyun_platform::clock::today_cst().or(need.updated);
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

    /// Every local need in scope matching `filter`, ordered by key, as one list. For tools and
    /// tests; request handlers page with [`Records::needs_page`].
    pub fn list_needs(&self, filter: &NeedFilter) -> Result<Vec<NeedRecord>, RecordError> {
        let (from, end) = self.scope.key_range();
        let page = self.needs_page(
            filter,
            &PageSpec {
                from,
                end,
                limit: usize::MAX,
                scan_budget: usize::MAX,
            },
        )?;
        Ok(page.items)
    }

    /// One page of the local needs matching `filter` with keys in `[spec.from, spec.end)`, in
    /// key order, bounded as [`Records::households_page`] is. A need that cannot be read is
    /// logged and left out.
    pub fn needs_page(
        &self,
        filter: &NeedFilter,
        spec: &PageSpec,
    ) -> Result<Page<NeedRecord>, RecordError> {
        let mut items = Vec::new();
        let walked = walk_kind(
            &self.store,
            Kind::Need,
            spec.from.clone(),
            &spec.end,
            spec.scan_budget,
            |key, entry| {
                if filter
                    .updated_since_ms
                    .is_some_and(|s| entry.updated_at_ms < s)
                {
                    return Ok(Visit::More);
                }
                let read = self
                    .load(&key)
                    .and_then(|doc| Self::read_need(&key, &doc).map(|n| (n, doc)));
                let (need, doc) = match read {
                    Ok(nd) => nd,
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "need skipped in listing");
                        return Ok(Visit::More);
                    }
                };
                if filter
                    .tag
                    .as_ref()
                    .is_some_and(|tag| !need.tags.iter().any(|t| t.id() == tag))
                {
                    return Ok(Visit::More);
                }
                if filter
                    .status
                    .as_ref()
                    .is_some_and(|s| need.status.id() != s)
                {
                    return Ok(Visit::More);
                }
                items.push(NeedRecord {
                    key,
                    need,
                    heads: heads_hex(&doc.get_heads()),
                    updated_at_ms: entry.updated_at_ms,
                });
                Ok::<_, RecordError>(if items.len() >= spec.limit {
                    Visit::Full
                } else {
                    Visit::More
                })
            },
        )?;
        Ok(Page {
            items,
            resume: walked.resume,
        })
    }

    /// Counts for the status page: households, by group, needs.
    pub fn overview(&self) -> Result<Overview, RecordError> {
        let (from, end) = self.scope.key_range();
        let mut households = 0;
        let mut by_group: BTreeMap<u32, usize> = BTreeMap::new();
        walk_kind(
            &self.store,
            Kind::Hh,
            from.clone(),
            &end,
            usize::MAX,
            |hh, entry| {
                if let Some(s) = self.summary(&hh, entry) {
                    households += 1;
                    *by_group.entry(s.group).or_default() += 1;
                }
                Ok::<_, RecordError>(Visit::More)
            },
        )?;
        let mut needs = 0;
        walk_kind(&self.store, Kind::Need, from, &end, usize::MAX, |_, _| {
            needs += 1;
            Ok::<_, RecordError>(Visit::More)
        })?;
        Ok(Overview {
            households,
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

    use cunyun_platform::store::StoreConfig;
    use serde_json::json;

    const VILLAGE: &str = "510116108203";
    const CID: &str = "3f2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e6f";

    fn records(dir: &std::path::Path) -> Records {
        let store = DocStore::open(&dir.join("store"), StoreConfig::default()).expect("store");
        Records::new(store, AreaScope::parse(VILLAGE).expect("scope"))
    }

    fn household(client_id: &str, residents: u32) -> Value {
        json!({
            "client_id": client_id,
            "profile": {"group": 2, "residents": residents, "age_18_59": 2, "smartphones": 1},
            "private": {"head_name": "李四", "phone": "13800000000"}
        })
    }

    fn count(r: &Records, kind: Kind) -> usize {
        r.store()
            .scan(&r.scope())
            .filter_map(Result::ok)
            .filter(|(k, _)| k.kind() == kind)
            .count()
    }

    #[test]
    fn client_ids_are_strict_lowercase_uuid_v4() {
        assert!(ClientId::parse(&json!(CID)).is_ok());
        for bad in [
            json!("3F2B8C1E-9A4D-4C6B-8E2F-1A2B3C4D5E6F"), // upper case
            json!("3f2b8c1e-9a4d-1c6b-8e2f-1a2b3c4d5e6f"), // version 1
            json!("3f2b8c1e-9a4d-4c6b-ce2f-1a2b3c4d5e6f"), // variant c
            json!("3f2b8c1e9a4d4c6b8e2f1a2b3c4d5e6f"),     // no hyphens
            json!("{3f2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e6f}"),
            json!("3f2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e6"),
            json!("3f2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e6g"),
            json!("3f2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e6fa"),
            json!("3f2b8c1e_9a4d-4c6b-8e2f-1a2b3c4d5e6f"),
            json!("ｆ2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e"), // multibyte
            json!(""),
            json!(null),
            json!(42),
            json!({"id": CID}),
        ] {
            match ClientId::parse(&bad) {
                Err(RecordError::BadClientId(m)) => assert!(m.contains("client_id 格式错误")),
                other => panic!("{bad} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn record_ids_derive_from_the_client_id_in_the_usual_shape() {
        let c = ClientId::parse(&json!(CID)).expect("id");
        let h = c.record_id('h');
        assert_eq!(h, c.record_id('h'), "deterministic");
        assert_eq!(h.len(), 13);
        assert!(h.starts_with('h') && h[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        let n = c.record_id('n');
        assert!(n.starts_with('n'));
        assert_ne!(h[1..], n[1..], "the kinds get unrelated ids");
        let other = ClientId::parse(&json!("3f2b8c1e-9a4d-4c6b-8e2f-1a2b3c4d5e60")).expect("id");
        assert_ne!(other.record_id('h'), h);
    }

    #[tokio::test]
    async fn a_resent_household_create_returns_the_record_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let first = r
            .create_household_once("cadre", &household(CID, 4))
            .await
            .expect("first");
        assert!(first.created);
        assert_eq!(
            first.record.id,
            ClientId::parse(&json!(CID)).expect("id").record_id('h')
        );
        let docs = r.store().stats().documents;
        let again = r
            .create_household_once("cadre", &household(CID, 4))
            .await
            .expect("again");
        assert!(!again.created);
        assert_eq!(again.record.id, first.record.id);
        assert_eq!(again.record.heads, first.record.heads);
        assert_eq!(again.record.private_heads, first.record.private_heads);
        assert_eq!(r.store().stats().documents, docs, "nothing written");
        assert_eq!(count(&r, Kind::Hh), 1);

        // Edited since: the resend answers the record as it is now, unchanged by the resend.
        r.update_household(
            "cadre",
            &first.record.id,
            &json!({"profile": {"group": 7}}),
            UpdateMode::MergePatch,
        )
        .await
        .expect("edit");
        let later = r
            .create_household_once("cadre", &household(CID, 4))
            .await
            .expect("later");
        assert!(!later.created);
        assert_eq!(later.record.profile.group, 7);

        // Without a client id every create is a new household.
        let mut plain = household(CID, 4);
        plain.as_object_mut().expect("object").remove("client_id");
        r.create_household("cadre", &plain).await.expect("plain");
        assert_eq!(count(&r, Kind::Hh), 2);
    }

    #[tokio::test]
    async fn a_client_id_with_another_body_or_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let first = r
            .create_household_once("cadre", &household(CID, 4))
            .await
            .expect("first");
        match r.create_household_once("cadre", &household(CID, 5)).await {
            Err(e @ RecordError::ClientIdReused { .. }) => {
                assert!(e.to_string().contains(&first.record.id), "{e}")
            }
            other => panic!("expected ClientIdReused, got {other:?}"),
        }
        let mut private_changed = household(CID, 4);
        private_changed["private"]["phone"] = json!("13900000000");
        assert!(matches!(
            r.create_household_once("cadre", &private_changed).await,
            Err(RecordError::ClientIdReused { .. })
        ));
        let now = r.get_household(&first.record.id).expect("read");
        assert_eq!(now.profile.residents, 4, "stored record unchanged");
        assert_eq!(now.private.phone, "13800000000");
        assert_eq!(now.heads, first.record.heads);
        assert_eq!(now.private_heads, first.record.private_heads);

        // What `hh` carries up to the hub is the profile's fingerprint, never the private part's.
        let c = ClientId::parse(&json!(CID)).expect("id");
        let hh_doc = r.load(&now.profile_key).expect("hh");
        let hp_doc = r.load(&now.private_key).expect("hp");
        assert_eq!(
            c.recorded_fingerprint(&hh_doc),
            Some(fingerprint(&now.profile).expect("print"))
        );
        assert_eq!(
            c.recorded_fingerprint(&hp_doc),
            Some(fingerprint(&now.private).expect("print"))
        );

        let docs = r.store().stats().documents;
        for bad in ["not-a-uuid", "3F2B8C1E-9A4D-4C6B-8E2F-1A2B3C4D5E6F"] {
            assert!(matches!(
                r.create_household_once("cadre", &household(bad, 4)).await,
                Err(RecordError::BadClientId(_))
            ));
            assert!(matches!(
                r.create_need_once("cadre", &json!({"client_id": bad, "requester": "village_collective", "title": "柑橘技术"}))
                    .await,
                Err(RecordError::BadClientId(_))
            ));
        }
        assert_eq!(r.store().stats().documents, docs, "nothing stored");
    }

    #[tokio::test]
    async fn an_id_held_by_another_record_or_deleted_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let c = ClientId::parse(&json!(CID)).expect("id");
        // A record under the derived id that no create with this client id made.
        let hh = DocKey::new(
            AreaCode::parse(VILLAGE).expect("area"),
            Kind::Hh,
            c.record_id('h'),
        )
        .expect("key");
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        HouseholdProfile::from_json(&json!({"village": VILLAGE, "group": 1, "residents": 1}))
            .expect("profile")
            .write_to(&mut tx)
            .expect("write");
        tx.commit();
        r.store()
            .commit_async(vec![DocWrite {
                key: hh.clone(),
                chunk: doc.save(),
                heads: doc.get_heads(),
                updated_at_ms: now_ms(),
            }])
            .await
            .expect("commit");
        assert!(matches!(
            r.create_household_once("cadre", &household(CID, 4)).await,
            Err(RecordError::ClientIdTaken(_))
        ));

        // Created, then deleted: a late resend does not bring it back.
        let other = "0b1c2d3e-4f50-4a6b-9c7d-8e9fa0b1c2d3";
        let made = r
            .create_household_once("cadre", &household(other, 4))
            .await
            .expect("create");
        r.delete_household(
            "cadre",
            &made.record.id,
            cunyun_protocol::deletion::DeletionReason::Mistake,
        )
        .await
        .expect("delete");
        assert!(matches!(
            r.create_household_once("cadre", &household(other, 4)).await,
            Err(RecordError::CreatedThenDeleted { .. })
        ));
        assert!(r.find_household(&made.record.id).expect("find").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_identical_creates_make_one_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = std::sync::Arc::new(records(dir.path()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move {
                    let hh = r.create_household_once("cadre", &household(CID, 4)).await;
                    let need = r
                        .create_need_once("cadre", &json!({"client_id": CID, "requester": "village_collective", "title": "柑橘技术"}))
                        .await;
                    (hh.expect("hh"), need.expect("need"))
                })
            })
            .collect();
        let mut made = (0, 0);
        let mut ids = BTreeSet::new();
        for t in tasks {
            let (hh, need) = t.await.expect("task");
            made.0 += usize::from(hh.created);
            made.1 += usize::from(need.created);
            ids.insert(hh.record.id);
            ids.insert(need.record.key.id().to_string());
        }
        assert_eq!(made, (1, 1), "exactly one of each created");
        assert_eq!(ids.len(), 2, "every answer names the same two records");
        assert_eq!(count(&r, Kind::Hh), 1);
        assert_eq!(count(&r, Kind::Hp), 1);
        assert_eq!(count(&r, Kind::Need), 1);
    }

    /// A county node: households and needs of two villages, paged with a small budget.
    #[tokio::test]
    async fn pages_walk_every_village_of_a_county_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            DocStore::open(&dir.path().join("store"), StoreConfig::default()).expect("store");
        let r = Records::new(store, AreaScope::parse("510116").expect("scope"));
        let villages = ["510116108203", "510116108204"];
        let mut made = BTreeSet::new();
        let mut needs = Vec::new();
        for (i, v) in villages.iter().enumerate() {
            for n in 0..12u32 {
                let body = json!({
                    "profile": {"village": v, "group": 1 + n % 3, "residents": 2, "age_18_59": 2},
                    "private": {"head_name": format!("户{i}-{n}")}
                });
                made.insert(r.create_household("cadre", &body).await.expect("hh").id);
            }
            let need = r
                .create_need(
                    "cadre",
                    &json!({"area": v, "requester": "coop", "title": "柑橘技术"}),
                )
                .await
                .expect("need");
            needs.push(need.key);
        }
        let (start, end) = r.scope().key_range();
        let mut seen = Vec::new();
        let mut from = start.clone();
        let mut pages = 0;
        loop {
            let budget = 7;
            let mut read = 0;
            let walked = walk_kind(&r.store, Kind::Hh, from.clone(), &end, budget, |_, _| {
                read += 1;
                Ok::<_, RecordError>(Visit::More)
            })
            .expect("walk");
            assert!(walked.read <= budget, "{} entries read", walked.read);
            assert!(read < budget);
            let page = r
                .households_page(
                    &HouseholdFilter::default(),
                    &PageSpec {
                        from: from.clone(),
                        end: end.clone(),
                        limit: 100,
                        scan_budget: budget,
                    },
                )
                .expect("page");
            assert_eq!(
                page.items.len(),
                read,
                "the page holds what the walk visited"
            );
            seen.extend(page.items.into_iter().map(|h| h.id));
            pages += 1;
            assert!(pages < 50);
            match page.resume {
                Some(next) => {
                    assert!(next > from, "every page moves on");
                    from = next;
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), 24);
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), made);
        // A filter by group, and the needs of both villages.
        let group2 = r
            .list_households(&HouseholdFilter {
                group: Some(2),
                ..Default::default()
            })
            .expect("list");
        assert_eq!(group2.len(), 8);
        let page = r
            .needs_page(
                &NeedFilter::default(),
                &PageSpec {
                    from: start,
                    end,
                    limit: 1,
                    scan_budget: 1000,
                },
            )
            .expect("needs");
        assert_eq!(page.items.len(), 1);
        assert!(page.resume.is_some());
        for key in &needs {
            assert_eq!(&r.find_need(key.id()).expect("found"), key);
        }
        assert!(matches!(
            r.find_need("n000000000000"),
            Err(RecordError::NotFound(_))
        ));
        let o = r.overview().expect("overview");
        assert_eq!((o.households, o.needs), (24, 2));
    }

    /// A county node finds a household that arrived (by sync: here through another writer of
    /// the same store) after its id map was built.
    #[tokio::test]
    async fn a_county_node_finds_a_household_that_arrived_after_its_id_map_was_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            DocStore::open(&dir.path().join("store"), StoreConfig::default()).expect("store");
        let county = AreaScope::parse("510116").expect("scope");
        let r = Records::new(store.clone(), county);
        let other = Records::new(store, county);
        let body = |name: &str| {
            json!({"profile": {"village": "510116108203", "group": 1, "residents": 2,
                "age_18_59": 2}, "private": {"head_name": name}})
        };
        let first = r.create_household("cadre", &body("甲")).await.expect("hh");
        assert!(r.find_household(&first.id).expect("find").is_some());
        let later = other
            .create_household("cadre", &body("乙"))
            .await
            .expect("hh");
        assert_eq!(
            r.find_household(&later.id).expect("find"),
            Some(later.profile_key)
        );
        assert!(r.find_household("h000000000000").expect("find").is_none());
    }

    #[tokio::test]
    async fn a_village_node_finds_records_by_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let h = r
            .create_household_once("cadre", &household(CID, 3))
            .await
            .expect("hh");
        let need = r
            .create_need("cadre", &json!({"requester": "coop", "title": "柑橘技术"}))
            .await
            .expect("need");
        assert_eq!(
            r.find_household(&h.record.id).expect("find"),
            Some(h.record.profile_key)
        );
        assert_eq!(r.find_need(need.key.id()).expect("find"), need.key);
        assert!(r.find_household("h000000000000").expect("find").is_none());
        assert!(r.find_household("../bad id").expect("find").is_none());
        assert!(matches!(
            r.find_need("bad id!"),
            Err(RecordError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_resent_need_create_returns_the_need() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let body = json!({"client_id": CID, "requester": "coop", "title": "柑橘黄龙病防治", "tags": {"plt.citrus": true}});
        let first = r.create_need_once("cadre", &body).await.expect("first");
        assert!(first.created);
        let again = r.create_need_once("cadre", &body).await.expect("again");
        assert!(!again.created);
        assert_eq!(again.record.key, first.record.key);
        assert_eq!(again.record.heads, first.record.heads);
        assert_eq!(count(&r, Kind::Need), 1);
        let mut changed = body.clone();
        changed["title"] = json!("柑橘嫁接");
        assert!(matches!(
            r.create_need_once("cadre", &changed).await,
            Err(RecordError::ClientIdReused { .. })
        ));
        assert_eq!(
            r.get_need(first.record.key.id()).expect("read").need.title,
            "柑橘黄龙病防治"
        );
    }
}
