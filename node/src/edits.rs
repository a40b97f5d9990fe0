//! Edits made offline: applied on a fork at the heads they were based on, then merged.
//!
//! The web app queues every household edit as a JSON merge patch together with the heads of the
//! profile and private documents the cadre saw. Applying it here forks each document at those
//! heads (`Automerge::fork_at`), writes the patched record on the fork as the cadre, and merges
//! the fork back, so the edit merges exactly as a concurrent CRDT peer's change would: fields
//! changed by others since are kept, and where someone else changed the same field, the CRDT
//! picks one value and the outcome lists that field as a resolved conflict (`get_all` sees more
//! than one value).
//!
//! An edit carries a client-chosen `edit_id`, recorded in the change message; sending the same
//! edit again (the acknowledgement was lost) changes nothing.

use automerge::transaction::Transactable;
use automerge::{ChangeHash, ObjId, ObjType, ReadDoc, ROOT};
use cunyun_protocol::fields::{FieldError, FieldErrors};
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::key::Kind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::records::{
    invalid, merge_patch, prefixed, HouseholdParts, HouseholdRecord, RecordError, Records,
};
use cunyun_platform::clock::now_ms;
use cunyun_platform::store::DocWrite;

/// Heads of the two household documents an edit was based on (hex).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaseHeads {
    /// Heads of the profile document.
    #[serde(default)]
    pub profile: Vec<String>,
    /// Heads of the private document.
    #[serde(default)]
    pub private: Vec<String>,
}

/// One queued edit of a household.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineEdit {
    /// Client-chosen id (8–64 letters, digits or `-`), so a resent edit is applied once.
    pub edit_id: String,
    /// The heads the edit was based on.
    pub base: BaseHeads,
    /// `{"profile": merge patch, "private": merge patch}`; either may be absent.
    pub patch: Value,
}

/// A field where this edit and a concurrent one set different values.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Conflict {
    /// JSON path, e.g. `profile.residents`.
    pub field: String,
    /// The value the CRDT kept, as the record now shows it.
    pub kept: Value,
}

/// What applying an edit did.
#[derive(Debug, Clone, Serialize)]
pub struct EditOutcome {
    /// The record after the merge.
    pub record: HouseholdRecord,
    /// Same-field conflicts the merge resolved.
    pub conflicts: Vec<Conflict>,
    /// False when the edit had been applied before (nothing changed this time).
    pub applied: bool,
}

fn parse_heads(part: &str, heads: &[String]) -> Result<Vec<ChangeHash>, RecordError> {
    heads
        .iter()
        .map(|h| {
            h.parse::<ChangeHash>().map_err(|_| {
                invalid(
                    &format!("base.{part}"),
                    "bad_heads",
                    format!("基础版本编号格式错误：{h}"),
                )
            })
        })
        .collect()
}

/// Leaf paths of a merge patch: `{"a": {"b": 1}, "c": null}` → `[["a","b"], ["c"]]`.
fn patch_paths(patch: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match patch {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                prefix.push(k.clone());
                patch_paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// Whether the value at `path` in `doc` has concurrent, different values.
fn conflicted<R: ReadDoc>(doc: &R, path: &[String]) -> bool {
    let mut obj: ObjId = ROOT;
    for (i, seg) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if last {
            let all = doc.get_all(&obj, seg.as_str()).unwrap_or_default();
            if all.len() < 2 {
                return false;
            }
            let first = &all[0].0;
            return all
                .iter()
                .any(|(v, _)| v != first || matches!(v, automerge::Value::Object(ObjType::Map)));
        }
        let all = doc.get_all(&obj, seg.as_str()).unwrap_or_default();
        if all.len() > 1 {
            return true;
        }
        match all.into_iter().next() {
            Some((automerge::Value::Object(_), id)) => obj = id,
            _ => return false,
        }
    }
    false
}

fn json_at(v: &Value, path: &[String]) -> Value {
    path.iter()
        .try_fold(v, |v, seg| v.get(seg))
        .cloned()
        .unwrap_or(Value::Null)
}

fn valid_edit_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// An edit whose shape was checked: its patch parts and the parsed base heads.
#[derive(Debug)]
pub struct CheckedEdit<'a> {
    /// `{"profile": …, "private": …}` (only those keys).
    pub patch: &'a serde_json::Map<String, Value>,
    /// Parsed heads of the profile document the edit was based on.
    pub base_profile: Vec<ChangeHash>,
    /// Parsed heads of the private document the edit was based on.
    pub base_private: Vec<ChangeHash>,
}

