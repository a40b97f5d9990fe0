//! Area codes (统计用区划代码) and area scopes.
//!
//! An [`AreaCode`] is the 12-digit statistical division code, e.g. `510122104201`:
//! province (digits 1–2), prefecture (3–4), county (5–6), township (7–9), village (10–12).
//! A code's [`Level`] is the deepest non-zero part; the parts below it are zero.
//!
//! An [`AreaScope`] is a code prefix of 2, 4, 6, 9 or 12 digits. It is what a node's identity
//! carries: everything whose area code starts with the prefix is inside the scope. Because area
//! codes are fixed-width and lead every document key, a scope is one contiguous key range
//! (see [`crate::key`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Number of digits in a full area code.
pub const AREA_CODE_LEN: usize = 12;

/// Administrative level of an area code, from the province down to the village.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// 省 — two digits used.
    Province,
    /// 市/州 — four digits used.
    Prefecture,
    /// 县/区/市 — six digits used.
    County,
    /// 乡/镇/街道 — nine digits used.
    Township,
    /// 村/社区 — all twelve digits used.
    Village,
}

impl Level {
    /// All levels, from the top down.
    pub const ALL: [Level; 5] = [
        Level::Province,
        Level::Prefecture,
        Level::County,
        Level::Township,
        Level::Village,
    ];

    /// How many leading digits of the code this level uses.
    pub const fn prefix_len(self) -> usize {
        match self {
            Level::Province => 2,
            Level::Prefecture => 4,
            Level::County => 6,
            Level::Township => 9,
            Level::Village => 12,
        }
    }

    /// The level whose prefix has `len` digits, if any.
    pub const fn from_prefix_len(len: usize) -> Option<Level> {
        match len {
            2 => Some(Level::Province),
            4 => Some(Level::Prefecture),
            6 => Some(Level::County),
            9 => Some(Level::Township),
            12 => Some(Level::Village),
            _ => None,
        }
    }

    /// The level directly above, or `None` for the province.
    pub const fn parent(self) -> Option<Level> {
        match self {
            Level::Province => None,
            Level::Prefecture => Some(Level::Province),
            Level::County => Some(Level::Prefecture),
            Level::Township => Some(Level::County),
            Level::Village => Some(Level::Township),
        }
    }

    /// The level directly below, or `None` for the village.
    pub const fn child(self) -> Option<Level> {
        match self {
            Level::Province => Some(Level::Prefecture),
            Level::Prefecture => Some(Level::County),
            Level::County => Some(Level::Township),
            Level::Township => Some(Level::Village),
            Level::Village => None,
        }
    }

    /// Chinese name of the level, as shown to operators.
    pub const fn zh_name(self) -> &'static str {
        match self {
            Level::Province => "省",
            Level::Prefecture => "市州",
            Level::County => "县",
            Level::Township => "乡镇",
            Level::Village => "村",
        }
    }
}

/// Why a string is not an area code or scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AreaError {
    /// Not exactly twelve characters.
    #[error("区划代码应为12位数字，实际为{0}位 (area code must have 12 digits, got {0})")]
    Length(usize),
    /// A character that is not an ASCII digit.
    #[error("区划代码只能包含数字，第{position}位是“{found}” (area code must be digits only; position {position} is {found:?})")]
    NotDigit {
        /// One-based position of the offending character.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// The province part is `00`.
    #[error("区划代码的省级部分不能为00 (province part of an area code cannot be 00)")]
    NoProvince,
    /// A lower part is non-zero while a higher part is zero, e.g. `510022000000`.
    #[error(
        "区划代码层级不连续：{level}级部分为0，但下级部分不为0 (area code skips the {level} level)"
    )]
    Gap {
        /// Zh-CN name of the level whose part is zero.
        level: &'static str,
    },
    /// A scope prefix whose length is not 2, 4, 6, 9 or 12 digits.
    #[error("范围前缀应为2、4、6、9或12位数字，实际为{0}位 (scope prefix must have 2, 4, 6, 9 or 12 digits, got {0})")]
    ScopeLength(usize),
}

