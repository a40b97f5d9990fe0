//! Content metadata (科普资源元数据): what the hub's content library knows about one item.
//!
//! This module owns [`ContentMeta`], the metadata an operator enters for a content item (an
//! article, image, audio, video or PDF): what it is about (tags of the taxonomy), where and when it
//! applies (region prefixes, months), for whom (age bands, language), what files exist
//! (renditions with their sizes) and how long it may be used (review date, expiry). Its JSON form
//! (the `Serialize` output, accepted back by [`ContentMeta::from_json`]) is the opaque metadata
//! blob that the hub-signed `content` manifest carries; the manifest adds the content id and the
//! renditions' chunk hashes, keyed by the rendition ids named here.
//!
//! | field | JSON | rule |
//! |---|---|---|
//! | `title` | string | required, 1–[`MAX_TITLE_CHARS`] characters, one line |
//! | `summary` | string (default "") | ≤ [`MAX_SUMMARY_CHARS`] characters |
//! | `tags` | `["liv.asf", ...]` or `{"liv.asf": true}` | required, 1–[`MAX_CONTENT_TAGS`] tags of the tree |
//! | `regions` | `["5101", "510122"]` (default []) | area prefixes (2/4/6/9/12 digits) the item applies to; empty = the whole province; at most [`MAX_REGIONS`] |
//! | `months` | `[3, 4, 5]` (default []) | months 1–12 in which the item is timely; empty = all year |
//! | `audience` | `["age_60_69", "age_70_plus"]` (default []) | [`AgeBand`]s the item is for; empty = everyone |
//! | `language` | [`Language`] id (default "mandarin") | language of the main file |
//! | `format` | [`Format`] id | required: format of the main file |
//! | `bytes` | integer ≥ 1 | required: size of the main file (rendition `main`) |
//! | `renditions` | `[{"id", "format", "language", "bytes"}]` (default []) | further renditions (a 480p copy, an audio version, a Yi-language dub); ids unique, not `main`, at most [`MAX_RENDITIONS`] |
//! | `source` | string (default "") | ≤ 60 characters, e.g. `科普中国` |
//! | `review_date` | `YYYY-MM-DD` | required: when the item was last reviewed |
//! | `expires` | `YYYY-MM-DD` or null | the item is never recommended on or after this date; after `review_date` |
//!
//! ```
//! use cunyun_protocol::library::{ContentMeta, Format};
//! let meta = ContentMeta::from_json(&serde_json::json!({
//!     "title": "非洲猪瘟防控十要点", "tags": ["liv.asf", "liv.pig"],
//!     "months": [1, 12], "format": "video", "bytes": 34000000,
//!     "renditions": [{"id": "audio", "format": "audio", "bytes": 2400000}],
//!     "review_date": "2025-11-02", "expires": "2027-11-01"
//! })).expect("valid");
//! assert_eq!(meta.format, Format::Video);
//! assert_eq!(meta.all_renditions().count(), 2);
//! ```

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::area::AreaScope;
use crate::fields::{
    code, coded_enum, Date, Decoder, FieldError, FieldErrors, Mode, Obj, TextRule,
};
use crate::household::{HouseholdProfile, Language};
use crate::taxonomy::Tag;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 60;
/// Longest summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 300;
/// Most tags per item.
pub const MAX_CONTENT_TAGS: usize = 8;
/// Most region prefixes per item.
pub const MAX_REGIONS: usize = 50;
/// Most renditions besides the main file.
pub const MAX_RENDITIONS: usize = 8;
/// Largest file (rendition) size: 4 GiB.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// Id of the main file's rendition.
pub const MAIN_RENDITION: &str = "main";

coded_enum! {
    /// The format of a content file.
    pub enum Format {
        Article = "article", "图文";
        Image = "image", "图片/挂图";
        Audio = "audio", "音频";
        Video = "video", "视频";
        Pdf = "pdf", "明白纸(PDF)";
    }
}

coded_enum! {
    /// An age band of household members (the bands of the household profile).
    pub enum AgeBand {
        Age0To5 = "age_0_5", "0–5岁";
        Age6To14 = "age_6_14", "6–14岁";
        Age15To17 = "age_15_17", "15–17岁";
        Age18To59 = "age_18_59", "18–59岁";
        Age60To69 = "age_60_69", "60–69岁";
        Age70Plus = "age_70_plus", "70岁以上";
    }
}

