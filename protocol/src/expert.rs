//! The expert registry (科技所能) and expert suggestions for local needs (`expert`, `match`).
//!
//! This module owns three things:
//!
//! 1. [`Expert`], the typed view of an `expert` document: public information only — name,
//!    organisation, professional title, fields (need tags), regions served and services offered.
//!    Never a personal phone number or ID: people reach an expert through the organisation.
//!    Keyed at the province (`<province>/expert/<id>`), so it flows down to every node.
//! 2. [`suggest_experts`], the pure matcher from a [`LocalNeed`] to experts: shared tags × region
//!    fit (an expert serving the need's county beats one serving the whole province; an expert
//!    whose regions do not contain the need's area is never suggested).
//! 3. [`NeedMatch`], the typed view of a `match` document (`<need area>/match/<need id>`, written
//!    by the hub): the suggested experts with score, shared tags and a zh-CN reason.
//!
//! `expert` fields (JSON = document; multi-selects are `{"id": true}` maps, see [`crate::fields`]):
//!
//! | field | JSON | rule |
//! |---|---|---|
//! | `name` | string | required, ≤ 20 characters, one line (Text) |
//! | `organisation` | string | required, ≤ 40 characters (Text), e.g. `四川省农业科学院` |
//! | `title` | string (default "") | ≤ 20 characters (Text), e.g. `研究员` |
//! | `fields` | `{tag id: true}` | required, 1–[`MAX_FIELDS`] tags |
//! | `regions` | `{prefix: true}` (default {}) | area prefixes served; empty = the whole province |
//! | `services` | `{service id: true}` | required, at least one [`Service`] |
//! | `contact` | string (default "") | ≤ 60 characters, one line (Text): how a village reaches the expert *through the organisation* — a service hotline, a WeChat public account, a studio's address — never a personal phone |
//! | `withdrawn` | bool (default false) | the hub operator removed the expert from the registry: never suggested again, not listed (documents cannot be deleted, so removal is this flag, and it flows down like any change) |

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::ReadDoc;
use serde::Serialize;
use serde_json::Value;

use crate::area::{AreaCode, AreaScope, Level};
use crate::fields::{
    check_schema, code, coded_enum, doc_to_json, serialize_set, write_root, Date, Decoder,
    FieldError, FieldErrors, Mode, Obj, TextRule, ViewError, SCHEMA_VERSION,
};
use crate::matching::region_fit;
use crate::need::LocalNeed;
use crate::taxonomy::Tag;

/// Most fields (tags) per expert.
pub const MAX_FIELDS: usize = 12;
/// Most regions per expert.
pub const MAX_EXPERT_REGIONS: usize = 30;
/// Most suggestions per need.
pub const MAX_SUGGESTIONS: usize = 5;
/// Free-text fields of the expert document, stored as Automerge `Text`.
pub const EXPERT_TEXT_FIELDS: [&str; 4] = ["name", "organisation", "title", "contact"];

coded_enum! {
    /// A service an expert offers.
    pub enum Service {
        Onsite = "onsite", "现场指导";
        Remote = "remote", "远程咨询";
        Training = "training", "培训讲座";
        Testing = "testing", "检测化验";
    }
}

/// An expert of the registry (public information only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expert {
    /// Name.
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Professional title.
    pub title: String,
    /// Fields, as need tags.
    #[serde(serialize_with = "serialize_set")]
    pub fields: BTreeSet<Tag>,
    /// Regions served; empty = the whole province.
    #[serde(serialize_with = "serialize_scopes")]
    pub regions: BTreeSet<AreaScope>,
    /// Services offered.
    #[serde(serialize_with = "serialize_set")]
    pub services: BTreeSet<Service>,
    /// The contact channel the expert published through the organisation (Text), e.g.
    /// `四川省农科院科技服务热线 028-8450xxxx`; never a personal phone.
    pub contact: String,
    /// Removed from the registry by the hub operator: never suggested, not listed.
    pub withdrawn: bool,
}

fn serialize_scopes<S: serde::Serializer>(
    set: &BTreeSet<AreaScope>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(set.len()))?;
    for v in set {
        map.serialize_entry(v.prefix(), &true)?;
    }
    map.end()
}

const NAME: TextRule = TextRule {
    max_chars: 20,
    required: true,
    multiline: false,
};
const ORGANISATION: TextRule = TextRule {
    max_chars: 40,
    required: true,
    multiline: false,
};
const TITLE: TextRule = TextRule {
    max_chars: 20,
    required: false,
    multiline: false,
};
const CONTACT: TextRule = TextRule {
    max_chars: 60,
    required: false,
    multiline: false,
};

