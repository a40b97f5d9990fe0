//! Field errors, coded values, dates, and the string representation shared by every typed view.
//!
//! This module owns three things that [`crate::household`] and [`crate::need`] build on:
//!
//! 1. **Field errors.** [`FieldError`] names a field by its JSON path (`crops.citrus.area_band`),
//!    carries a machine code from [`code`] and a Simplified-Chinese message naming the field in
//!    Chinese. Parsing collects every problem into [`FieldErrors`]; it never stops at the first.
//! 2. **Coded values.** Every enum of the household and need schemas is a [`Coded`] value: a short
//!    stable ASCII id (`citrus`, `brick_concrete`) used in JSON and in documents, plus a Chinese
//!    name for people. [`Date`] is a calendar date written `YYYY-MM-DD`.
//! 3. **The document representation** (below), which the JS web app follows too.
//!
//! # Representation contract (JSON and Automerge)
//!
//! A typed view has one JSON shape, used by the HTTP API (the `Serialize` output), accepted by
//! `from_json`, and mirrored one-to-one by its Automerge document (root = the JSON object):
//!
//! | value | JSON | Automerge |
//! |---|---|---|
//! | coded value (enum id, tag id, area code, date `YYYY-MM-DD`, phone, roster number, codes) | string | scalar string |
//! | free text a person types (head's name, notes, free-text need, need title/description, contact role) | string | **`Text` object**, edited with `update_text` so concurrent edits merge character-wise |
//! | count, band, priority, rating | integer, written as one (`3`; `3.0` and `1e1` are refused) | `ScalarValue::Int` (readers also accept `Uint` and integral `F64`) |
//! | yes/no | boolean | boolean |
//! | multi-select of plain options (assets, site risks, health interests, need tags) | object `{"dogs": true}` | map keyed by id, value `true` |
//! | multi-select with details (crops, livestock, stated needs) | object `{"citrus": {"area_band": 2}}` | map keyed by id, each value a map |
//! | optional value not recorded | `null` or absent | key absent |
//!
//! Multi-selects are maps keyed by the option id, never lists, so two cadres adding options
//! concurrently get the union rather than duplicated list entries, and removing an option is
//! deleting its key. A JSON merge patch (RFC 7396) works on them naturally:
//! `{"crops": {"citrus": null}}` removes citrus. In a plain multi-select, `false` reads as
//! "not selected" and a JSON array of ids is also accepted on input.
//!
//! Every document carries `schema` (an integer, currently [`SCHEMA_VERSION`]). Readers refuse a
//! document whose schema is newer than they know; they ignore fields they do not know, so a field
//! added in a compatible way does not break old readers.
//!
//! Readers are tolerant of representation, strict about values: a scalar string is accepted where
//! `Text` is expected and a `Text` object where a scalar string is expected (JS Automerge 3 writes
//! plain strings as `Text`), a missing field reads as its documented default, and `null` reads as
//! missing. Writers write only fields whose value differs from what the document holds, compared
//! by value, not representation, so two cadres editing different fields concurrently both keep
//! their edits. The first write to an empty document creates every multi-select map and every
//! `Text` object (even when empty), so later concurrent edits never race to create the same
//! object (concurrently created objects at one key conflict, and only one survives).
//!
//! Document reads do not run cross-field consistency checks (a merge of two valid concurrent
//! edits may be inconsistent, and the cadre must still be able to open and fix the record); input
//! parsing and `validate` do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, ReadDoc, ScalarValue, ROOT};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::area::{AreaCode, Level};

/// The document schema version written by this crate into every typed document.
pub const SCHEMA_VERSION: i64 = 1;

/// Machine codes of [`FieldError`].
pub mod code {
    /// A required field is missing, `null` or empty.
    pub const REQUIRED: &str = "required";
    /// A number outside its allowed range (including negative counts).
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// A coded value (enum id, tag id) that is not one of the options.
    pub const UNKNOWN_VALUE: &str = "unknown_value";
    /// A value of the wrong JSON type (string where a number is expected, ...).
    pub const WRONG_TYPE: &str = "wrong_type";
    /// A text longer than allowed (counted in Unicode characters).
    pub const TOO_LONG: &str = "too_long";
    /// A multi-select with more entries than allowed.
    pub const TOO_MANY: &str = "too_many";
    /// Fields that contradict each other (age bands summing to more than the household).
    pub const INCONSISTENT: &str = "inconsistent";
    /// A field this schema does not have.
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    /// A string that is not well formed (dates, phone numbers, ids, area codes, control
    /// characters in text).
    pub const BAD_FORMAT: &str = "bad_format";
    /// An area code of the wrong level (a county code where a village is required).
    pub const WRONG_LEVEL: &str = "wrong_level";
    /// A tag that may not be used here (a region or voluntary tag as a stated need).
    pub const NOT_ALLOWED: &str = "not_allowed";
    /// A status change that the allowed transitions forbid.
    pub const BAD_TRANSITION: &str = "bad_transition";
    /// A field that may not change once set.
    pub const IMMUTABLE: &str = "immutable";
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, dot-separated, e.g. `crops.citrus.area_band` or
    /// `stated_needs.liv.asf.priority` (map keys are joined as they are, even when they contain
    /// dots). Empty for the object as a whole.
    pub field: String,
    /// Machine code, one of [`code`].
    pub code: &'static str,
    /// What is wrong, in Simplified Chinese, naming the field in Chinese.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}（{}）", self.message, self.field)
        }
    }
}