impl AgeBand {
    /// How many members of `p` are in this band.
    pub fn members(self, p: &HouseholdProfile) -> u8 {
        match self {
            AgeBand::Age0To5 => p.age_0_5,
            AgeBand::Age6To14 => p.age_6_14,
            AgeBand::Age15To17 => p.age_15_17,
            AgeBand::Age18To59 => p.age_18_59,
            AgeBand::Age60To69 => p.age_60_69,
            AgeBand::Age70Plus => p.age_70_plus,
        }
    }
}

/// One file of an item: the main file or an alternative (lower resolution, audio, other language).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendition {
    /// Id, unique within the item: ASCII letters, digits, `_` or `-`, 1–16 characters.
    pub id: String,
    /// Format of this file.
    pub format: Format,
    /// Language of this file.
    pub language: Language,
    /// Size in bytes.
    pub bytes: u64,
}

/// Metadata of one content item (see the module documentation for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContentMeta {
    /// Title.
    pub title: String,
    /// Summary.
    pub summary: String,
    /// Tags of the taxonomy the item answers.
    #[serde(serialize_with = "serialize_tags")]
    pub tags: BTreeSet<Tag>,
    /// Area prefixes the item applies to; empty = the whole province.
    pub regions: Vec<AreaScope>,
    /// Months (1–12) in which the item is timely; empty = all year.
    pub months: BTreeSet<u8>,
    /// Age bands the item is for; empty = everyone.
    #[serde(serialize_with = "serialize_bands")]
    pub audience: BTreeSet<AgeBand>,
    /// Language of the main file.
    pub language: Language,
    /// Format of the main file.
    pub format: Format,
    /// Size of the main file in bytes.
    pub bytes: u64,
    /// Further renditions.
    pub renditions: Vec<Rendition>,
    /// Where the item comes from.
    pub source: String,
    /// Last review.
    pub review_date: Date,
    /// Never recommended on or after this date.
    pub expires: Option<Date>,
}

fn serialize_tags<S: serde::Serializer>(tags: &BTreeSet<Tag>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(tags.iter().map(|t| t.id()))
}

fn serialize_bands<S: serde::Serializer>(
    bands: &BTreeSet<AgeBand>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(bands.iter().map(|b| b.id()))
}

const TITLE: TextRule = TextRule {
    max_chars: MAX_TITLE_CHARS,
    required: true,
    multiline: false,
};
const SUMMARY: TextRule = TextRule {
    max_chars: MAX_SUMMARY_CHARS,
    required: false,
    multiline: true,
};
const SOURCE: TextRule = TextRule {
    max_chars: 60,
    required: false,
    multiline: false,
};

fn valid_rendition_id(s: &str) -> bool {
    (1..=16).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

impl ContentMeta {
    /// Parses operator or API input, collecting every problem.
    pub fn from_json(value: &Value) -> Result<ContentMeta, FieldErrors> {
        decode(value)
    }

    /// Checks a value built in code against the same rules as [`ContentMeta::from_json`].
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let json = serde_json::to_value(self).map_err(|e| {
            FieldErrors(vec![FieldError::new(
                "",
                code::WRONG_TYPE,
                format!("内部编码失败：{e}"),
            )])
        })?;
        decode(&json).map(|_| ())
    }

    /// The main file (rendition [`MAIN_RENDITION`]) followed by the further renditions.
    pub fn all_renditions(&self) -> impl Iterator<Item = Rendition> + '_ {
        std::iter::once(Rendition {
            id: MAIN_RENDITION.to_string(),
            format: self.format,
            language: self.language,
            bytes: self.bytes,
        })
        .chain(self.renditions.iter().cloned())
    }

    /// Whether the item may still be recommended on `today`.
    pub fn is_live(&self, today: Date) -> bool {
        self.expires.is_none_or(|e| today < e)
    }
}