impl OfflineEdit {
    /// Most heads per part an edit may name (a document has a handful at most).
    pub const MAX_HEADS: usize = 64;

    /// Checks everything about the edit that needs no document: the edit id, the patch's shape
    /// and the base heads. Pure, so it is fuzzed (`node/fuzz`, target `api_json`).
    pub fn check(&self) -> Result<CheckedEdit<'_>, RecordError> {
        if !valid_edit_id(&self.edit_id) {
            return Err(invalid(
                "edit_id",
                "bad_edit_id",
                "修改编号应为8–64个字母、数字或连字符",
            ));
        }
        let Value::Object(patch) = &self.patch else {
            return Err(RecordError::BadRequest(
                "patch 应为JSON对象：{\"profile\": {…}, \"private\": {…}}".into(),
            ));
        };
        let errs: Vec<FieldError> = patch
            .keys()
            .filter(|k| *k != "profile" && *k != "private")
            .map(|k| FieldError {
                field: format!("patch.{k}"),
                code: "unknown_field",
                message: format!("未知字段“{k}”，只能包含 profile 和 private"),
            })
            .collect();
        if !errs.is_empty() {
            return Err(RecordError::Invalid(FieldErrors(errs)));
        }
        for (part, heads) in [
            ("profile", &self.base.profile),
            ("private", &self.base.private),
        ] {
            if heads.len() > Self::MAX_HEADS {
                return Err(invalid(
                    &format!("base.{part}"),
                    "bad_heads",
                    format!("基础版本编号过多（最多 {} 个）", Self::MAX_HEADS),
                ));
            }
        }
        Ok(CheckedEdit {
            patch,
            base_profile: parse_heads("profile", &self.base.profile)?,
            base_private: parse_heads("private", &self.base.private)?,
        })
    }
}

/// The two parts after applying `patch` to the parts the edit was based on, parsed and
/// validated like any API input; `fill` completes the profile JSON first (the node's village
/// as the default). The village of a household cannot change. Pure, so it is fuzzed.
pub fn patched(
    base_profile: &HouseholdProfile,
    base_private: &HouseholdPrivate,
    patch: &serde_json::Map<String, Value>,
    fill: impl FnOnce(&mut Value),
) -> Result<(HouseholdProfile, HouseholdPrivate), RecordError> {
    let to_json = |v: serde_json::Result<Value>| {
        v.map_err(|e| RecordError::BadRequest(format!("内部序列化失败: {e}")))
    };
    let mut profile_json = to_json(serde_json::to_value(base_profile))?;
    let mut private_json = to_json(serde_json::to_value(base_private))?;
    if let Some(p) = patch.get("profile") {
        merge_patch(&mut profile_json, p);
    }
    if let Some(p) = patch.get("private") {
        merge_patch(&mut private_json, p);
    }
    fill(&mut profile_json);
    let mut errs = Vec::new();
    let profile = HouseholdProfile::from_json(&profile_json)
        .map_err(|e| errs.extend(prefixed("profile", e)))
        .ok();
    let private = HouseholdPrivate::from_json(&private_json)
        .map_err(|e| errs.extend(prefixed("private", e)))
        .ok();
    let (Some(profile), Some(private)) = (profile, private) else {
        return Err(RecordError::Invalid(FieldErrors(errs)));
    };
    if profile.village != base_profile.village {
        return Err(invalid(
            "profile.village",
            "immutable",
            "户所属村不能修改；迁出请删除后在新村重新登记",
        ));
    }
    Ok((profile, private))
}

