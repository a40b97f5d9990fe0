//! Document keys `<area>/<kind>/<id>`, document kinds and each kind's reach.
//!
//! A [`DocKey`] orders by its string form. Because the 12-digit area code comes first and has a
//! fixed width, every key inside an [`AreaScope`] lies in one contiguous range
//! ([`AreaScope::key_range`]), so a node can list or reconcile a scope with a single range scan.
//!
//! A kind's [`Reach`] says how far up the hierarchy a document of that kind may travel and whether
//! a document keyed at a higher area is handed down to every node below it (content manifests and
//! the expert registry are keyed at the province and reach every village).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::area::{AreaCode, AreaError, AreaScope, AREA_CODE_LEN};

/// Longest document id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Longest document key, in bytes: area, two slashes, the longest kind, the longest id.
pub const MAX_KEY_LEN: usize = AREA_CODE_LEN + 2 + 7 + MAX_ID_LEN;

/// The kinds of document cunyun stores and syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Household profile: pseudonymous, non-sensitive; reaches the hub.
    Hh,
    /// Household private: name, phone, roster number, notes, health interests; county at most.
    Hp,
    /// Local science-and-technology need (科技所需) of a village, cooperative or firm.
    Need,
    /// Recommendations for one household, written by the hub.
    Rec,
    /// Feedback on recommendations: delivered, viewed, helpful.
    Fb,
    /// Content manifest, signed by the hub.
    Content,
    /// Expert capability (科技所能), public fields only.
    Expert,
    /// The hub's expert suggestions for a local need.
    Match,
    /// A household deletion (tombstone), keyed `<village>/del/<household id>`: no personal
    /// data; wherever it arrives the household's `hh`, `hp`, `rec` and `fb` are removed and
    /// refused from then on ([`crate::deletion`]).
    Del,
    /// A revocation list signed by a CA (province root or county CA), keyed at the province
    /// area with the issuer's node id as its id, so it reaches every node of the province.
    Rev,
}

/// Which kinds of node may hold a document, from the smallest scope up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A village committee node.
    Village,
    /// A laptop carrying data between villages and their county (a data mule).
    Mule,
    /// A county science association node.
    County,
    /// The provincial hub.
    Hub,
}

impl Role {
    /// The role's name in configuration, certificates and mDNS records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Village => "village",
            Role::Mule => "mule",
            Role::County => "county",
            Role::Hub => "hub",
        }
    }

    /// What a page shows for the role: `村级节点`, `数据摆渡`, `县级节点`, `省级枢纽`.
    pub const fn zh_name(self) -> &'static str {
        match self {
            Role::Village => "村级节点",
            Role::Mule => "数据摆渡",
            Role::County => "县级节点",
            Role::Hub => "省级枢纽",
        }
    }

    /// Parses a role name (`village`, `mule`, `county`, `hub`).
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Village, Role::Mule, Role::County, Role::Hub]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// How far a kind of document may travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The highest role that may hold a document of this kind.
    pub up_to: Role,
    /// Whether a document keyed at an area is also held by every node whose scope lies inside
    /// that area (province-wide content and the expert registry flow down to every village).
    pub flows_down: bool,
}

impl Kind {
    /// Every kind, in key order.
    pub const ALL: [Kind; 10] = [
        Kind::Content,
        Kind::Del,
        Kind::Expert,
        Kind::Fb,
        Kind::Hh,
        Kind::Hp,
        Kind::Match,
        Kind::Need,
        Kind::Rec,
        Kind::Rev,
    ];

