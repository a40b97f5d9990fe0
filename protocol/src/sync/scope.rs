//! The shared scope of two peers: which documents both may hold, so which ones a session
//! reconciles.
//!
//! This module owns that rule. A document is shared when its kind is in reach of **both** peers
//! ([`Kind::in_reach`] with each peer's authenticated scope and role): inside both scopes, or
//! keyed at a common ancestor area for kinds that flow down (content, experts). So `hp` never
//! reaches a hub, one village never sees another village's households, and province content
//! reaches every village. [`SharedScope::key_ranges`] lists the key ranges a store scans to
//! enumerate it without reading anything else.

use std::collections::BTreeSet;

use crate::area::{AreaCode, AreaScope, Level};
use crate::identity::NodeIdentity;
use crate::key::{DocKey, Kind, Role};

/// One side of a pairing: the scope and role its certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reach {
    /// The node's scope.
    pub scope: AreaScope,
    /// The node's role.
    pub role: Role,
}

impl From<&NodeIdentity> for Reach {
    fn from(id: &NodeIdentity) -> Reach {
        Reach {
            scope: id.scope,
            role: id.role,
        }
    }
}

impl Reach {
    /// Whether a node with this reach sits above the county: the hub, or any scope wider than
    /// one county. Sensitive household content (see
    /// [`crate::household::sensitive_in_profile`]) is never sent to such a node, and such a
    /// node refuses it on receipt.
    pub fn above_county(&self) -> bool {
        self.role == Role::Hub || self.scope.level() < Level::County
    }
}

/// The documents two peers may both hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedScope {
    // Kept in a canonical order so both peers build the same value.
    a: Reach,
    b: Reach,
}

fn role_code(r: Role) -> u8 {
    match r {
        Role::Village => 0,
        Role::Mule => 1,
        Role::County => 2,
        Role::Hub => 3,
    }
}