impl Records {
    /// Applies a queued edit of household `id` as `account`: on a fork of each document at the
    /// edit's base heads, then merged; durable when it returns. Invalid input changes nothing.
    pub async fn apply_household_edit(
        &self,
        account: &str,
        id: &str,
        edit: &OfflineEdit,
    ) -> Result<EditOutcome, RecordError> {
        let CheckedEdit {
            patch,
            base_profile: base_hh,
            base_private: base_hp,
        } = edit.check()?;
        let hh = self
            .find_household(id)?
            .ok_or_else(|| RecordError::NotFound(id.to_string()))?;
        let hp = hh.with_kind(Kind::Hp);
        let _guard = self.lock_for(id).lock().await;
        let mut hh_doc = self.load(&hh)?;
        let mut hp_doc = self
            .store()
            .load(&hp)?
            .unwrap_or_else(automerge::Automerge::new);
        let marker = format!("edit {}", edit.edit_id);
        let seen = |d: &automerge::Automerge| {
            d.get_changes(&[])
                .iter()
                .any(|c| c.message().is_some_and(|m| m.contains(&marker)))
        };
        if seen(&hh_doc) || seen(&hp_doc) {
            let record = self.get_household(id)?;
            return Ok(EditOutcome {
                record,
                conflicts: Vec::new(),
                applied: false,
            });
        }
        let unknown_base = |part: &str| {
            invalid(
                &format!("base.{part}"),
                "unknown_base",
                "本节点没有这次修改所依据的版本（该记录可能来自其他节点且尚未同步），请刷新后重新修改",
            )
        };
        let mut hh_fork = hh_doc
            .fork_at(&base_hh)
            .map_err(|_| unknown_base("profile"))?;
        let mut hp_fork = hp_doc
            .fork_at(&base_hp)
            .map_err(|_| unknown_base("private"))?;

        // Patch and validate both parts as the cadre saw them before writing anything.
        let to_json = |v: serde_json::Result<Value>| {
            v.map_err(|e| RecordError::BadRequest(format!("内部序列化失败: {e}")))
        };
        let base_profile = Self::read_profile(&hh, &hh_fork)?;
        let base_private = if base_hp.is_empty() {
            HouseholdPrivate::default()
        } else {
            Self::read_private(&hp, &hp_fork)?
        };
        let (profile, private) = patched(&base_profile, &base_private, patch, |p| {
            self.default_village(p)
        })?;

        let now = now_ms();
        let message = format!("offline {marker} by {account}");
        let mut writes = Vec::new();
        let mut conflicts = Vec::new();
        let parts: [(
            &_,
            &mut automerge::Automerge,
            &mut automerge::Automerge,
            bool,
        ); 2] = [
            (&hh, &mut hh_doc, &mut hh_fork, true),
            (&hp, &mut hp_doc, &mut hp_fork, false),
        ];
        for (key, doc, fork, is_profile) in parts {
            fork.set_author(Some(Self::author(account)));
            let mut tx = fork.transaction();
            if is_profile {
                profile.write_to(&mut tx)?;
            } else {
                private.write_to(&mut tx)?;
            }
            if tx.pending_ops() == 0 {
                tx.rollback();
                continue;
            }
            tx.commit_with(Self::commit_options(account, "offline edit").with_message(&message));
            let before = doc.get_heads();
            doc.merge(fork)
                .map_err(|e| RecordError::BadRequest(format!("合并失败: {e}")))?;
            let part = if is_profile { "profile" } else { "private" };
            let mut paths = Vec::new();
            if let Some(p) = patch.get(part) {
                patch_paths(p, &mut Vec::new(), &mut paths);
            }
            for path in paths {
                if conflicted(doc, &path) {
                    conflicts.push((part, path));
                }
            }
            writes.push(DocWrite {
                key: key.clone(),
                chunk: doc.save_after(&before),
                heads: doc.get_heads(),
                updated_at_ms: now,
            });
        }
        if !writes.is_empty() {
            self.store().commit_async(writes).await?;
            tracing::info!(
                target: "cunyun::_events::household_edit_merged",
                key = %hh,
                author = account,
                conflicts = conflicts.len()
            );
        }
        let merged_profile = Self::read_profile(&hh, &hh_doc)?;
        let merged_private = Self::read_private(&hp, &hp_doc)?;
        let views = [
            to_json(serde_json::to_value(&merged_profile))?,
            to_json(serde_json::to_value(&merged_private))?,
        ];
        let conflicts = conflicts
            .into_iter()
            .map(|(part, path)| Conflict {
                field: format!("{part}.{}", path.join(".")),
                kept: json_at(&views[usize::from(part == "private")], &path),
            })
            .collect();
        let updated = self.store().entry(&hh)?.map_or(now, |e| e.updated_at_ms);
        let record = self.household_record(
            id,
            HouseholdParts {
                hh,
                hp,
                profile: merged_profile,
                private: merged_private,
            },
            &hh_doc,
            &hp_doc.get_heads(),
            updated,
        );
        Ok(EditOutcome {
            record,
            conflicts,
            applied: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cunyun_platform::store::{DocStore, StoreConfig};
    use cunyun_protocol::area::AreaScope;
    use serde_json::json;

    const VILLAGE: &str = "510116108203";

    fn records(dir: &std::path::Path) -> Records {
        let store = DocStore::open(&dir.join("store"), StoreConfig::default()).expect("store");
        Records::new(store, AreaScope::parse(VILLAGE).expect("scope"))
    }

    async fn household(r: &Records) -> HouseholdRecord {
        r.create_household(
            "creator",
            &json!({
                "profile": {"group": 2, "residents": 4, "age_18_59": 2, "smartphones": 1},
                "private": {"head_name": "李四", "phone": "13800000000", "notes": "门口有狗"}
            }),
        )
        .await
        .expect("create")
    }

    fn edit(id: &str, base: &HouseholdRecord, patch: Value) -> OfflineEdit {
        OfflineEdit {
            edit_id: id.to_string(),
            base: BaseHeads {
                profile: base.heads.clone(),
                private: base.private_heads.clone(),
            },
            patch,
        }
    }

    #[tokio::test]
    async fn concurrent_edits_of_different_fields_both_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let base = household(&r).await;
        let a = r
            .apply_household_edit(
                "cadre-a",
                &base.id,
                &edit("edit-aaaa-1", &base, json!({"profile": {"group": 5}})),
            )
            .await
            .expect("a");
        assert!(a.conflicts.is_empty());
        let b = r
            .apply_household_edit(
                "cadre-b",
                &base.id,
                &edit(
                    "edit-bbbb-1",
                    &base,
                    json!({"profile": {"smartphones": 3}, "private": {"phone": "13900000000"}}),
                ),
            )
            .await
            .expect("b");
        assert!(b.conflicts.is_empty(), "{:?}", b.conflicts);
        let now = r.get_household(&base.id).expect("read");
        assert_eq!(now.profile.group, 5, "a's edit kept");
        assert_eq!(now.profile.smartphones, 3, "b's edit kept");
        assert_eq!(now.private.phone, "13900000000");
        assert_eq!(now.private.head_name, "李四", "untouched fields kept");
        assert_ne!(now.heads, base.heads);
    }

    #[tokio::test]
    async fn same_field_gives_the_crdt_result_and_reports_a_conflict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let base = household(&r).await;
        r.apply_household_edit(
            "cadre-a",
            &base.id,
            &edit("edit-aaaa-2", &base, json!({"profile": {"residents": 5}})),
        )
        .await
        .expect("a");
        let b = r
            .apply_household_edit(
                "cadre-b",
                &base.id,
                &edit("edit-bbbb-2", &base, json!({"profile": {"residents": 6}})),
            )
            .await
            .expect("b");
        assert_eq!(b.conflicts.len(), 1, "{:?}", b.conflicts);
        assert_eq!(b.conflicts[0].field, "profile.residents");
        let now = r.get_household(&base.id).expect("read");
        // The CRDT's choice: the same as a plain Automerge merge of the two changes.
        assert_eq!(b.conflicts[0].kept, json!(now.profile.residents));
        assert!([5, 6].contains(&now.profile.residents));
        let doc = r
            .store()
            .load(&now.profile_key)
            .expect("load")
            .expect("doc");
        let all = doc.get_all(ROOT, "residents").expect("get_all");
        assert_eq!(all.len(), 2, "both values are in the document");
        let winner = doc.get(ROOT, "residents").expect("get").expect("value");
        assert_eq!(
            winner.0.as_i64(),
            Some(i64::from(now.profile.residents)),
            "the record shows the CRDT's winner"
        );
    }

    #[tokio::test]
    async fn a_resent_edit_is_applied_once_and_bad_edits_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = records(dir.path());
        let base = household(&r).await;
        let e = edit(
            "edit-cccc-3",
            &base,
            json!({"private": {"notes": "门口有狗，先打电话"}}),
        );
        let first = r
            .apply_household_edit("cadre-a", &base.id, &e)
            .await
            .expect("first");
        assert!(first.applied);
        let again = r
            .apply_household_edit("cadre-a", &base.id, &e)
            .await
            .expect("again");
        assert!(!again.applied);
        assert_eq!(again.record.private_heads, first.record.private_heads);

        let before = r.get_household(&base.id).expect("read");
        let bad = edit(
            "edit-dddd-4",
            &base,
            json!({"profile": {"group": 0}, "private": {"phone": "123"}}),
        );
        match r.apply_household_edit("cadre-a", &base.id, &bad).await {
            Err(RecordError::Invalid(errs)) => {
                let fields: Vec<_> = errs.0.iter().map(|e| e.field.as_str()).collect();
                assert!(fields.contains(&"profile.group"), "{fields:?}");
                assert!(fields.contains(&"private.phone"), "{fields:?}");
            }
            other => panic!("expected field errors, got {other:?}"),
        }
        let mut unknown = edit("edit-eeee-5", &base, json!({"profile": {"group": 4}}));
        unknown.base.profile = vec!["00".repeat(32)];
        assert!(matches!(
            r.apply_household_edit("cadre-a", &base.id, &unknown).await,
            Err(RecordError::Invalid(_))
        ));
        let after = r.get_household(&base.id).expect("read");
        assert_eq!(after.heads, before.heads, "nothing written");
        assert_eq!(after.private_heads, before.private_heads);
    }

