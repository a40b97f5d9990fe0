//! Household deletion on request: the tombstone document (`del`) and which documents it removes.
//!
//! A household that withdraws (or was recorded by mistake) is deleted by writing a tombstone,
//! keyed `<village>/del/<household id>` — the same village and id as its `hh`, `hp`, `rec` and
//! `fb` documents, so it reaches every node those reached ([`Kind::Del`] has the reach of `hh`).
//! Wherever a tombstone is written or received, the node removes the documents
//! [`removed_by`] names and refuses them from then on ([`tombstone_for`]): a peer that has not
//! heard of the deletion cannot bring the household back. The tombstone itself carries no
//! personal data and is never removed.
//!
//! | field | JSON | Automerge | rule |
//! |---|---|---|---|
//! | `schema` | integer | Int | [`SCHEMA_VERSION`] |
//! | `village` | string, 12 digits | scalar string | village level; equals the key's area |
//! | `household` | string | scalar string | the household id; equals the key's id |
//! | `date` | `YYYY-MM-DD` | scalar string | the day of the deletion |
//! | `reason` | [`DeletionReason`] id | scalar string | why |
//! | `by` | string ≤ 32 | scalar string | the account that deleted it (a cadre or operator name) |

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ScalarValue, ROOT};
use serde_json::Value;

use crate::area::{AreaCode, Level};
use crate::fields::{
    check_schema, code, doc_to_json, Date, FieldError, FieldErrors, ViewError, SCHEMA_VERSION,
};
use crate::key::{valid_id, DocKey, KeyError, Kind};

/// The kinds keyed by a household id (`<village>/<kind>/<household id>`) that a tombstone
/// removes.
pub const REMOVED_KINDS: [Kind; 4] = [Kind::Hh, Kind::Hp, Kind::Rec, Kind::Fb];

/// Longest `by` (account name), in characters.
pub const MAX_BY_CHARS: usize = 32;

/// Why a household was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    /// The household withdrew its consent (本人撤回同意).
    Withdrawn,
    /// The household moved away (迁出); it is recorded again in its new village.
    Moved,
    /// The household was recorded twice (重复登记).
    Duplicate,
    /// Recorded by mistake (误录).
    Mistake,
    /// Any other reason (其他).
    Other,
}

impl DeletionReason {
    /// Every reason.
    pub const ALL: [DeletionReason; 5] = [
        DeletionReason::Withdrawn,
        DeletionReason::Moved,
        DeletionReason::Duplicate,
        DeletionReason::Mistake,
        DeletionReason::Other,
    ];

    /// The id used in documents, JSON and the CLI.
    pub const fn id(self) -> &'static str {
        match self {
            DeletionReason::Withdrawn => "withdrawn",
            DeletionReason::Moved => "moved",
            DeletionReason::Duplicate => "duplicate",
            DeletionReason::Mistake => "mistake",
            DeletionReason::Other => "other",
        }
    }

    /// The name shown to people.
    pub const fn zh_name(self) -> &'static str {
        match self {
            DeletionReason::Withdrawn => "本人撤回同意",
            DeletionReason::Moved => "迁出本村",
            DeletionReason::Duplicate => "重复登记",
            DeletionReason::Mistake => "误录",
            DeletionReason::Other => "其他",
        }
    }

    /// The reason with this id.
    pub fn parse(id: &str) -> Option<DeletionReason> {
        DeletionReason::ALL.into_iter().find(|r| r.id() == id)
    }
}

/// A household deletion (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The household's village.
    pub village: AreaCode,
    /// The household id.
    pub household: String,
    /// The day of the deletion.
    pub date: Date,
    /// Why.
    pub reason: DeletionReason,
    /// Who deleted it (an account name).
    pub by: String,
}

impl Tombstone {
    /// A tombstone, checking the village level, the id and `by`.
    pub fn new(
        village: AreaCode,
        household: &str,
        date: Date,
        reason: DeletionReason,
        by: &str,
    ) -> Result<Tombstone, FieldErrors> {
        let mut errs = Vec::new();
        if village.level() != Level::Village {
            errs.push(FieldError::new(
                "village",
                code::WRONG_LEVEL,
                "所属村应为12位村级区划代码",
            ));
        }
        if !valid_id(household) {
            errs.push(FieldError::new(
                "household",
                code::BAD_FORMAT,
                "农户编号应为1到64位字母、数字、-或_",
            ));
        }
        if by.is_empty() || by.chars().count() > MAX_BY_CHARS || by.chars().any(char::is_control) {
            errs.push(FieldError::new(
                "by",
                code::BAD_FORMAT,
                "删除人应为1到32个字符的账号名",
            ));
        }
        if !errs.is_empty() {
            return Err(FieldErrors(errs));
        }
        Ok(Tombstone {
            village,
            household: household.to_string(),
            date,
            reason,
            by: by.to_string(),
        })
    }

    /// The tombstone's key, `<village>/del/<household>`.
    pub fn key(&self) -> Result<DocKey, KeyError> {
        DocKey::new(self.village, Kind::Del, self.household.clone())
    }