fn scopes(
    o: &mut Obj<'_>,
    d: &mut Decoder,
    key: &'static str,
    zh: &str,
) -> Option<BTreeSet<AreaScope>> {
    let path = o.path(key);
    let before = d.count();
    let mut out = BTreeSet::new();
    match o.raw(key) {
        None => {}
        Some(Value::Object(map)) => {
            for (prefix, v) in map {
                if matches!(v, Value::Bool(false) | Value::Null) {
                    continue;
                }
                match AreaScope::parse(prefix) {
                    Ok(s) => {
                        out.insert(s);
                    }
                    Err(e) => d.push(
                        format!("{path}.{prefix}"),
                        code::BAD_FORMAT,
                        format!("{zh}“{prefix}”无效：{e}"),
                    ),
                }
            }
        }
        Some(_) => d.push(
            path.clone(),
            code::WRONG_TYPE,
            format!("{zh}应为对象，如 {{\"5114\": true}}"),
        ),
    }
    if out.len() > MAX_EXPERT_REGIONS && d.mode() == Mode::Input {
        d.push(
            path,
            code::TOO_MANY,
            format!("{zh}最多{MAX_EXPERT_REGIONS}个，现有{}个", out.len()),
        );
    }
    (d.count() == before).then_some(out)
}

impl Expert {
    /// Parses API or operator input, collecting every problem.
    pub fn from_json(value: &Value) -> Result<Expert, FieldErrors> {
        Self::decode(value, Mode::Input)
    }

    /// Checks a value built in code against the same rules as [`Expert::from_json`].
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let json = serde_json::to_value(self).map_err(|e| {
            FieldErrors(vec![FieldError::new(
                "",
                code::WRONG_TYPE,
                format!("内部编码失败：{e}"),
            )])
        })?;
        Self::decode(&json, Mode::Input).map(|_| ())
    }

    /// Reads an `expert` document.
    pub fn read_from<R: ReadDoc>(doc: &R) -> Result<Expert, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        Ok(Self::decode(&json, Mode::Document)?)
    }

    /// Validates, then writes only the fields that differ.
    pub fn write_to<T: Transactable>(&self, tx: &mut T) -> Result<(), ViewError> {
        self.validate()?;
        let desired = serde_json::to_value(self).map_err(|e| ViewError::Encode(e.to_string()))?;
        write_root(tx, &desired, &EXPERT_TEXT_FIELDS)
    }

    fn decode(value: &Value, mode: Mode) -> Result<Expert, FieldErrors> {
        let mut dec = Decoder::new(mode);
        let Some(mut o) = dec.root(value, "专家信息") else {
            return dec.finish(None);
        };
        let d = &mut dec;
        o.schema(d);
        let name = o.text(d, "name", "姓名", NAME);
        let organisation = o.text(d, "organisation", "单位", ORGANISATION);
        let title = o.text(d, "title", "职称", TITLE);
        let fields: Option<BTreeSet<Tag>> = o.set(d, "fields", "专业领域", MAX_FIELDS);
        if mode == Mode::Input && fields.as_ref().is_some_and(BTreeSet::is_empty) {
            d.push("fields", code::REQUIRED, "专业领域至少选一个");
        }
        let regions = scopes(&mut o, d, "regions", "服务地区");
        let services: Option<BTreeSet<Service>> =
            o.set(d, "services", "服务方式", Service::ALL.len());
        if mode == Mode::Input && services.as_ref().is_some_and(BTreeSet::is_empty) {
            d.push("services", code::REQUIRED, "服务方式至少选一项");
        }
        let contact = o.text(d, "contact", "联系方式", CONTACT);
        let withdrawn = o.flag(d, "withdrawn", "已移除");
        o.finish(d);
        let e = (|| {
            Some(Expert {
                name: name?,
                organisation: organisation?,
                title: title?,
                fields: fields?,
                regions: regions?,
                services: services?,
                contact: contact?,
                withdrawn: withdrawn?,
            })
        })();
        dec.finish(e)
    }
}

/// One suggested expert for a need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    /// The score in thousandths.
    pub score: u32,
    /// Tags the need and the expert share.
    #[serde(serialize_with = "serialize_set")]
    pub tags: BTreeSet<Tag>,
    /// Why, in Chinese.
    pub reason: String,
}