/// Every problem found in one input, in the order found. Never empty when returned as an error.
///
/// Serialises as a JSON array of [`FieldError`] objects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, thiserror::Error)]
#[serde(transparent)]
#[error("{}", join_errors(.0))]
pub struct FieldErrors(pub Vec<FieldError>);

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("；")
}

impl FieldErrors {
    /// Whether an error with this field path and code is present.
    pub fn has(&self, field: &str, code: &str) -> bool {
        self.0.iter().any(|e| e.field == field && e.code == code)
    }

    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no errors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a typed view could not be read from or written to an Automerge document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// Automerge refused an operation.
    #[error("文档操作失败：{0}")]
    Automerge(#[from] AutomergeError),
    /// The document (when reading) or the value (when writing) has invalid fields.
    #[error("字段有误：{0}")]
    Invalid(#[from] FieldErrors),
    /// The document was written by a newer schema than this program knows.
    #[error("文档结构版本为{found}，本程序只支持到{supported}，请升级程序")]
    UnsupportedSchema {
        /// The document's `schema`.
        found: i64,
        /// The newest schema this program reads.
        supported: i64,
    },
    /// The value names a different record than the document holds (its village or area).
    #[error("文档中的{field}为“{stored}”，不能改为“{given}”")]
    Identity {
        /// Chinese name of the field.
        field: &'static str,
        /// What the document holds.
        stored: String,
        /// What the value has.
        given: String,
    },
    /// The value could not be encoded (an internal error).
    #[error("内部编码失败：{0}")]
    Encode(String),
}

// ---------------------------------------------------------------------------------------------
// Coded values and dates
// ---------------------------------------------------------------------------------------------

/// A value from a fixed list of options, with a stable ASCII id and a Chinese name.
pub trait Coded: Copy + Ord + 'static {
    /// Every option, in display order.
    fn options() -> &'static [Self];
    /// The stable id used in JSON and documents.
    fn code_id(self) -> &'static str;
    /// The Chinese name shown to people.
    fn code_zh(self) -> &'static str;
    /// The option with this id.
    fn from_code(id: &str) -> Option<Self> {
        Self::options().iter().copied().find(|v| v.code_id() == id)
    }
}

impl Coded for crate::taxonomy::Tag {
    fn options() -> &'static [Self] {
        crate::taxonomy::Tag::ALL
    }
    fn code_id(self) -> &'static str {
        self.id()
    }
    fn code_zh(self) -> &'static str {
        self.zh_name()
    }
}

/// Defines a [`Coded`] enum: variants with ids and Chinese names, `ALL`, `id()`, `zh_name()`,
/// `parse()`, `Display` and serde as the id string.
macro_rules! coded_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $id:literal, $zh:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( #[doc = $zh] $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every option, in display order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The stable ASCII id used in JSON and documents.
            pub const fn id(self) -> &'static str {
                match self { $( $name::$variant => $id, )+ }
            }

            /// The Chinese name shown to cadres.
            pub const fn zh_name(self) -> &'static str {
                match self { $( $name::$variant => $zh, )+ }
            }

            /// The option with this id, if any.
            pub fn parse(id: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.id() == id)
            }
        }

        impl $crate::fields::Coded for $name {
            fn options() -> &'static [Self] {
                $name::ALL
            }
            fn code_id(self) -> &'static str {
                self.id()
            }
            fn code_zh(self) -> &'static str {
                self.zh_name()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.id())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.id())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    ::serde::de::Error::custom(format!("无效的取值“{s}” (unknown value {s:?})"))
                })
            }
        }
    };
}
pub(crate) use coded_enum;