    /// Writes the tombstone into an (empty or equal) document.
    pub fn write_to<T: Transactable>(&self, doc: &mut T) -> Result<(), ViewError> {
        doc.put(ROOT, "schema", ScalarValue::Int(SCHEMA_VERSION))?;
        doc.put(ROOT, "village", self.village.as_str())?;
        doc.put(ROOT, "household", self.household.as_str())?;
        doc.put(ROOT, "date", self.date.to_string())?;
        doc.put(ROOT, "reason", self.reason.id())?;
        doc.put(ROOT, "by", self.by.as_str())?;
        Ok(())
    }

    /// Reads a tombstone, checking it against its key (village and id).
    pub fn read_from<R: ReadDoc>(doc: &R, key: &DocKey) -> Result<Tombstone, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        let field = |name: &str| json.get(name).and_then(Value::as_str);
        let mut errs = Vec::new();
        let mut bad = |f: &'static str, zh: &str| {
            errs.push(FieldError::new(
                f,
                code::BAD_FORMAT,
                format!("{zh}无效或缺失"),
            ))
        };
        let village = field("village").and_then(|v| AreaCode::parse(v).ok());
        if village.as_ref() != Some(key.area()) {
            bad("village", "所属村");
        }
        if field("household") != Some(key.id()) {
            bad("household", "农户编号");
        }
        let date = field("date").and_then(Date::parse);
        if date.is_none() {
            bad("date", "删除日期");
        }
        let reason = field("reason").and_then(DeletionReason::parse);
        if reason.is_none() {
            bad("reason", "删除原因");
        }
        let by = field("by").unwrap_or_default();
        match (village, date, reason) {
            (Some(v), Some(d), Some(r)) if errs.is_empty() => {
                Ok(Tombstone::new(v, key.id(), d, r, by)?)
            }
            _ => Err(ViewError::Invalid(FieldErrors(errs))),
        }
    }
}

/// The documents the tombstone `del` removes: the household's documents of every
/// [`REMOVED_KINDS`] kind. Empty if `del` is not a tombstone key.
pub fn removed_by(del: &DocKey) -> Vec<DocKey> {
    if del.kind() != Kind::Del {
        return Vec::new();
    }
    REMOVED_KINDS.iter().map(|k| del.with_kind(*k)).collect()
}

/// The tombstone that would remove `key`, if `key` is of a household-keyed kind.
pub fn tombstone_for(key: &DocKey) -> Option<DocKey> {
    REMOVED_KINDS
        .contains(&key.kind())
        .then(|| key.with_kind(Kind::Del))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use proptest::prelude::*;

    fn key() -> DocKey {
        DocKey::parse("510122104201/del/h-0042").unwrap()
    }

    fn sample(reason: DeletionReason) -> Tombstone {
        Tombstone::new(
            AreaCode::parse("510122104201").unwrap(),
            "h-0042",
            Date::parse("2026-12-01").unwrap(),
            reason,
            "王书记",
        )
        .unwrap()
    }

    #[test]
    fn removes_exactly_the_households_documents() {
        let removed: Vec<String> = removed_by(&key()).iter().map(ToString::to_string).collect();
        assert_eq!(
            removed,
            [
                "510122104201/hh/h-0042",
                "510122104201/hp/h-0042",
                "510122104201/rec/h-0042",
                "510122104201/fb/h-0042"
            ]
        );
        for k in removed_by(&key()) {
            assert_eq!(tombstone_for(&k), Some(key()));
        }
        let need = DocKey::parse("510122104201/need/h-0042").unwrap();
        assert_eq!(tombstone_for(&need), None);
        assert!(removed_by(&need).is_empty());
        // The tombstone goes wherever the household's profile goes.
        assert_eq!(Kind::Del.reach(), Kind::Hh.reach());
    }

    #[test]
    fn refuses_bad_tombstones() {
        let v = AreaCode::parse("510122104201").unwrap();
        let county = AreaCode::parse("510122000000").unwrap();
        let d = Date::parse("2026-12-01").unwrap();
        let r = DeletionReason::Other;
        assert!(Tombstone::new(county, "h1", d, r, "a").is_err());
        assert!(Tombstone::new(v, "h/1", d, r, "a").is_err());
        assert!(Tombstone::new(v, "h1", d, r, "").is_err());
        assert!(Tombstone::new(v, "h1", d, r, &"x".repeat(33)).is_err());
        // A document for another household than its key says is refused.
        let mut doc = AutoCommit::new();
        sample(r).write_to(&mut doc).unwrap();
        let other = DocKey::parse("510122104201/del/h-9").unwrap();
        assert!(Tombstone::read_from(&doc, &other).is_err());
        assert!(Tombstone::read_from(&AutoCommit::new(), &key()).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(i in 0usize..5) {
            let t = sample(DeletionReason::ALL[i]);
            let mut doc = AutoCommit::new();
            t.write_to(&mut doc).unwrap();
            let bytes = doc.save();
            let loaded = AutoCommit::load(&bytes).unwrap();
            prop_assert_eq!(Tombstone::read_from(&loaded, &key()).unwrap(), t);
            prop_assert_eq!(DeletionReason::parse(DeletionReason::ALL[i].id()), Some(DeletionReason::ALL[i]));
        }
    }
}