    /// Field values an edit may set in the property test: (key, JSON value).
    fn field_strategy() -> impl proptest::strategy::Strategy<Value = Vec<(&'static str, Value)>> {
        use proptest::prelude::*;
        let group = (1u8..=99).prop_map(|v| ("group", json!(v)));
        let phones = (0u8..=5).prop_map(|v| ("smartphones", json!(v)));
        let tv = any::<bool>().prop_map(|v| ("has_tv", json!(v)));
        let signal = prop::sample::select(vec!["none", "weak", "fair", "good"])
            .prop_map(|v| ("signal", json!(v)));
        (
            prop::option::of(group),
            prop::option::of(phones),
            prop::option::of(tv),
            prop::option::of(signal),
        )
            .prop_map(|(a, b, c, d)| [a, b, c, d].into_iter().flatten().collect())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Two edits at the same base: a field only one of them set has its value; a field both
        /// set to different values is reported as a conflict and holds one of the two.
        #[test]
        fn two_edits_at_one_base_merge_field_by_field(
            a in field_strategy(),
            b in field_strategy(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("tempdir");
                let r = records(dir.path());
                let base = household(&r).await;
                let patch = |f: &[(&str, Value)]| json!({"profile": f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<serde_json::Map<_, _>>()});
                let pa = patch(&a);
                let pb = patch(&b);
                r.apply_household_edit("a", &base.id, &edit("edit-prop-aaaa", &base, pa)).await.expect("a");
                let out = r.apply_household_edit("b", &base.id, &edit("edit-prop-bbbb", &base, pb)).await.expect("b");
                let now = serde_json::to_value(&r.get_household(&base.id).expect("read").profile).expect("json");
                let reported: Vec<&str> = out.conflicts.iter().map(|c| c.field.as_str()).collect();
                for (k, va) in &a {
                    match b.iter().find(|(kb, _)| kb == k) {
                        None => assert_eq!(&now[*k], va, "{k}: only a set it"),
                        Some((_, vb)) if vb == va => {
                            assert_eq!(&now[*k], va);
                            assert!(!reported.contains(&format!("profile.{k}").as_str()));
                        }
                        Some((_, vb)) => {
                            assert!(&now[*k] == va || &now[*k] == vb, "{k}: one of the two");
                            // A conflict is reported unless one side set the base value (then
                            // it wrote nothing and the other's value simply wins).
                            let was = serde_json::to_value(&base.profile).expect("json")[*k].clone();
                            if &was != va && &was != vb {
                                assert!(reported.contains(&format!("profile.{k}").as_str()), "{k} {reported:?}");
                            } else {
                                let changed = if &was == va { vb } else { va };
                                assert_eq!(&now[*k], changed, "{k}: the one that changed it");
                            }
                        }
                    }
                }
                for (k, vb) in &b {
                    if !a.iter().any(|(ka, _)| ka == k) {
                        assert_eq!(&now[*k], vb, "{k}: only b set it");
                    }
                }
            });
        }
    }
}