    /// The kind's name as it appears in keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Hh => "hh",
            Kind::Hp => "hp",
            Kind::Need => "need",
            Kind::Rec => "rec",
            Kind::Fb => "fb",
            Kind::Content => "content",
            Kind::Expert => "expert",
            Kind::Match => "match",
            Kind::Rev => "rev",
            Kind::Del => "del",
        }
    }

    /// How far documents of this kind may travel (design §3).
    pub const fn reach(self) -> Reach {
        match self {
            // Personal data stays in the county: PIPL, design §3.
            Kind::Hp => Reach {
                up_to: Role::County,
                flows_down: false,
            },
            // A tombstone goes wherever the household's `hh`, `rec` and `fb` went.
            Kind::Hh | Kind::Need | Kind::Fb | Kind::Rec | Kind::Match | Kind::Del => Reach {
                up_to: Role::Hub,
                flows_down: false,
            },
            Kind::Content | Kind::Expert | Kind::Rev => Reach {
                up_to: Role::Hub,
                flows_down: true,
            },
        }
    }

    /// Whether a node of `role` may hold documents of this kind at all.
    pub fn may_be_held_by(self, role: Role) -> bool {
        match self.reach().up_to {
            Role::Hub => true,
            // A mule only carries between villages and their county, so it may hold what a
            // county may hold.
            Role::County | Role::Mule => role != Role::Hub,
            Role::Village => role == Role::Village,
        }
    }

    /// Whether a node with `scope` and `role` may hold the document `key` of this kind.
    pub fn in_reach(self, key_area: &AreaCode, scope: &AreaScope, role: Role) -> bool {
        if !self.may_be_held_by(role) {
            return false;
        }
        scope.contains(key_area) || (self.reach().flows_down && key_area.contains(&scope.area()))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| KeyError::UnknownKind(s.chars().take(16).collect()))
    }
}

/// Why a string is not a document key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not three `/`-separated parts.
    #[error("文档键应为“区划代码/类型/编号” (document key must be <area>/<kind>/<id>)")]
    Shape,
    /// The area part is not a valid area code.
    #[error("文档键的区划代码无效：{0}")]
    Area(#[from] AreaError),
    /// The kind part names no known kind.
    #[error("未知的文档类型“{0}” (unknown document kind {0:?})")]
    UnknownKind(String),
    /// The id is empty, too long or uses characters outside `[A-Za-z0-9_-]`.
    #[error("文档编号应为1到64位字母、数字、-或_ (document id must be 1 to 64 of [A-Za-z0-9_-])")]
    BadId,
}

/// A document's identity: the area it belongs to, its kind and an id unique within both.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    area: AreaCode,
    kind: Kind,
    id: String,
}

/// Whether `id` is a valid document id: 1–64 of `[A-Za-z0-9_-]`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl DocKey {
    /// Builds a key, checking the id.
    pub fn new(area: AreaCode, kind: Kind, id: impl Into<String>) -> Result<DocKey, KeyError> {
        let id = id.into();
        if !valid_id(&id) {
            return Err(KeyError::BadId);
        }
        Ok(DocKey { area, kind, id })
    }

    /// Parses `<area>/<kind>/<id>`.
    pub fn parse(s: &str) -> Result<DocKey, KeyError> {
        let mut parts = s.split('/');
        let (Some(area), Some(kind), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Shape);
        };
        DocKey::new(AreaCode::parse(area)?, kind.parse()?, id)
    }

    /// Parses a key from its stored bytes.
    pub fn from_bytes(b: &[u8]) -> Result<DocKey, KeyError> {
        std::str::from_utf8(b)
            .map_err(|_| KeyError::Shape)
            .and_then(DocKey::parse)
    }

    /// The area the document belongs to.
    pub fn area(&self) -> &AreaCode {
        &self.area
    }

    /// The document's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The id, unique within area and kind.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key with the same area and id but another kind (e.g. a household's `hp` from its `hh`).
    pub fn with_kind(&self, kind: Kind) -> DocKey {
        DocKey {
            area: self.area,
            kind,
            id: self.id.clone(),
        }
    }

    /// The key as stored and sorted: its string form in UTF-8 (always ASCII).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.area, self.kind, self.id)
    }
}

impl fmt::Debug for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocKey({self})")
    }
}

impl PartialOrd for DocKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DocKey {
    /// The order of the keys' string forms, so the in-memory order is the on-disk order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.area
            .cmp(&other.area)
            .then_with(|| self.kind.as_str().cmp(other.kind.as_str()))
            .then_with(|| {
                // `/` never appears inside an id, so comparing ids compares the rest of the key.
                self.id.as_bytes().cmp(other.id.as_bytes())
            })
    }
}

impl FromStr for DocKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DocKey::parse(s)
    }
}