/// A calendar date, written `YYYY-MM-DD` in JSON and documents (a scalar string).
///
/// Years 1900–2199 only; the protocol never reads a clock, so callers pass dates in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// The date, if it exists and its year is 1900–2199.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        ((1900..=2199).contains(&year) && day >= 1 && day <= days_in_month(year, month))
            .then_some(Date { year, month, day })
    }

    /// Parses exactly `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u16> {
            let part = s.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let year = num(0..4)?;
        let month = u8::try_from(num(5..7)?).ok()?;
        let day = u8::try_from(num(8..10)?).ok()?;
        Date::new(year, month, day)
    }

    /// The year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1–12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The day of the month, 1–31.
    pub fn day(self) -> u8 {
        self.day
    }

    /// Days since 1970-01-01 (negative before), for date differences.
    pub fn days_since_epoch(self) -> i32 {
        /// The Julian day number of 1970-01-01.
        const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;
        // `Date::new` admitted only existing dates of 1900–2199, which `time` represents.
        time::Month::try_from(self.month)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(i32::from(self.year), m, self.day).ok())
            .map_or(0, |d| d.to_julian_day() - UNIX_EPOCH_JULIAN_DAY)
    }

    /// The same day `years` later; 29 February becomes 28 February in a common year.
    pub fn add_years(self, years: u16) -> Option<Date> {
        let year = self.year.checked_add(years)?;
        let day = self.day.min(days_in_month(year, self.month));
        Date::new(year, self.month, day)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Date({self})")
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("日期应为YYYY-MM-DD格式 (bad date {s:?})"))
        })
    }
}

/// Serialises a plain multi-select as `{"id": true, ...}` (see the module docs).
pub(crate) fn serialize_set<T: Coded, S: serde::Serializer>(
    set: &BTreeSet<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(set.len()))?;
    for v in set {
        map.serialize_entry(v.code_id(), &true)?;
    }
    map.end()
}

// ---------------------------------------------------------------------------------------------
// Decoding JSON (input or a document read as JSON), collecting every error
// ---------------------------------------------------------------------------------------------

/// What is being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Input from a person or an API: unknown fields are errors, consistency is checked.
    Input,
    /// A stored document: unknown fields are ignored (newer compatible writers), consistency is
    /// not checked (merges may produce it; the record must stay readable).
    Document,
}

/// Collects field errors while decoding.
pub(crate) struct Decoder {
    mode: Mode,
    errors: Vec<FieldError>,
}

/// Rules for a free-text or short string field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextRule {
    /// Longest allowed, in Unicode characters.
    pub(crate) max_chars: usize,
    /// Whether an empty (or all-blank) value is an error.
    pub(crate) required: bool,
    /// Whether line breaks and tabs are allowed.
    pub(crate) multiline: bool,
}

impl Decoder {
    pub(crate) fn new(mode: Mode) -> Decoder {
        Decoder {
            mode,
            errors: Vec::new(),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    pub(crate) fn push(
        &mut self,
        field: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.errors.push(FieldError::new(field, code, message));
    }

    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    /// A nested object at JSON path `path` (for objects inside arrays), or an error if `value`
    /// is not an object.
    pub(crate) fn nested<'v>(&mut self, value: &'v Value, path: &str) -> Option<Obj<'v>> {
        match value {
            Value::Object(map) => Some(Obj {
                path: path.to_string(),
                map,
                known: Vec::new(),
            }),
            _ => {
                self.push(path, code::WRONG_TYPE, "应为JSON对象");
                None
            }
        }
    }

    /// The top-level object, or an error if `value` is not an object.
    pub(crate) fn root<'v>(&mut self, value: &'v Value, what_zh: &str) -> Option<Obj<'v>> {
        match value {
            Value::Object(map) => Some(Obj {
                path: String::new(),
                map,
                known: Vec::new(),
            }),
            _ => {
                self.push("", code::WRONG_TYPE, format!("{what_zh}应为JSON对象"));
                None
            }
        }
    }

    /// `Ok(value)` when no error was collected.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, FieldErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if !self.errors.is_empty() => Err(FieldErrors(self.errors)),
            _ => Err(FieldErrors(vec![FieldError::new(
                "",
                code::WRONG_TYPE,
                "内容无法解析",
            )])),
        }
    }
}

/// One JSON object being decoded; records which keys were read.
pub(crate) struct Obj<'v> {
    path: String,
    map: &'v Map<String, Value>,
    known: Vec<&'static str>,
}

/// An integer exactly as JSON writes one: `3`, not `3.0` or `1e1` (serde_json parses those as
/// floats). A `u64` beyond `i64` reads as `i64::MAX`, so the range check rejects it.
fn json_int(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    n.as_u64().map(|_| i64::MAX)
}

fn options_zh<T: Coded>() -> String {
    let options = T::options();
    if options.len() > 20 {
        return String::new();
    }
    let names: Vec<String> = options
        .iter()
        .map(|o| format!("{}({})", o.code_zh(), o.code_id()))
        .collect();
    format!("，可选：{}", names.join("、"))
}