/// Up to [`MAX_SUGGESTIONS`] experts for `need`, best first: by shared tags × region fit; ties
/// go to the smaller expert id. Experts whose regions do not contain the need's area, or who share
/// no tag, or who are withdrawn, or whom the village asked to replace
/// ([`LocalNeed::declines`]), are never suggested.
pub fn suggest_experts<'a>(
    need: &LocalNeed,
    experts: impl IntoIterator<Item = (&'a str, &'a Expert)>,
) -> Vec<(String, Suggestion)> {
    let mut out: Vec<(String, Suggestion)> = experts
        .into_iter()
        .filter_map(|(id, e)| {
            if e.withdrawn || need.declines(id) {
                return None;
            }
            let shared: BTreeSet<Tag> = need.tags.intersection(&e.fields).copied().collect();
            if shared.is_empty() {
                return None;
            }
            let regions: Vec<AreaScope> = e.regions.iter().copied().collect();
            let region = region_fit(&regions, &need.area);
            if region == 0.0 {
                return None;
            }
            let score = shared.len() as f32 * region;
            let names: Vec<&str> = shared.iter().map(|t| t.plain_words()).collect();
            let where_ = if e.regions.is_empty() {
                "全省"
            } else {
                "本地"
            };
            Some((
                id.to_string(),
                Suggestion {
                    score: (score * 1000.0).round() as u32,
                    tags: shared,
                    reason: format!("{}{}专家，擅长{}", e.organisation, where_, names.join("、"))
                        .chars()
                        .take(REASON.max_chars)
                        .collect(),
                },
            ))
        })
        .collect();
    out.sort_by(|a, b| b.1.score.cmp(&a.1.score).then(a.0.cmp(&b.0)));
    out.truncate(MAX_SUGGESTIONS);
    out
}

const REASON: TextRule = TextRule {
    max_chars: 100,
    required: false,
    multiline: false,
};

/// The hub's expert suggestions for one local need (a `match` document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeedMatch {
    /// The need's area (as in its key).
    pub area: AreaCode,
    /// The day of the matching.
    pub updated: Date,
    /// Suggestions by expert id.
    pub suggestions: BTreeMap<String, Suggestion>,
}

impl NeedMatch {
    /// Reads a `match` document.
    pub fn read_from<R: ReadDoc>(doc: &R) -> Result<NeedMatch, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        Ok(decode_match(&json, Mode::Document)?)
    }

    /// Validates, then writes only what differs.
    pub fn write_to<T: Transactable>(&self, tx: &mut T) -> Result<(), ViewError> {
        let desired = serde_json::to_value(self).map_err(|e| ViewError::Encode(e.to_string()))?;
        decode_match(&desired, Mode::Input)?;
        write_root(tx, &desired, &[])
    }
}