/// An array of strings (or, for tags, a `{"id": true}` object); each element checked by `item`.
fn string_list<'v>(
    o: &mut Obj<'v>,
    d: &mut Decoder,
    key: &'static str,
    zh: &str,
) -> Option<Vec<(String, &'v Value)>> {
    let path = o.path(key);
    match o.raw(key) {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
        ),
        Some(_) => {
            d.push(path, code::WRONG_TYPE, format!("{zh}应为数组"));
            None
        }
    }
}

fn decode(value: &Value) -> Result<ContentMeta, FieldErrors> {
    let mut dec = Decoder::new(Mode::Input);
    let Some(mut o) = dec.root(value, "资源元数据") else {
        return dec.finish(None);
    };
    let d = &mut dec;
    let title = o.text(d, "title", "标题", TITLE);
    let summary = o.text(d, "summary", "简介", SUMMARY);
    let tags: Option<BTreeSet<Tag>> = o.set(d, "tags", "标签", MAX_CONTENT_TAGS);
    if tags.as_ref().is_some_and(BTreeSet::is_empty) {
        d.push("tags", code::REQUIRED, "标签为必填项，至少选一个");
    }
    let regions = string_list(&mut o, d, "regions", "适用地区").and_then(|items| {
        let before = d_count(d);
        let mut out: Vec<AreaScope> = Vec::new();
        for (path, v) in items {
            match v {
                Value::String(s) => match AreaScope::parse(s) {
                    Ok(scope) if out.contains(&scope) => {
                        d.push(path, code::INCONSISTENT, format!("适用地区“{s}”重复"))
                    }
                    Ok(scope) => out.push(scope),
                    Err(e) => d.push(path, code::BAD_FORMAT, format!("适用地区“{s}”无效：{e}")),
                },
                _ => d.push(path, code::WRONG_TYPE, "适用地区的每一项应为区划代码文字"),
            }
        }
        if out.len() > MAX_REGIONS {
            d.push(
                "regions",
                code::TOO_MANY,
                format!("适用地区最多{MAX_REGIONS}个，现有{}个", out.len()),
            );
        }
        (d_count(d) == before).then_some(out)
    });
    let months = string_list(&mut o, d, "months", "适用月份").and_then(|items| {
        let before = d_count(d);
        let mut out = BTreeSet::new();
        for (path, v) in items {
            match v.as_i64() {
                Some(m @ 1..=12) => {
                    out.insert(m as u8);
                }
                Some(m) => d.push(
                    path,
                    code::OUT_OF_RANGE,
                    format!("适用月份应在1到12之间，现为{m}"),
                ),
                None => d.push(path, code::WRONG_TYPE, "适用月份的每一项应为整数"),
            }
        }
        (d_count(d) == before).then_some(out)
    });
    let audience: Option<BTreeSet<AgeBand>> = o.set(d, "audience", "适用人群", AgeBand::ALL.len());
    let language = o.coded_or(d, "language", "语言", Some(Language::Mandarin));
    let format = o.coded_or(d, "format", "格式", None);
    let bytes = file_bytes(&mut o, d, "bytes", "文件大小");
    let renditions = string_list(&mut o, d, "renditions", "其他版本").and_then(|items| {
        let before = d_count(d);
        let mut out: Vec<Rendition> = Vec::new();
        for (path, v) in items {
            let Some(mut r) = d.nested(v, &path) else {
                continue;
            };
            let id = r.text(
                d,
                "id",
                "版本编号",
                TextRule {
                    max_chars: 16,
                    required: true,
                    multiline: false,
                },
            );
            let format = r.coded_or(d, "format", "版本格式", None);
            let lang = r.coded(d, "language", "版本语言").flatten();
            let bytes = file_bytes(&mut r, d, "bytes", "版本文件大小");
            r.finish(d);
            if let Some(id) = &id {
                if !id.is_empty() && !valid_rendition_id(id) {
                    d.push(
                        format!("{path}.id"),
                        code::BAD_FORMAT,
                        "版本编号只能由字母、数字、下划线或连字符组成",
                    );
                } else if id == MAIN_RENDITION || out.iter().any(|x| &x.id == id) {
                    d.push(
                        format!("{path}.id"),
                        code::INCONSISTENT,
                        format!("版本编号“{id}”重复（main 为主文件保留）"),
                    );
                }
            }
            if let (Some(id), Some(format), Some(bytes)) = (id, format, bytes) {
                out.push(Rendition {
                    id,
                    format,
                    // A rendition without a language has the main file's.
                    language: lang.or(language).unwrap_or(Language::Mandarin),
                    bytes,
                });
            }
        }
        if out.len() > MAX_RENDITIONS {
            d.push(
                "renditions",
                code::TOO_MANY,
                format!("其他版本最多{MAX_RENDITIONS}个，现有{}个", out.len()),
            );
        }
        (d_count(d) == before).then_some(out)
    });
    let source = o.text(d, "source", "来源", SOURCE);
    let review_date = o.date(d, "review_date", "审核日期");
    if matches!(review_date, Some(None)) {
        d.push("review_date", code::REQUIRED, "审核日期为必填项");
    }
    let expires = o.date(d, "expires", "失效日期");
    o.finish(d);
    if let (Some(Some(review)), Some(Some(expires))) = (review_date, expires) {
        if expires <= review {
            d.push(
                "expires",
                code::INCONSISTENT,
                format!("失效日期（{expires}）应晚于审核日期（{review}）"),
            );
        }
    }
    let meta = (|| {
        Some(ContentMeta {
            title: title?,
            summary: summary?,
            tags: tags?,
            regions: regions?,
            months: months?,
            audience: audience?,
            language: language?,
            format: format?,
            bytes: bytes?,
            renditions: renditions?,
            source: source?,
            review_date: review_date??,
            expires: expires?,
        })
    })();
    dec.finish(meta)
}