impl SharedScope {
    /// The shared scope of two peers (symmetric: `new(x, y) == new(y, x)`).
    pub fn new(mine: Reach, theirs: Reach) -> SharedScope {
        let (a, b) = if (mine.scope, role_code(mine.role)) <= (theirs.scope, role_code(theirs.role))
        {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        SharedScope { a, b }
    }

    /// The shared scope of two identities.
    pub fn between(mine: &NodeIdentity, theirs: &NodeIdentity) -> SharedScope {
        SharedScope::new(mine.into(), theirs.into())
    }

    /// Whether a document of `kind` keyed at `area` is shared.
    pub fn contains_area(&self, kind: Kind, area: &AreaCode) -> bool {
        kind.in_reach(area, &self.a.scope, self.a.role)
            && kind.in_reach(area, &self.b.scope, self.b.role)
    }

    /// Whether `key` is shared: both peers may hold it.
    pub fn contains(&self, key: &DocKey) -> bool {
        self.contains_area(key.kind(), key.area())
    }

    /// Whether a node with `reach` may hold `key` at all (used to say why a key was refused).
    pub fn may_hold(reach: Reach, key: &DocKey) -> bool {
        key.kind().in_reach(key.area(), &reach.scope, reach.role)
    }

    /// A stable 64-bit id of this shared scope, for keying persisted watermarks: a watermark is
    /// only valid for the scope it was earned over.
    pub fn id(&self) -> u64 {
        let mut h = blake3::Hasher::new_derive_key("cunyun shared scope id v1");
        for r in [self.a, self.b] {
            h.update(r.scope.prefix().as_bytes());
            h.update(&[b'/', role_code(r.role), b';']);
        }
        let mut out = [0u8; 8];
        out.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_be_bytes(out)
    }

    /// The half-open byte ranges `[start, end)` of document keys that can be shared, sorted and
    /// disjoint. Every shared key lies in one of them; a store scans them and keeps the keys for
    /// which [`SharedScope::contains`] holds.
    ///
    /// They are the subtree of the intersection of the two scopes (if any), plus, for kinds that
    /// flow down, the keys of exactly each ancestor area of either scope.
    pub fn key_ranges(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let inter = self.a.scope.intersect(&self.b.scope);
        let mut ranges = Vec::new();
        if let Some(i) = inter {
            ranges.push(i.key_range());
        }
        // Exact ancestor areas (including the scopes' own areas) outside the intersection.
        let mut exact: BTreeSet<AreaCode> = BTreeSet::new();
        for s in [self.a.scope, self.b.scope] {
            let area = s.area();
            for level in Level::ALL {
                if let Some(anc) = area.ancestor(level) {
                    let inside = inter.is_some_and(|i| i.contains(&anc));
                    let any_kind = Kind::ALL.iter().any(|k| self.contains_area(*k, &anc));
                    if !inside && any_kind {
                        exact.insert(anc);
                    }
                }
            }
        }
        for area in exact {
            // Keys of exactly `area` start with its 12 digits and `/`; `0` sorts right after `/`.
            let mut start = area.as_bytes().to_vec();
            let mut end = start.clone();
            start.push(b'/');
            end.push(b'0');
            ranges.push((start, end));
        }
        ranges.sort();
        ranges
    }

    /// The two sides, in canonical order.
    pub fn sides(&self) -> (Reach, Reach) {
        (self.a, self.b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(scope: &str, role: Role) -> Reach {
        Reach {
            scope: AreaScope::parse(scope).expect("scope"),
            role,
        }
    }

    fn key(s: &str) -> DocKey {
        DocKey::parse(s).expect("key")
    }

    fn in_ranges(ranges: &[(Vec<u8>, Vec<u8>)], k: &DocKey) -> bool {
        let b = k.to_bytes();
        ranges.iter().any(|(s, e)| &b >= s && &b < e)
    }

    #[test]
    fn follows_reach_for_both_sides() {
        let village = reach("510122104201", Role::Village);
        let county = reach("510122", Role::County);
        let hub = reach("51", Role::Hub);
        let other_village = reach("510122104202", Role::Village);

        let vc = SharedScope::new(village, county);
        assert_eq!(vc, SharedScope::new(county, village), "symmetric");
        assert_eq!(vc.id(), SharedScope::new(county, village).id());
        assert!(vc.contains(&key("510122104201/hh/h1")));
        assert!(vc.contains(&key("510122104201/hp/h1")));
        assert!(
            !vc.contains(&key("510122104202/hh/h1")),
            "neighbour's household"
        );
        assert!(
            vc.contains(&key("510000000000/content/c1")),
            "content flows down"
        );
        assert!(vc.contains(&key("510122000000/expert/e1")));
        assert!(
            !vc.contains(&key("510000000000/hh/x")),
            "households do not flow"
        );

        let ch = SharedScope::new(county, hub);
        assert!(ch.contains(&key("510122104201/hh/h1")));
        assert!(
            !ch.contains(&key("510122104201/hp/h1")),
            "hp never to the hub"
        );

        let vv = SharedScope::new(village, other_village);
        assert!(!vv.contains(&key("510122104201/hh/h1")));
        assert!(vv.contains(&key("510000000000/content/c1")));
        assert!(
            vv.contains(&key("510122104000/content/c1")),
            "township content"
        );
        assert!(
            !vv.contains(&key("510122104201/content/c1")),
            "village-level content"
        );
        assert_ne!(vv.id(), vc.id());
    }

    #[test]
    fn key_ranges_cover_exactly_what_is_shared() {
        let village = reach("510122104201", Role::Village);
        let county = reach("510122", Role::County);
        let hub = reach("51", Role::Hub);
        let other = reach("510122104202", Role::Village);
        let keys = [
            "510000000000/content/a",
            "510000000000/hh/a",
            "510100000000/content/a",
            "510122000000/expert/a",
            "510122104000/content/a",
            "510122104000/hh/a",
            "510122104201/hh/a",
            "510122104201/hp/a",
            "510122104201/rec/a",
            "510122104202/hh/a",
            "510122104202/content/a",
            "510123000000/content/a",
            "520000000000/content/a",
        ];
        for (x, y) in [
            (village, county),
            (county, hub),
            (village, hub),
            (village, other),
        ] {
            let s = SharedScope::new(x, y);
            let ranges = s.key_ranges();
            for w in ranges.windows(2) {
                assert!(w[0].1 <= w[1].0, "sorted and disjoint: {ranges:?}");
            }
            for k in keys.map(key) {
                if s.contains(&k) {
                    assert!(in_ranges(&ranges, &k), "{k} shared but not in {ranges:?}");
                }
            }
        }
    }
}