impl<'v> Obj<'v> {
    /// JSON path of `key` inside this object.
    pub(crate) fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value at `key` (marking it read); `null` counts as absent.
    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'v Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Reports keys that were never read as unknown fields (input mode only).
    pub(crate) fn finish(self, d: &mut Decoder) {
        if d.mode() != Mode::Input {
            return;
        }
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                let path = self.path(key);
                d.push(path, code::UNKNOWN_FIELD, format!("未知字段“{key}”"));
            }
        }
    }

    /// An integer in `lo..=hi`; absent reads as `default`, or is an error without one.
    pub(crate) fn int(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        lo: i64,
        hi: i64,
        default: Option<i64>,
    ) -> Option<i64> {
        let path = self.path(key);
        let Some(v) = self.raw(key) else {
            if default.is_none() {
                d.push(path, code::REQUIRED, format!("{zh}为必填项"));
            }
            return default;
        };
        match json_int(v) {
            Some(n) if n < 0 && lo >= 0 => {
                d.push(path, code::OUT_OF_RANGE, format!("{zh}不能为负数"));
                None
            }
            Some(n) if n < lo || n > hi => {
                d.push(
                    path,
                    code::OUT_OF_RANGE,
                    format!("{zh}应在{lo}到{hi}之间，现为{n}"),
                );
                None
            }
            Some(n) => Some(n),
            None => {
                d.push(path, code::WRONG_TYPE, format!("{zh}应为整数"));
                None
            }
        }
    }

    /// A small count or band (see [`Obj::int`]).
    pub(crate) fn small(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        lo: u8,
        hi: u8,
        default: Option<u8>,
    ) -> Option<u8> {
        self.int(
            d,
            key,
            zh,
            i64::from(lo),
            i64::from(hi),
            default.map(i64::from),
        )
        .and_then(|n| u8::try_from(n).ok())
    }

    /// An optional small number: absent or `null` reads as `None`.
    pub(crate) fn opt_small(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        lo: u8,
        hi: u8,
    ) -> Option<Option<u8>> {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.known.push(key);
            return Some(None);
        }
        self.small(d, key, zh, lo, hi, None).map(Some)
    }

    /// A yes/no; absent reads as `false`.
    pub(crate) fn flag(&mut self, d: &mut Decoder, key: &'static str, zh: &str) -> Option<bool> {
        let path = self.path(key);
        match self.raw(key) {
            None => Some(false),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                d.push(
                    path,
                    code::WRONG_TYPE,
                    format!("{zh}应为是或否（true/false）"),
                );
                None
            }
        }
    }

    /// A string; absent reads as empty.
    pub(crate) fn text(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        rule: TextRule,
    ) -> Option<String> {
        let path = self.path(key);
        let s = match self.raw(key) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                d.push(path, code::WRONG_TYPE, format!("{zh}应为文字"));
                return None;
            }
        };
        let before = d.count();
        if rule.required && s.trim().is_empty() {
            d.push(path.clone(), code::REQUIRED, format!("{zh}为必填项"));
        }
        let chars = s.chars().count();
        if chars > rule.max_chars {
            d.push(
                path.clone(),
                code::TOO_LONG,
                format!("{zh}不能超过{}个字，现有{chars}个字", rule.max_chars),
            );
        }
        let bad_char =
            |c: char| c.is_control() && !(rule.multiline && matches!(c, '\n' | '\r' | '\t'));
        if s.chars().any(bad_char) {
            let what = if rule.multiline {
                "控制字符"
            } else {
                "换行或控制字符"
            };
            d.push(path, code::BAD_FORMAT, format!("{zh}不能包含{what}"));
        }
        (d.count() == before).then_some(s)
    }

    fn string_value(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
    ) -> Option<Option<&'v str>> {
        let path = self.path(key);
        match self.raw(key) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(_) => {
                d.push(path, code::WRONG_TYPE, format!("{zh}应为文字代码"));
                None
            }
        }
    }

    /// An optional coded value: absent reads as `None`.
    pub(crate) fn coded<T: Coded>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
    ) -> Option<Option<T>> {
        let path = self.path(key);
        let s = self.string_value(d, key, zh)?;
        match s {
            None => Some(None),
            Some(s) => match T::from_code(s) {
                Some(v) => Some(Some(v)),
                None => {
                    d.push(
                        path,
                        code::UNKNOWN_VALUE,
                        format!("{zh}“{s}”不是可选项{}", options_zh::<T>()),
                    );
                    None
                }
            },
        }
    }

    /// A coded value that is required unless `default` is given.
    pub(crate) fn coded_or<T: Coded>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        default: Option<T>,
    ) -> Option<T> {
        let path = self.path(key);
        match self.coded(d, key, zh)? {
            Some(v) => Some(v),
            None if default.is_some() => default,
            None => {
                d.push(path, code::REQUIRED, format!("{zh}为必填项"));
                None
            }
        }
    }

    /// An optional date `YYYY-MM-DD`.
    pub(crate) fn date(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
    ) -> Option<Option<Date>> {
        let path = self.path(key);
        match self.string_value(d, key, zh)? {
            None => Some(None),
            Some(s) => match Date::parse(s) {
                Some(date) => Some(Some(date)),
                None => {
                    d.push(
                        path,
                        code::BAD_FORMAT,
                        format!("{zh}应为“年-月-日”格式的有效日期，如2025-03-18，现为“{s}”"),
                    );
                    None
                }
            },
        }
    }

    /// A required area code of one of `levels`.
    pub(crate) fn area(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        levels: &[Level],
    ) -> Option<AreaCode> {
        let path = self.path(key);
        let s = match self.string_value(d, key, zh)? {
            Some(s) => s,
            None => {
                d.push(path, code::REQUIRED, format!("{zh}为必填项"));
                return None;
            }
        };
        match AreaCode::parse(s) {
            Ok(area) if levels.contains(&area.level()) => Some(area),
            Ok(area) => {
                let names: Vec<&str> = levels.iter().map(|l| l.zh_name()).collect();
                d.push(
                    path,
                    code::WRONG_LEVEL,
                    format!(
                        "{zh}应为{}级区划代码，“{s}”是{}级",
                        names.join("、"),
                        area.level().zh_name()
                    ),
                );
                None
            }
            Err(e) => {
                d.push(path, code::BAD_FORMAT, format!("{zh}无效：{e}"));
                None
            }
        }
    }

    /// A plain multi-select: `{"id": true}` (`false` = not selected) or `["id", ...]`.
    pub(crate) fn set<T: Coded>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        max: usize,
    ) -> Option<BTreeSet<T>> {
        let path = self.path(key);
        let before = d.count();
        let mut out = BTreeSet::new();
        let mut one = |d: &mut Decoder, id: &str, item_path: String| match T::from_code(id) {
            Some(v) => {
                out.insert(v);
            }
            None => d.push(
                item_path,
                code::UNKNOWN_VALUE,
                format!("{zh}“{id}”不是可选项{}", options_zh::<T>()),
            ),
        };
        match self.raw(key) {
            None => {}
            Some(Value::Object(map)) => {
                for (id, v) in map {
                    let item_path = format!("{path}.{id}");
                    match v {
                        Value::Bool(true) => one(d, id, item_path),
                        Value::Bool(false) | Value::Null => {}
                        _ => d.push(
                            item_path,
                            code::WRONG_TYPE,
                            format!("{zh}的每一项应为 true"),
                        ),
                    }
                }
            }
            Some(Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    match v {
                        Value::String(id) => one(d, id, item_path),
                        _ => d.push(
                            item_path,
                            code::WRONG_TYPE,
                            format!("{zh}的每一项应为文字代码"),
                        ),
                    }
                }
            }
            Some(_) => d.push(
                path.clone(),
                code::WRONG_TYPE,
                format!("{zh}应为对象，如 {{\"代码\": true}}"),
            ),
        }
        // A limit on the number of entries is a rule for input: concurrent additions may exceed
        // it in a document, which must stay readable.
        if out.len() > max && d.mode() == Mode::Input {
            d.push(
                path,
                code::TOO_MANY,
                format!("{zh}最多{max}项，现有{}项", out.len()),
            );
        }
        (d.count() == before).then_some(out)
    }

    /// A detailed multi-select: `{"id": {...}}`, each entry decoded by `entry`.
    pub(crate) fn entries<T: Coded, E>(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
        zh: &str,
        max: usize,
        mut entry: impl FnMut(T, &mut Obj<'v>, &mut Decoder) -> Option<E>,
    ) -> Option<BTreeMap<T, E>> {
        let path = self.path(key);
        let before = d.count();
        let mut out = BTreeMap::new();
        match self.raw(key) {
            None => {}
            Some(Value::Object(map)) => {
                for (id, v) in map {
                    let item_path = format!("{path}.{id}");
                    let Some(k) = T::from_code(id) else {
                        d.push(
                            item_path,
                            code::UNKNOWN_VALUE,
                            format!("{zh}“{id}”不是可选项{}", options_zh::<T>()),
                        );
                        continue;
                    };
                    match v {
                        Value::Null => {}
                        Value::Object(inner) => {
                            let mut sub = Obj {
                                path: item_path,
                                map: inner,
                                known: Vec::new(),
                            };
                            let value = entry(k, &mut sub, d);
                            sub.finish(d);
                            if let Some(value) = value {
                                out.insert(k, value);
                            }
                        }
                        _ => d.push(
                            item_path,
                            code::WRONG_TYPE,
                            format!("{zh}“{}”的内容应为对象", k.code_zh()),
                        ),
                    }
                }
            }
            Some(_) => d.push(
                path.clone(),
                code::WRONG_TYPE,
                format!("{zh}应为以代码为键的对象"),
            ),
        }
        // A limit on the number of entries is a rule for input: concurrent additions may exceed
        // it in a document, which must stay readable.
        if out.len() > max && d.mode() == Mode::Input {
            d.push(
                path,
                code::TOO_MANY,
                format!("{zh}最多{max}项，现有{}项", out.len()),
            );
        }
        (d.count() == before).then_some(out)
    }

    /// The `schema` field: in input it may be absent or must equal [`SCHEMA_VERSION`]; in a
    /// document it was checked by [`check_schema`] already.
    pub(crate) fn schema(&mut self, d: &mut Decoder) {
        if d.mode() == Mode::Input {
            self.int(
                d,
                "schema",
                "结构版本",
                SCHEMA_VERSION,
                SCHEMA_VERSION,
                Some(SCHEMA_VERSION),
            );
        } else {
            self.known.push("schema");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Automerge: reading a document as JSON, and writing only what differs
// ---------------------------------------------------------------------------------------------

/// Objects nested deeper than this are read as `null` (typed views need three levels).
const MAX_DEPTH: usize = 6;

/// Reads the whole document as JSON: maps → objects, `Text` and scalar strings → strings,
/// integers → numbers, booleans, `null`; anything else (bytes, unknown scalars) becomes
/// `{"$unsupported": "<type>"}` so that every field rule rejects it with a type error.
pub(crate) fn doc_to_json<R: ReadDoc>(doc: &R) -> Result<Value, AutomergeError> {
    obj_to_json(doc, &ROOT, ObjType::Map, 0)
}

fn obj_to_json<R: ReadDoc>(
    doc: &R,
    obj: &ObjId,
    ty: ObjType,
    depth: usize,
) -> Result<Value, AutomergeError> {
    if depth > MAX_DEPTH {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ObjType::Map | ObjType::Table => {
            let mut map = Map::new();
            let keys: Vec<String> = doc.keys(obj).collect();
            for key in keys {
                if let Some((value, id)) = doc.get(obj, key.as_str())? {
                    let v = value_to_json(doc, value, &id, depth)?;
                    map.insert(key, v);
                }
            }
            Value::Object(map)
        }
        ObjType::List => {
            let mut items = Vec::new();
            for i in 0..doc.length(obj) {
                if let Some((value, id)) = doc.get(obj, i)? {
                    items.push(value_to_json(doc, value, &id, depth)?);
                }
            }
            Value::Array(items)
        }
        ObjType::Text => Value::String(doc.text(obj)?),
    })
}

fn unsupported(what: &str) -> Value {
    let mut m = Map::new();
    m.insert("$unsupported".into(), Value::String(what.into()));
    Value::Object(m)
}

fn value_to_json<R: ReadDoc>(
    doc: &R,
    value: automerge::Value<'_>,
    id: &ObjId,
    depth: usize,
) -> Result<Value, AutomergeError> {
    Ok(match value {
        automerge::Value::Object(ty) => obj_to_json(doc, id, ty, depth + 1)?,
        automerge::Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Value::String(s.to_string()),
            ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Value::from(*i),
            ScalarValue::Uint(u) => Value::from(*u),
            ScalarValue::Counter(c) => Value::from(i64::from(c)),
            // JS Automerge may store a count as an integral F64; it reads as the integer it is,
            // so the strict JSON integer rule below applies to API input only.
            ScalarValue::F64(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Value::from(*f as i64)
            }
            ScalarValue::F64(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| unsupported("f64")),
            ScalarValue::Boolean(b) => Value::Bool(*b),
            ScalarValue::Null => Value::Null,
            ScalarValue::Bytes(_) => unsupported("bytes"),
            ScalarValue::Unknown { .. } => unsupported("unknown"),
        },
    })
}

/// Refuses a document whose `schema` is newer than `supported` (or not an integer).
pub(crate) fn check_schema(json: &Value, supported: i64) -> Result<(), ViewError> {
    match json.get("schema") {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match json_int(v) {
            Some(found) if found <= supported => Ok(()),
            Some(found) => Err(ViewError::UnsupportedSchema { found, supported }),
            None => Err(ViewError::Invalid(FieldErrors(vec![FieldError::new(
                "schema",
                code::WRONG_TYPE,
                "结构版本应为整数",
            )]))),
        },
    }
}

/// Refuses to write a value whose `key` (village or area) differs from the one the document
/// already holds; a document without it is new and accepts any.
pub(crate) fn check_identity<T: ReadDoc>(
    doc: &T,
    key: &str,
    zh: &'static str,
    given: &str,
) -> Result<(), ViewError> {
    match current_string(doc, &ROOT, key)? {
        Some(stored) if !stored.is_empty() && stored != given => Err(ViewError::Identity {
            field: zh,
            stored,
            given: given.to_string(),
        }),
        _ => Ok(()),
    }
}

fn current_string<T: ReadDoc>(
    doc: &T,
    obj: &ObjId,
    key: &str,
) -> Result<Option<String>, AutomergeError> {
    Ok(match doc.get(obj, key)? {
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        Some((automerge::Value::Object(ObjType::Text), id)) => Some(doc.text(&id)?),
        _ => None,
    })
}

fn current_int<T: ReadDoc>(doc: &T, obj: &ObjId, key: &str) -> Result<Option<i64>, AutomergeError> {
    Ok(match doc.get(obj, key)? {
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Int(i) => Some(*i),
            ScalarValue::Uint(u) => i64::try_from(*u).ok(),
            ScalarValue::Counter(c) => Some(i64::from(c)),
            ScalarValue::F64(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Some(*f as i64)
            }
            _ => None,
        },
        _ => None,
    })
}