/// A 12-digit statistical division code. Always valid once constructed.
///
/// Ordering is the numeric (and lexicographic) order of the code, so every area below a given
/// area sorts directly after it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AreaCode([u8; AREA_CODE_LEN]);

impl AreaCode {
    /// Parses a 12-digit code, checking that its levels are contiguous.
    pub fn parse(s: &str) -> Result<AreaCode, AreaError> {
        let chars = s.chars().count();
        if chars != AREA_CODE_LEN || s.len() != AREA_CODE_LEN {
            return Err(AreaError::Length(chars));
        }
        let mut digits = [0u8; AREA_CODE_LEN];
        for (i, (d, c)) in digits.iter_mut().zip(s.chars()).enumerate() {
            if !c.is_ascii_digit() {
                return Err(AreaError::NotDigit {
                    position: i + 1,
                    found: c,
                });
            }
            *d = c as u8;
        }
        let code = AreaCode(digits);
        code.check_levels()?;
        Ok(code)
    }

    fn part_is_zero(&self, level: Level) -> bool {
        let end = level.prefix_len();
        let start = match level {
            Level::Province => 0,
            Level::Prefecture => 2,
            Level::County => 4,
            Level::Township => 6,
            Level::Village => 9,
        };
        self.0[start..end].iter().all(|&d| d == b'0')
    }

    fn check_levels(&self) -> Result<(), AreaError> {
        if self.part_is_zero(Level::Province) {
            return Err(AreaError::NoProvince);
        }
        let mut seen_zero: Option<Level> = None;
        for level in Level::ALL {
            let zero = self.part_is_zero(level);
            match (zero, seen_zero) {
                (true, None) => seen_zero = Some(level),
                (false, Some(gap)) => {
                    return Err(AreaError::Gap {
                        level: gap.zh_name(),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The deepest level this code names.
    pub fn level(&self) -> Level {
        let mut level = Level::Province;
        for l in Level::ALL {
            if !self.part_is_zero(l) {
                level = l;
            }
        }
        level
    }

    /// The code as its 12 ASCII digits.
    pub fn as_str(&self) -> &str {
        // The array only ever holds ASCII digits (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or("000000000000")
    }

    /// The ASCII digits of the code.
    pub fn as_bytes(&self) -> &[u8; AREA_CODE_LEN] {
        &self.0
    }

    /// The scope naming exactly this area and everything below it.
    pub fn scope(&self) -> AreaScope {
        let len = self.level().prefix_len();
        AreaScope::from_digits(&self.0[..len])
    }

    /// The code of the enclosing area at `level`, or `None` if `level` is below this code's.
    pub fn ancestor(&self, level: Level) -> Option<AreaCode> {
        if level > self.level() {
            return None;
        }
        let mut digits = [b'0'; AREA_CODE_LEN];
        let len = level.prefix_len();
        digits[..len].copy_from_slice(&self.0[..len]);
        Some(AreaCode(digits))
    }

    /// Whether `other` lies inside this area (an area is inside itself).
    pub fn contains(&self, other: &AreaCode) -> bool {
        self.scope().contains(other)
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AreaCode({})", self.as_str())
    }
}

impl FromStr for AreaCode {
    type Err = AreaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AreaCode::parse(s)
    }
}

impl Serialize for AreaCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AreaCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AreaCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A prefix of 2, 4, 6, 9 or 12 digits naming an area and everything inside it.
///
/// Written either as the bare prefix (`510122`) or as the full code of the area
/// (`510122000000`); both parse to the same scope and display as the bare prefix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AreaScope {
    digits: [u8; AREA_CODE_LEN],
    len: u8,
}

impl AreaScope {
    fn from_digits(d: &[u8]) -> AreaScope {
        let mut digits = [b'0'; AREA_CODE_LEN];
        digits[..d.len()].copy_from_slice(d);
        AreaScope {
            digits,
            len: d.len() as u8,
        }
    }

    /// Parses a scope from a bare prefix or a full 12-digit area code.
    pub fn parse(s: &str) -> Result<AreaScope, AreaError> {
        if s.len() == AREA_CODE_LEN {
            return Ok(AreaCode::parse(s)?.scope());
        }
        let chars = s.chars().count();
        let Some(level) = Level::from_prefix_len(s.len()).filter(|_| chars == s.len()) else {
            return Err(AreaError::ScopeLength(chars));
        };
        // Pad to a full code and validate it; the padded code must name this exact level.
        let mut padded = String::with_capacity(AREA_CODE_LEN);
        padded.push_str(s);
        padded.extend(std::iter::repeat_n('0', AREA_CODE_LEN - s.len()));
        let code = AreaCode::parse(&padded)?;
        if code.level() != level {
            return Err(AreaError::Gap {
                level: level.zh_name(),
            });
        }
        Ok(code.scope())
    }

    /// The whole of a province, e.g. `51` for Sichuan.
    pub fn level(&self) -> Level {
        Level::from_prefix_len(self.len as usize).unwrap_or(Level::Village)
    }

    /// The prefix digits.
    pub fn prefix(&self) -> &str {
        std::str::from_utf8(&self.digits[..self.len as usize]).unwrap_or("")
    }

    /// The area this scope names (its prefix padded with zeros).
    pub fn area(&self) -> AreaCode {
        AreaCode(self.digits)
    }

    /// Whether `area` lies inside this scope.
    pub fn contains(&self, area: &AreaCode) -> bool {
        area.0.starts_with(&self.digits[..self.len as usize])
    }

    /// Whether every area of `other` lies inside this scope.
    pub fn contains_scope(&self, other: &AreaScope) -> bool {
        other.len >= self.len && self.contains(&other.area())
    }

    /// The scope both `self` and `other` cover: the narrower one if one contains the other,
    /// otherwise nothing.
    pub fn intersect(&self, other: &AreaScope) -> Option<AreaScope> {
        if self.contains_scope(other) {
            Some(*other)
        } else if other.contains_scope(self) {
            Some(*self)
        } else {
            None
        }
    }

    /// The half-open key range `[start, end)` of every document key inside this scope.
    ///
    /// Keys start with the 12 area digits, so every key inside starts with the prefix and sorts
    /// before the prefix followed by `:` (the byte after `9`).
    pub fn key_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = self.prefix().as_bytes().to_vec();
        let mut end = start.clone();
        end.push(b':');
        (start, end)
    }
}

impl fmt::Display for AreaScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

impl fmt::Debug for AreaScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AreaScope({})", self.prefix())
    }
}

impl FromStr for AreaScope {
    type Err = AreaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AreaScope::parse(s)
    }
}