impl Serialize for DocKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DocKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DocKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::area::tests::arb_area;
    use proptest::prelude::*;

    fn arb_kind() -> impl Strategy<Value = Kind> {
        proptest::sample::select(Kind::ALL.to_vec())
    }

    fn arb_key() -> impl Strategy<Value = DocKey> {
        (arb_area(), arb_kind(), "[A-Za-z0-9_-]{1,64}")
            .prop_map(|(a, k, id)| DocKey::new(a, k, id).expect("valid id"))
    }

    #[test]
    fn parse_and_display() {
        let k = DocKey::parse("510122104201/hh/h-0001").expect("key");
        assert_eq!(k.area().to_string(), "510122104201");
        assert_eq!(k.kind(), Kind::Hh);
        assert_eq!(k.id(), "h-0001");
        assert_eq!(k.to_string(), "510122104201/hh/h-0001");
        assert_eq!(k.with_kind(Kind::Hp).to_string(), "510122104201/hp/h-0001");
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(DocKey::parse("510122104201/hh"), Err(KeyError::Shape));
        assert_eq!(DocKey::parse("510122104201/hh/a/b"), Err(KeyError::Shape));
        assert_eq!(
            DocKey::parse("510122104201/xx/a"),
            Err(KeyError::UnknownKind("xx".into()))
        );
        assert_eq!(DocKey::parse("510122104201/hh/"), Err(KeyError::BadId));
        assert_eq!(DocKey::parse("510122104201/hh/a b"), Err(KeyError::BadId));
        assert_eq!(DocKey::parse("510122104201/hh/../x"), Err(KeyError::Shape));
        assert!(matches!(
            DocKey::parse("51012210420/hh/a"),
            Err(KeyError::Area(AreaError::Length(11)))
        ));
        let long = format!("510122104201/hh/{}", "a".repeat(65));
        assert_eq!(DocKey::parse(&long), Err(KeyError::BadId));
    }

    #[test]
    fn role_names_round_trip() {
        for r in [Role::Village, Role::Mule, Role::County, Role::Hub] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("king"), None);
    }

    #[test]
    fn reach_follows_the_design() {
        let village = AreaCode::parse("510122104201").expect("v");
        let other_village = AreaCode::parse("510122104202").expect("v");
        let province = AreaCode::parse("510000000000").expect("p");
        let vscope = village.scope();
        // hp never reaches the hub, whatever the scope.
        assert!(!Kind::Hp.in_reach(&village, &AreaScope::parse("51").expect("s"), Role::Hub));
        assert!(Kind::Hp.in_reach(
            &village,
            &AreaScope::parse("510122").expect("s"),
            Role::County
        ));
        assert!(Kind::Hh.in_reach(&village, &AreaScope::parse("51").expect("s"), Role::Hub));
        // A village holds its own documents, not its neighbour's.
        assert!(Kind::Hh.in_reach(&village, &vscope, Role::Village));
        assert!(!Kind::Hh.in_reach(&other_village, &vscope, Role::Village));
        // Province-wide content and experts flow down; province-keyed households do not.
        assert!(Kind::Content.in_reach(&province, &vscope, Role::Village));
        assert!(Kind::Expert.in_reach(&province, &vscope, Role::Village));
        assert!(!Kind::Hh.in_reach(&province, &vscope, Role::Village));
    }

    proptest! {
        #[test]
        fn round_trip(k in arb_key()) {
            prop_assert_eq!(DocKey::parse(&k.to_string()), Ok(k.clone()));
            prop_assert_eq!(DocKey::from_bytes(&k.to_bytes()), Ok(k.clone()));
            let json = serde_json::to_string(&k).expect("json");
            prop_assert_eq!(serde_json::from_str::<DocKey>(&json).expect("back"), k);
        }

        #[test]
        fn order_is_byte_order(a in arb_key(), b in arb_key()) {
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
        }

        #[test]
        fn scope_range_is_exactly_containment(a in arb_key(), area in arb_area()) {
            let scope = area.scope();
            let (start, end) = scope.key_range();
            let bytes = a.to_bytes();
            let in_range = bytes >= start && bytes < end;
            prop_assert_eq!(in_range, scope.contains(a.area()));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,100}") {
            let _ = DocKey::parse(&s);
        }
    }
}