fn current_bool<T: ReadDoc>(
    doc: &T,
    obj: &ObjId,
    key: &str,
) -> Result<Option<bool>, AutomergeError> {
    Ok(match doc.get(obj, key)? {
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Boolean(b) => Some(*b),
            _ => None,
        },
        _ => None,
    })
}

/// Writes the typed view `desired` (its `Serialize` output) into the document root, touching
/// only what differs. Refuses a document of a newer schema (writing would downgrade it).
/// `text_fields` are the root keys stored as `Text` objects.
///
/// Root keys in `desired` are the view's fields; a `null` deletes the key. Root keys not in
/// `desired` are left alone (fields of a newer schema). Maps directly under the root are
/// multi-selects: keys not in `desired` are deleted. Maps deeper than that are entries: only
/// their given keys are written.
pub(crate) fn write_root<T: Transactable>(
    tx: &mut T,
    desired: &Value,
    text_fields: &[&str],
) -> Result<(), ViewError> {
    let Value::Object(desired) = desired else {
        return Err(ViewError::Encode("视图不是JSON对象".into()));
    };
    if let Some(found) = current_int(tx, &ROOT, "schema")? {
        if found > SCHEMA_VERSION {
            return Err(ViewError::UnsupportedSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    put_int(tx, &ROOT, "schema", SCHEMA_VERSION)?;
    for (key, value) in desired {
        let is_text = text_fields.contains(&key.as_str());
        write_value(tx, &ROOT, key, value, is_text, 0)?;
    }
    Ok(())
}

fn write_value<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Value,
    is_text: bool,
    depth: usize,
) -> Result<(), ViewError> {
    match value {
        Value::Null => {
            if tx.get(obj, key)?.is_some() {
                tx.delete(obj, key)?;
            }
        }
        Value::Bool(b) => {
            if current_bool(tx, obj, key)? != Some(*b) {
                tx.put(obj, key, *b)?;
            }
        }
        Value::Number(n) => {
            let n = n
                .as_i64()
                .ok_or_else(|| ViewError::Encode(format!("字段{key}不是整数")))?;
            put_int(tx, obj, key, n)?;
        }
        Value::String(s) if is_text => put_text(tx, obj, key, s)?,
        Value::String(s) => {
            if current_string(tx, obj, key)?.as_deref() != Some(s.as_str()) {
                tx.put(obj, key, s.as_str())?;
            }
        }
        Value::Object(map) => {
            let child = ensure_map(tx, obj, key)?;
            if depth == 0 {
                let stale: Vec<String> = tx.keys(&child).filter(|k| !map.contains_key(k)).collect();
                for k in stale {
                    tx.delete(&child, k.as_str())?;
                }
            }
            for (k, v) in map {
                write_value(tx, &child, k, v, false, depth + 1)?;
            }
        }
        Value::Array(_) => {
            return Err(ViewError::Encode(format!("字段{key}是数组，文档中不支持")));
        }
    }
    Ok(())
}

fn put_int<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    n: i64,
) -> Result<(), AutomergeError> {
    if current_int(tx, obj, key)? != Some(n) {
        tx.put(obj, key, ScalarValue::Int(n))?;
    }
    Ok(())
}

fn ensure_map<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
) -> Result<ObjId, AutomergeError> {
    match tx.get(obj, key)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
        _ => tx.put_object(obj, key, ObjType::Map),
    }
}