fn decode_match(value: &Value, mode: Mode) -> Result<NeedMatch, FieldErrors> {
    let mut dec = Decoder::new(mode);
    let Some(mut o) = dec.root(value, "专家匹配") else {
        return dec.finish(None);
    };
    let d = &mut dec;
    o.schema(d);
    let area = o.area(
        d,
        "area",
        "需求所属地区",
        &[Level::County, Level::Township, Level::Village],
    );
    let updated = o.date(d, "updated", "匹配日期");
    if matches!(updated, Some(None)) {
        d.push("updated", code::REQUIRED, "匹配日期为必填项");
    }
    let before = d.count();
    let mut suggestions = BTreeMap::new();
    match o.raw("suggestions") {
        None => {}
        Some(Value::Object(map)) => {
            for (id, v) in map {
                let path = format!("suggestions.{id}");
                if !crate::key::valid_id(id) {
                    d.push(path, code::BAD_FORMAT, format!("专家编号“{id}”无效"));
                    continue;
                }
                let Some(mut e) = d.nested(v, &path) else {
                    continue;
                };
                let score = e
                    .int(d, "score", "匹配得分", 0, i64::from(u32::MAX), Some(0))
                    .and_then(|n| u32::try_from(n).ok());
                let tags: Option<BTreeSet<Tag>> = e.set(d, "tags", "共同领域", usize::MAX);
                let reason = e.text(d, "reason", "推荐理由", REASON);
                e.finish(d);
                if let (Some(score), Some(tags), Some(reason)) = (score, tags, reason) {
                    suggestions.insert(
                        id.clone(),
                        Suggestion {
                            score,
                            tags,
                            reason,
                        },
                    );
                }
            }
        }
        Some(_) => d.push(
            "suggestions",
            code::WRONG_TYPE,
            "专家建议应为以专家编号为键的对象",
        ),
    }
    let suggestions = (d.count() == before).then_some(suggestions);
    o.finish(d);
    let m = (|| {
        Some(NeedMatch {
            area: area?,
            updated: updated??,
            suggestions: suggestions?,
        })
    })();
    dec.finish(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use serde_json::json;

    fn expert(fields: &[&str], regions: &[&str]) -> Expert {
        let fields: serde_json::Map<String, Value> = fields
            .iter()
            .map(|f| (f.to_string(), json!(true)))
            .collect();
        let regions: serde_json::Map<String, Value> = regions
            .iter()
            .map(|f| (f.to_string(), json!(true)))
            .collect();
        Expert::from_json(&json!({"name": "李明", "organisation": "四川省农业科学院",
            "title": "研究员", "fields": fields, "regions": regions,
            "services": {"onsite": true, "remote": true}}))
        .unwrap()
    }

    #[test]
    fn expert_parses_validates_and_round_trips_through_a_document() {
        let e = expert(&["plt.citrus", "plt.pesticide"], &["5114", "511424"]);
        assert_eq!(e.regions.len(), 2);
        let mut doc = AutoCommit::new();
        e.write_to(&mut doc).unwrap();
        assert_eq!(Expert::read_from(&doc).unwrap(), e);
        let errors = Expert::from_json(&json!({"name": "", "organisation": "x",
            "fields": {}, "regions": {"5x": true}, "services": {"fly": true}, "phone": "138"}))
        .unwrap_err();
        for (f, c) in [
            ("name", code::REQUIRED),
            ("fields", code::REQUIRED),
            ("regions.5x", code::BAD_FORMAT),
            ("services.fly", code::UNKNOWN_VALUE),
            ("phone", code::UNKNOWN_FIELD),
        ] {
            assert!(errors.has(f, c), "{f} {c}: {errors:?}");
        }
    }

    #[test]
    fn needs_get_experts_by_shared_tags_and_region() {
        let need = LocalNeed::from_json(&json!({"area": "511424104201", "requester": "coop",
            "title": "柑橘大实蝇防控", "tags": {"plt.citrus": true, "plt.pesticide": true}}))
        .unwrap();
        let local_both = expert(&["plt.citrus", "plt.pesticide"], &["511424"]);
        let province_both = expert(&["plt.citrus", "plt.pesticide"], &[]);
        let local_one = expert(&["plt.citrus"], &["511424"]);
        let elsewhere = expert(&["plt.citrus", "plt.pesticide"], &["5134"]);
        let unrelated = expert(&["liv.pig"], &[]);
        let mut withdrawn = expert(&["plt.citrus", "plt.pesticide"], &["511424"]);
        withdrawn.withdrawn = true;
        let all = [
            ("e0", &withdrawn),
            ("e1", &local_one),
            ("e2", &province_both),
            ("e3", &local_both),
            ("e4", &elsewhere),
            ("e5", &unrelated),
        ];
        let s = suggest_experts(&need, all.iter().map(|(id, e)| (*id, *e)));
        let ids: Vec<&str> = s.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["e3", "e2", "e1"]);
        assert!(s[0].1.reason.contains("四川省农业科学院"));
        let m = NeedMatch {
            area: need.area,
            updated: Date::parse("2026-04-15").unwrap(),
            suggestions: s.into_iter().collect(),
        };
        let mut doc = AutoCommit::new();
        m.write_to(&mut doc).unwrap();
        assert_eq!(NeedMatch::read_from(&doc).unwrap(), m);

        // The village asked for another than the best: the next one moves up, the declined one
        // is never suggested again.
        let mut need = need;
        need.expert_choice
            .insert("e3".into(), crate::need::ExpertChoice::Declined);
        let s = suggest_experts(&need, all.iter().map(|(id, e)| (*id, *e)));
        let ids: Vec<&str> = s.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["e2", "e1"]);
    }

    #[test]
    fn contact_is_one_public_line() {
        let mut e = expert(&["plt.citrus"], &[]);
        e.contact = "四川省农科院科技服务热线 028-84504000".into();
        let mut doc = AutoCommit::new();
        e.write_to(&mut doc).unwrap();
        assert_eq!(Expert::read_from(&doc).unwrap(), e);
        e.contact = "第一行\n第二行".into();
        assert!(e.validate().is_err(), "a contact is one line");
        e.contact = "长".repeat(61);
        assert!(e.validate().is_err());
    }
}