impl Serialize for AreaScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.prefix())
    }
}

impl<'de> Deserialize<'de> for AreaScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AreaScope::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Generates valid area codes of every level.
    pub(crate) fn arb_area() -> impl Strategy<Value = AreaCode> {
        (
            1u32..=99,
            0u32..=99,
            0u32..=99,
            0u32..=999,
            0u32..=999,
            0usize..5,
        )
            .prop_map(|(p, f, c, t, v, depth)| {
                // Zero every part below `depth`, and make every part down to it non-zero.
                let parts = [p, f.max(1), c.max(1), t.max(1), v.max(1)];
                let mut s = String::new();
                for (i, (part, width)) in parts.iter().zip([2, 2, 2, 3, 3]).enumerate() {
                    let value = if i <= depth { *part } else { 0 };
                    s.push_str(&format!("{value:0width$}"));
                }
                AreaCode::parse(&s).expect("generated code is valid")
            })
    }

    #[test]
    fn parses_levels() {
        let cases = [
            ("510000000000", Level::Province),
            ("510100000000", Level::Prefecture),
            ("510122000000", Level::County),
            ("510122104000", Level::Township),
            ("510122104201", Level::Village),
        ];
        for (s, level) in cases {
            let code = AreaCode::parse(s).expect(s);
            assert_eq!(code.level(), level, "{s}");
            assert_eq!(code.to_string(), s);
            assert_eq!(code.scope().prefix().len(), level.prefix_len());
        }
    }

    #[test]
    fn rejects_bad_codes_with_clear_errors() {
        assert_eq!(AreaCode::parse("5101"), Err(AreaError::Length(4)));
        assert_eq!(AreaCode::parse("5101221042010"), Err(AreaError::Length(13)));
        assert_eq!(
            AreaCode::parse("51012210420x"),
            Err(AreaError::NotDigit {
                position: 12,
                found: 'x'
            })
        );
        assert_eq!(AreaCode::parse("000000000000"), Err(AreaError::NoProvince));
        assert_eq!(
            AreaCode::parse("510022000000"),
            Err(AreaError::Gap { level: "市州" })
        );
        assert_eq!(
            AreaCode::parse("510122000201"),
            Err(AreaError::Gap { level: "乡镇" })
        );
        // Full-width digits are not ASCII digits; the error counts characters, not bytes.
        assert_eq!(
            AreaCode::parse("５１０１２２１０４２０１"),
            Err(AreaError::Length(12))
        );
        let msg = AreaCode::parse("51x").expect_err("too short").to_string();
        assert!(msg.contains("12位"), "{msg}");
    }

    #[test]
    fn scopes_parse_from_prefix_or_full_code() {
        let a = AreaScope::parse("510122").expect("prefix");
        let b = AreaScope::parse("510122000000").expect("full");
        assert_eq!(a, b);
        assert_eq!(a.level(), Level::County);
        assert_eq!(a.to_string(), "510122");
        assert_eq!(
            AreaScope::parse("5101"),
            Ok(AreaScope::parse("510100000000").expect("p"))
        );
        assert_eq!(AreaScope::parse("51012"), Err(AreaError::ScopeLength(5)));
        assert!(
            AreaScope::parse("510100").is_err(),
            "county part 00 is a gap"
        );
        let village = AreaCode::parse("510122104201").expect("v");
        assert!(a.contains(&village));
        assert!(!AreaScope::parse("510123").expect("s").contains(&village));
    }

    #[test]
    fn ancestors() {
        let v = AreaCode::parse("510122104201").expect("v");
        assert_eq!(
            v.ancestor(Level::County).map(|a| a.to_string()),
            Some("510122000000".to_string())
        );
        let county = AreaCode::parse("510122000000").expect("c");
        assert_eq!(county.ancestor(Level::Village), None);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(a in arb_area()) {
            prop_assert_eq!(AreaCode::parse(&a.to_string()), Ok(a));
            prop_assert_eq!(AreaScope::parse(a.scope().prefix()), Ok(a.scope()));
            prop_assert_eq!(AreaScope::parse(a.as_str()), Ok(a.scope()));
        }

        #[test]
        fn containment_is_prefix_and_ancestry(a in arb_area(), b in arb_area()) {
            let sa = a.scope();
            // Containment means: every level of `a` agrees with `b`.
            let by_ancestry = b.ancestor(a.level()) == Some(a);
            prop_assert_eq!(sa.contains(&b), by_ancestry);
            prop_assert!(sa.contains(&a));
            // Every ancestor scope contains the area.
            for level in Level::ALL {
                if let Some(anc) = a.ancestor(level) {
                    prop_assert!(anc.scope().contains(&a));
                    prop_assert!(anc.scope().contains_scope(&sa));
                }
            }
        }

        #[test]
        fn scope_is_a_key_range(a in arb_area(), b in arb_area()) {
            let (start, end) = a.scope().key_range();
            let key = format!("{}/hh/x", b).into_bytes();
            let in_range = key.as_slice() >= start.as_slice() && key.as_slice() < end.as_slice();
            prop_assert_eq!(in_range, a.scope().contains(&b));
        }

        #[test]
        fn intersection_is_symmetric_and_contained(a in arb_area(), b in arb_area()) {
            let (sa, sb) = (a.scope(), b.scope());
            prop_assert_eq!(sa.intersect(&sb), sb.intersect(&sa));
            if let Some(i) = sa.intersect(&sb) {
                prop_assert!(sa.contains_scope(&i) && sb.contains_scope(&i));
            } else {
                prop_assert!(!sa.contains(&b) && !sb.contains(&a));
            }
        }

        #[test]
        fn order_matches_string_order(a in arb_area(), b in arb_area()) {
            prop_assert_eq!(a.cmp(&b), a.as_str().cmp(b.as_str()));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = AreaCode::parse(&s);
            let _ = AreaScope::parse(&s);
        }
    }
}