/// Writes free text into a `Text` object, diffing against the current text so that concurrent
/// edits elsewhere in the text merge. A scalar string that already equals `s` is left as is.
fn put_text<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    s: &str,
) -> Result<(), AutomergeError> {
    match tx.get(obj, key)? {
        Some((automerge::Value::Object(ObjType::Text), id)) => {
            if tx.text(&id)? != s {
                tx.update_text(&id, s)?;
            }
        }
        Some((automerge::Value::Scalar(v), _)) if matches!(v.as_ref(), ScalarValue::Str(cur) if cur.as_str() == s) =>
            {}
        _ => {
            let id = tx.put_object(obj, key, ObjType::Text)?;
            if !s.is_empty() {
                tx.splice_text(&id, 0, 0, s)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_since_epoch_counts_calendar_days() {
        let d = |y, m, dd| Date::new(y, m, dd).expect("date").days_since_epoch();
        assert_eq!(d(1970, 1, 1), 0);
        assert_eq!(d(1969, 12, 31), -1);
        assert_eq!(d(2026, 1, 1), 20_454);
        assert_eq!(d(2024, 3, 1) - d(2024, 2, 28), 2);
        assert_eq!(d(1900, 1, 1), -25_567);
    }

    use automerge::AutoCommit;

    use super::*;

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(
            Date::parse("2024-02-29").map(|d| d.to_string()),
            Some("2024-02-29".into())
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "24-01-01",
            "2024/01/01",
            "2024-01-32",
            "+202-01-01",
            "1899-12-31",
            "２０２４-01-01",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        let leap = Date::parse("2024-02-29").expect("valid");
        assert_eq!(
            leap.add_years(1).map(|d| d.to_string()),
            Some("2025-02-28".into())
        );
        assert!(Date::parse("2024-03-01") > Date::parse("2024-02-29"));
    }

    #[test]
    fn field_errors_display_and_serialise() {
        let errs = FieldErrors(vec![
            FieldError::new("age_60_69", code::OUT_OF_RANGE, "60–69岁人数不能为负数"),
            FieldError::new("", code::WRONG_TYPE, "农户档案应为JSON对象"),
        ]);
        assert_eq!(
            errs.to_string(),
            "60–69岁人数不能为负数（age_60_69）；农户档案应为JSON对象"
        );
        let json = serde_json::to_value(&errs).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!([
                {"field": "age_60_69", "code": "out_of_range", "message": "60–69岁人数不能为负数"},
                {"field": "", "code": "wrong_type", "message": "农户档案应为JSON对象"}
            ])
        );
        assert!(errs.has("age_60_69", "out_of_range"));
        assert!(!errs.has("age_60_69", "required"));
    }

    #[test]
    fn doc_to_json_reads_text_and_scalars_alike() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "a", "scalar").expect("put");
        let t = doc.put_object(ROOT, "b", ObjType::Text).expect("text");
        doc.splice_text(&t, 0, 0, "文字").expect("splice");
        doc.put(ROOT, "c", ScalarValue::Uint(7)).expect("put");
        doc.put(ROOT, "d", 2.0_f64).expect("put");
        doc.put(ROOT, "e", ScalarValue::Bytes(vec![1]))
            .expect("put");
        let json = doc_to_json(&doc).expect("read");
        assert_eq!(json["a"], "scalar");
        assert_eq!(json["b"], "文字");
        assert_eq!(json["c"], 7);
        assert_eq!(json["d"], 2, "an integral F64 reads as an integer");
        assert_eq!(json_int(&json["d"]), Some(2));
        assert!(json["e"].is_object());
    }

    #[test]
    fn write_root_writes_only_differences() {
        let mut doc = AutoCommit::new();
        let v = serde_json::json!({"n": 3, "s": "x", "t": "hello", "m": {"a": true}, "o": null});
        write_root(&mut doc, &v, &["t"]).expect("write");
        doc.commit();
        let heads = doc.get_heads();
        write_root(&mut doc, &v, &["t"]).expect("write again");
        assert_eq!(doc.pending_ops(), 0);
        doc.commit();
        assert_eq!(doc.get_heads(), heads);
        // A JS-style document (coded value as Text, count as Uint) that equals the value is
        // also left alone.
        let mut js = AutoCommit::new();
        let s = js.put_object(ROOT, "s", ObjType::Text).expect("text");
        js.splice_text(&s, 0, 0, "x").expect("splice");
        js.put(ROOT, "n", ScalarValue::Uint(3)).expect("put");
        js.put(ROOT, "t", "hello").expect("put");
        js.put(ROOT, "schema", SCHEMA_VERSION).expect("put");
        let m = js.put_object(ROOT, "m", ObjType::Map).expect("map");
        js.put(&m, "a", true).expect("put");
        js.commit();
        write_root(&mut js, &v, &["t"]).expect("write js");
        assert_eq!(js.pending_ops(), 0);
    }
}