fn d_count(d: &Decoder) -> usize {
    d.count()
}

fn file_bytes(o: &mut Obj<'_>, d: &mut Decoder, key: &'static str, zh: &str) -> Option<u64> {
    o.int(d, key, zh, 1, MAX_FILE_BYTES as i64, None)
        .and_then(|n| u64::try_from(n).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "title": "柑橘红蜘蛛春季防治", "summary": "四到六月是红蜘蛛第一个高峰。",
            "tags": ["plt.citrus", "plt.pesticide"], "regions": ["510122", "5101"],
            "months": [4, 5, 6], "audience": ["age_18_59", "age_60_69"],
            "language": "sichuanese", "format": "video", "bytes": 34_000_000,
            "renditions": [
                {"id": "480p", "format": "video", "language": "sichuanese", "bytes": 14_000_000},
                {"id": "audio", "format": "audio", "language": "mandarin", "bytes": 2_400_000}
            ],
            "source": "四川省农技推广总站", "review_date": "2025-03-01", "expires": "2027-03-01"
        })
    }

    #[test]
    fn parses_and_round_trips() {
        let meta = ContentMeta::from_json(&valid()).unwrap();
        assert_eq!(meta.tags.len(), 2);
        assert_eq!(meta.regions.len(), 2);
        assert_eq!(meta.months, BTreeSet::from([4, 5, 6]));
        assert_eq!(meta.all_renditions().count(), 3);
        let again = ContentMeta::from_json(&serde_json::to_value(&meta).unwrap()).unwrap();
        assert_eq!(again, meta);
        meta.validate().unwrap();
    }

    #[test]
    fn minimal_item_gets_defaults() {
        let meta = ContentMeta::from_json(&json!({
            "title": "防溺水", "tags": {"saf.drown": true}, "format": "pdf", "bytes": 500_000,
            "review_date": "2025-05-01"
        }))
        .unwrap();
        assert!(meta.regions.is_empty() && meta.months.is_empty() && meta.audience.is_empty());
        assert_eq!(meta.language, Language::Mandarin);
        assert!(meta.is_live(Date::new(2099, 1, 1).unwrap()));
    }

    #[test]
    fn reports_every_error_at_once_in_chinese() {
        let errors = ContentMeta::from_json(&json!({
            "title": "", "tags": ["no.such"], "regions": ["5101x", "5101", "5101"],
            "months": [0, 13, "4"], "audience": ["age_200"], "format": "hologram",
            "bytes": 0, "renditions": [{"id": "main", "format": "audio", "language": "yi",
            "bytes": 5}, {"id": "a b", "format": "audio", "language": "yi", "bytes": 5}],
            "review_date": "2025-13-01", "expires": "soon", "colour": "red"
        }))
        .unwrap_err();
        for (field, code) in [
            ("title", code::REQUIRED),
            ("tags[0]", code::UNKNOWN_VALUE),
            ("regions[0]", code::BAD_FORMAT),
            ("regions[2]", code::INCONSISTENT),
            ("months[0]", code::OUT_OF_RANGE),
            ("months[1]", code::OUT_OF_RANGE),
            ("months[2]", code::WRONG_TYPE),
            ("audience[0]", code::UNKNOWN_VALUE),
            ("format", code::UNKNOWN_VALUE),
            ("bytes", code::OUT_OF_RANGE),
            ("renditions[0].id", code::INCONSISTENT),
            ("renditions[1].id", code::BAD_FORMAT),
            ("review_date", code::BAD_FORMAT),
            ("expires", code::BAD_FORMAT),
            ("colour", code::UNKNOWN_FIELD),
        ] {
            assert!(errors.has(field, code), "{field} {code}: {errors:?}");
        }
        assert!(errors
            .iter()
            .all(|e| e.message.chars().any(|c| c > '\u{2e80}')));
    }

    #[test]
    fn requires_tags_format_size_review_and_expiry_after_review() {
        let errors = ContentMeta::from_json(&json!({
            "title": "x", "tags": [], "review_date": "2025-03-01", "expires": "2025-03-01"
        }))
        .unwrap_err();
        assert!(errors.has("tags", code::REQUIRED));
        assert!(errors.has("format", code::REQUIRED));
        assert!(errors.has("bytes", code::REQUIRED));
        assert!(errors.has("expires", code::INCONSISTENT));
        let errors = ContentMeta::from_json(
            &json!({"title": "x", "tags": ["saf.drown"], "format": "pdf",
            "bytes": 1}),
        )
        .unwrap_err();
        assert!(errors.has("review_date", code::REQUIRED));
        let too_many: Vec<&str> = Tag::ALL.iter().take(9).map(|t| t.id()).collect();
        let mut v = valid();
        v["tags"] = json!(too_many);
        assert!(ContentMeta::from_json(&v)
            .unwrap_err()
            .has("tags", code::TOO_MANY));
    }

    #[test]
    fn expiry_is_exclusive() {
        let meta = ContentMeta::from_json(&valid()).unwrap();
        assert!(meta.is_live(Date::new(2027, 2, 28).unwrap()));
        assert!(!meta.is_live(Date::new(2027, 3, 1).unwrap()));
    }

    pub(crate) fn arb_meta() -> impl Strategy<Value = ContentMeta> {
        (
            "[a-z\u{4e00}-\u{4e2f}]{1,60}",
            proptest::collection::btree_set(proptest::sample::select(Tag::ALL), 1..=8),
            proptest::collection::btree_set(1u8..=12, 0..=12),
            proptest::collection::btree_set(proptest::sample::select(AgeBand::ALL), 0..=6),
            proptest::sample::select(Format::ALL),
            1u64..=MAX_FILE_BYTES,
            proptest::option::of(1u16..=5),
            proptest::sample::select(&["", "5101", "510122", "51"][..]),
        )
            .prop_map(
                |(title, tags, months, audience, format, bytes, expiry_years, region)| {
                    let review_date = Date::new(2025, 3, 1).unwrap();
                    ContentMeta {
                        title,
                        summary: String::new(),
                        tags,
                        regions: if region.is_empty() {
                            Vec::new()
                        } else {
                            vec![AreaScope::parse(region).unwrap()]
                        },
                        months,
                        audience,
                        language: Language::Mandarin,
                        format,
                        bytes,
                        renditions: vec![Rendition {
                            id: "audio".into(),
                            format: Format::Audio,
                            language: Language::Yi,
                            bytes: 2_400_000,
                        }],
                        source: String::new(),
                        review_date,
                        expires: expiry_years.and_then(|y| review_date.add_years(y)),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn json_round_trip(meta in arb_meta()) {
            let json = serde_json::to_value(&meta).unwrap();
            let again = ContentMeta::from_json(&json).unwrap();
            prop_assert_eq!(again, meta);
        }
    }
}
