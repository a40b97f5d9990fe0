//! Typed views of the household profile (`hh`) and household private (`hp`) documents.
//!
//! This module owns the household survey schema of `research/domain.md` §1.2: which fields a
//! cadre records, their JSON names, defaults and limits, the rules that tie fields together, and
//! the mapping to Automerge documents (representation: see [`crate::fields`]).
//!
//! The household's pseudonymous id is the document id of its keys `<village>/hh/<id>` and
//! `<village>/hp/<id>`; it is not repeated inside the documents. The profile is pseudonymous and
//! may reach the provincial hub; the private part (name, phone, roster number, notes, health
//! interests) stays in the county at most.
//!
//! **Never recorded** (PIPL minimisation): ID-card numbers, birthdates, bank accounts, GPS
//! positions, exact income, members' names, diagnoses.
//!
//! # Profile fields (`hh`)
//!
//! Required: `village`, `group`, `residents`. Everything else is optional; the default is in
//! parentheses.
//!
//! | field | JSON | meaning |
//! |---|---|---|
//! | `village` | string, 12 digits, village level | 所属村 |
//! | `group` | integer 1–99 | 村民小组 |
//! | `residents` | integer 0–30 | 家庭人口: everyone belonging to the household, **including members working away**; the people at home are `residents − working_away` |
//! | `age_0_5` … `age_70_plus` | integer 0–30 (default 0) | members per age band: `age_0_5`, `age_6_14`, `age_15_17`, `age_18_59`, `age_60_69`, `age_70_plus`; may sum to less than `residents` (ages not known), never more |
//! | `working_away` | integer 0–30 (default 0) | members working away most of the year (外出务工) |
//! | `left_behind_elderly`, `left_behind_children`, `elderly_alone` | boolean (default false) | 留守老人 / 留守儿童 / 独居老人 |
//! | `education` | [`Education`] id or null | highest education of the main adult at home |
//! | `smartphones` | integer 0–20 (default 0) | smartphones in the household |
//! | `phone_skill_low` | boolean (default false) | the main user struggles with a smartphone |
//! | `can_watch_video`, `uses_wechat`, `has_tv` | boolean (default false) | media use |
//! | `signal` | [`Signal`] id or null | mobile signal at home |
//! | `channel` | [`Channel`] id or null | preferred channel for science content |
//! | `language` | [`Language`] id or null | preferred language for audio and text |
//! | `crops` | `{crop id: {"area_band": 1–5}}` (default {}) | crops grown; [`AREA_BANDS`] |
//! | `livestock` | `{livestock id: {"herd_band": 1–5}}` (default {}) | animals kept; [`HERD_BANDS`] |
//! | `assets` | `{asset id: true}` (default {}) | assets and activities ([`Asset`]) |
//! | `main_income` | [`Income`] id or null | main income source only, never amounts |
//! | `housing` | [`Housing`] id or null | house structure |
//! | `cooking_fuel`, `heating_fuel` | [`Fuel`] id or null | null heating = none or not recorded |
//! | `water` | [`Water`] id or null | drinking water source |
//! | `toilet` | [`Toilet`] id or null | toilet type |
//! | `sewer` | boolean (default false) | household waste water goes to a sewer or treatment facility |
//! | `site_risks` | `{risk id: true}` (default {}) | house site next to a slope foot, gully mouth, river |
//! | `eats_wild_mushrooms` | boolean (default false) | gathers or eats wild mushrooms |
//! | `stated_needs` | `{tag id: {"priority": 1–3 or null}}` (default {}) | needs the household states; at most [`MAX_STATED_NEEDS`]; only askable (household) tags; each priority used once |
//! | `surveyor` | string ≤ 32 (default "") | surveyor id |
//! | `survey_date`, `next_review` | `YYYY-MM-DD` or null | survey date; next review (not before the survey) |
//! | `consent_version` | string ≤ 16 (default "") | version of the consent text read to the household |
//!
//! # Private fields (`hp`)
//!
//! All optional. `head_name` (Text, ≤ 20, one line), `phone` ("" or an 11-digit mobile
//! `1[3-9]xxxxxxxxx` or a landline `0xx(x)-xxxxxxx(x)`), `roster_no` (≤ 20, one line),
//! `notes` (Text, ≤ 2000), `stated_need_text` (Text, ≤ 500), `health_interests`
//! (`{interest id: true}`, [`HealthInterest`]), `aid_monitoring` (防返贫监测对象 per the village
//! ledger, boolean), `separate_consent` (单独同意 to record sensitive information; required
//! before any health interest or the aid flag is recorded).
//!
//! # Example
//!
//! ```
//! use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
//! let profile = HouseholdProfile::from_json(&serde_json::json!({
//!     "village": "510122104201", "group": 3, "residents": 4,
//!     "age_6_14": 1, "age_18_59": 2, "age_70_plus": 1, "working_away": 2,
//!     "left_behind_elderly": true, "left_behind_children": true,
//!     "smartphones": 1, "uses_wechat": true, "channel": "wechat_group",
//!     "language": "sichuanese",
//!     "crops": {"citrus": {"area_band": 2}, "rice": {"area_band": 1}},
//!     "livestock": {"pig": {"herd_band": 1}},
//!     "assets": {"dogs": true},
//!     "housing": "brick_concrete", "cooking_fuel": "firewood",
//!     "stated_needs": {"plt.citrus": {"priority": 1}},
//!     "survey_date": "2025-03-18"
//! })).expect("valid");
//! assert_eq!(profile.residents, 4);
//! let private = HouseholdPrivate::from_json(&serde_json::json!({
//!     "head_name": "王秀英", "phone": "13812345678", "roster_no": "3-017",
//!     "health_interests": {"blood_pressure": true}, "separate_consent": true
//! })).expect("valid");
//! assert_eq!(private.head_name, "王秀英");
//! ```

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::ReadDoc;
use serde::Serialize;
use serde_json::Value;

use crate::area::{AreaCode, Level};
use crate::fields::{
    check_identity, check_schema, code, coded_enum, doc_to_json, serialize_set, write_root, Date,
    Decoder, FieldError, FieldErrors, Mode, Obj, TextRule, ViewError, SCHEMA_VERSION,
};
use crate::key::{DocKey, KeyError, Kind};
use crate::taxonomy::Tag;

/// Largest household size (and largest count of any age band).
pub const MAX_RESIDENTS: u8 = 30;
/// Largest number of smartphones.
pub const MAX_SMARTPHONES: u8 = 20;
/// Most stated needs per household.
pub const MAX_STATED_NEEDS: usize = 10;
/// Highest stated-need priority (1 = most important).
pub const MAX_PRIORITY: u8 = 3;
/// Meaning of crop area bands 1–5 (亩).
pub const AREA_BANDS: [&str; 5] = ["1亩以下", "1–3亩", "3–10亩", "10–50亩", "50亩以上"];
/// Meaning of herd bands 1–5.
pub const HERD_BANDS: [&str; 5] = ["自家少量", "少量出售", "专业户", "规模户", "大规模养殖"];

coded_enum! {
    /// Highest education of the main adult at home.
    pub enum Education {
        None = "none", "未上学";
        Primary = "primary", "小学";
        Junior = "junior", "初中";
        Senior = "senior", "高中/中专";
        College = "college", "大专及以上";
    }
}

coded_enum! {
    /// Mobile signal quality at home.
    pub enum Signal {
        None = "none", "无信号";
        Weak = "weak", "弱";
        Fair = "fair", "一般";
        Good = "good", "好";
    }
}

coded_enum! {
    /// Preferred channel for science content.
    pub enum Channel {
        Loudspeaker = "loudspeaker", "大喇叭";
        WechatGroup = "wechat_group", "微信群";
        ShortVideo = "short_video", "短视频";
        Paper = "paper", "纸质";
        Visit = "visit", "上门";
    }
}

coded_enum! {
    /// Preferred language for audio and text (the language, never 民族).
    pub enum Language {
        Mandarin = "mandarin", "普通话";
        Sichuanese = "sichuanese", "四川话";
        Yi = "yi", "彝语";
        TibetanKham = "tibetan_kham", "藏语康方言";
        TibetanAmdo = "tibetan_amdo", "藏语安多方言";
        Gyalrong = "gyalrong", "嘉绒语";
        Qiang = "qiang", "羌语";
    }
}

coded_enum! {
    /// A crop grown by the household.
    pub enum Crop {
        Rice = "rice", "水稻";
        Maize = "maize", "玉米";
        Soybean = "soybean", "大豆";
        Wheat = "wheat", "小麦";
        Rape = "rape", "油菜";
        Potato = "potato", "马铃薯";
        SweetPotato = "sweet_potato", "红薯";
        HighlandBarley = "highland_barley", "青稞";
        Vegetables = "vegetables", "蔬菜";
        Citrus = "citrus", "柑橘";
        Kiwi = "kiwi", "猕猴桃";
        Tea = "tea", "茶";
        SichuanPepper = "sichuan_pepper", "花椒";
        OtherFruit = "other_fruit", "其他果树";
        Herbs = "herbs", "中药材";
        Fungi = "fungi", "食用菌";
    }
}

coded_enum! {
    /// Animals kept by the household.
    pub enum Livestock {
        Pig = "pig", "猪";
        Cattle = "cattle", "牛";
        Yak = "yak", "牦牛";
        Sheep = "sheep", "羊";
        Poultry = "poultry", "鸡鸭鹅";
        Rabbit = "rabbit", "兔";
        Bee = "bee", "蜂";
        Fish = "fish", "鱼";
    }
}

coded_enum! {
    /// Assets and activities of the household.
    pub enum Asset {
        Greenhouse = "greenhouse", "大棚";
        Machinery = "machinery", "农机";
        Forest = "forest", "林地/竹林";
        FishPond = "fish_pond", "鱼塘";
        RiceFish = "rice_fish", "稻田养鱼";
        Dogs = "dogs", "养狗";
        Motorbike = "motorbike", "摩托/三轮";
        Agritourism = "agritourism", "农家乐";
        Ecommerce = "ecommerce", "电商/网上卖农产品";
        CoopMember = "coop_member", "合作社成员";
    }
}

coded_enum! {
    /// Main income source (never amounts).
    pub enum Income {
        Farming = "farming", "务农";
        Wage = "wage", "务工";
        Business = "business", "经营";
        Transfer = "transfer", "转移性收入";
    }
}

coded_enum! {
    /// House structure.
    pub enum Housing {
        SteelConcrete = "steel_concrete", "钢混";
        BrickConcrete = "brick_concrete", "砖混";
        BrickWood = "brick_wood", "砖木";
        EarthWood = "earth_wood", "土木";
        Wood = "wood", "木";
    }
}

coded_enum! {
    /// Fuel for cooking or heating.
    pub enum Fuel {
        Electric = "electric", "电";
        NaturalGas = "natural_gas", "天然气";
        Lpg = "lpg", "液化气";
        Biogas = "biogas", "沼气";
        Coal = "coal", "煤";
        Charcoal = "charcoal", "炭";
        Firewood = "firewood", "柴草";
        Other = "other", "其他";
    }
}

coded_enum! {
    /// Drinking water source.
    pub enum Water {
        Piped = "piped", "集中供水";
        WellSpring = "well_spring", "分散井泉";
        Cistern = "cistern", "水窖";
        Surface = "surface", "河塘水";
        Other = "other", "其他";
    }
}

coded_enum! {
    /// Toilet type.
    pub enum Toilet {
        Sanitary = "sanitary", "卫生厕所";
        DryPit = "dry_pit", "旱厕";
    }
}

coded_enum! {
    /// Where the house site is exposed (a yes/no per risk, never coordinates).
    pub enum SiteRisk {
        SlopeFoot = "slope_foot", "坡脚";
        GullyMouth = "gully_mouth", "沟口";
        Riverside = "riverside", "临河";
    }
}

coded_enum! {
    /// A health topic the household wants (an interest, never a diagnosis). Sensitive: recorded
    /// only in the private document, with separate consent.
    pub enum HealthInterest {
        BloodPressure = "blood_pressure", "血压";
        BloodSugar = "blood_sugar", "血糖";
        ElderlyCare = "elderly_care", "老人护理";
        Maternal = "maternal", "孕产";
        Child = "child", "儿童健康";
        Mental = "mental", "心理";
        Rehab = "rehab", "残疾预防与康复";
        Medication = "medication", "合理用药";
    }
}

impl HealthInterest {
    /// The need tag this interest stands for.
    pub const fn tag(self) -> Tag {
        match self {
            HealthInterest::BloodPressure => Tag::HltBp,
            HealthInterest::BloodSugar => Tag::HltDm,
            HealthInterest::ElderlyCare => Tag::HltElderly,
            HealthInterest::Maternal => Tag::HltMaternal,
            HealthInterest::Child => Tag::HltChild,
            HealthInterest::Mental => Tag::HltMental,
            HealthInterest::Rehab => Tag::HltDisability,
            HealthInterest::Medication => Tag::HltMedicine,
        }
    }
}

/// Details of one crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CropEntry {
    /// Area band 1–5 ([`AREA_BANDS`]); missing reads as 1.
    pub area_band: u8,
}

/// Details of one kind of livestock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HerdEntry {
    /// Herd band 1–5 ([`HERD_BANDS`]); missing reads as 1.
    pub herd_band: u8,
}

/// Details of one stated need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StatedNeed {
    /// 1 (most important) to 3, or none.
    pub priority: Option<u8>,
}

/// The household profile (`hh`): pseudonymous, non-sensitive; may reach the hub.
///
/// Field meanings, defaults and limits: see the module documentation. Serialises to the JSON
/// shape that [`HouseholdProfile::from_json`] accepts and the document mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdProfile {
    /// 所属村: a village-level area code.
    pub village: AreaCode,
    /// 村民小组, 1–99.
    pub group: u8,
    /// 家庭人口, including members working away.
    pub residents: u8,
    /// Members aged 0–5.
    pub age_0_5: u8,
    /// Members aged 6–14.
    pub age_6_14: u8,
    /// Members aged 15–17.
    pub age_15_17: u8,
    /// Members aged 18–59.
    pub age_18_59: u8,
    /// Members aged 60–69.
    pub age_60_69: u8,
    /// Members aged 70 or more.
    pub age_70_plus: u8,
    /// Members working away most of the year.
    pub working_away: u8,
    /// 留守老人.
    pub left_behind_elderly: bool,
    /// 留守儿童.
    pub left_behind_children: bool,
    /// 独居老人.
    pub elderly_alone: bool,
    /// Highest education of the main adult at home.
    pub education: Option<Education>,
    /// Smartphones in the household.
    pub smartphones: u8,
    /// The main user struggles with a smartphone.
    pub phone_skill_low: bool,
    /// Can watch online video.
    pub can_watch_video: bool,
    /// Uses WeChat.
    pub uses_wechat: bool,
    /// Has a TV.
    pub has_tv: bool,
    /// Mobile signal at home.
    pub signal: Option<Signal>,
    /// Preferred channel.
    pub channel: Option<Channel>,
    /// Preferred language.
    pub language: Option<Language>,
    /// Crops grown, with area bands.
    pub crops: BTreeMap<Crop, CropEntry>,
    /// Livestock kept, with herd bands.
    pub livestock: BTreeMap<Livestock, HerdEntry>,
    /// Assets and activities.
    #[serde(serialize_with = "serialize_set")]
    pub assets: BTreeSet<Asset>,
    /// Main income source.
    pub main_income: Option<Income>,
    /// House structure.
    pub housing: Option<Housing>,
    /// Cooking fuel.
    pub cooking_fuel: Option<Fuel>,
    /// Heating fuel (none = no heating or not recorded).
    pub heating_fuel: Option<Fuel>,
    /// Drinking water source.
    pub water: Option<Water>,
    /// Toilet type.
    pub toilet: Option<Toilet>,
    /// Waste water goes to a sewer or treatment facility.
    pub sewer: bool,
    /// House-site risks.
    #[serde(serialize_with = "serialize_set")]
    pub site_risks: BTreeSet<SiteRisk>,
    /// Gathers or eats wild mushrooms.
    pub eats_wild_mushrooms: bool,
    /// Needs the household states (askable tags only), with priorities.
    pub stated_needs: BTreeMap<Tag, StatedNeed>,
    /// Surveyor id.
    pub surveyor: String,
    /// Date of the survey.
    pub survey_date: Option<Date>,
    /// Version of the consent text read to the household.
    pub consent_version: String,
    /// Date of the next review.
    pub next_review: Option<Date>,
}

/// The household's private part (`hp`): stays in the county at most, never reaches the hub.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HouseholdPrivate {
    /// Head of household's name (Text).
    pub head_name: String,
    /// Phone for pushes: "" or a mobile or landline number.
    pub phone: String,
    /// Local roster number.
    pub roster_no: String,
    /// Free-text notes (Text).
    pub notes: String,
    /// The stated need in the household's own words (Text); may contain names, so it stays here.
    pub stated_need_text: String,
    /// Health topics of interest (sensitive; needs `separate_consent`).
    #[serde(serialize_with = "serialize_set")]
    pub health_interests: BTreeSet<HealthInterest>,
    /// 防返贫监测对象 per the village ledger (sensitive; needs `separate_consent`).
    pub aid_monitoring: bool,
    /// Separate consent (单独同意) to record sensitive information.
    pub separate_consent: bool,
}

/// Free-text fields of the private document, stored as Automerge `Text`.
pub const PRIVATE_TEXT_FIELDS: [&str; 3] = ["head_name", "notes", "stated_need_text"];

/// Every field of the private document (`hp`): none of them may appear in a profile.
pub const PRIVATE_FIELDS: [&str; 8] = [
    "head_name",
    "phone",
    "roster_no",
    "notes",
    "stated_need_text",
    "health_interests",
    "aid_monitoring",
    "separate_consent",
];

/// What in a profile document (`hh`) is sensitive and so may not travel above the county: a
/// field of the private part ([`PRIVATE_FIELDS`]) at the root, and a sensitive (voluntary)
/// taxonomy tag anywhere — as a map key (a stated need, a derived tag) or as a string value.
/// Returns the JSON paths found, empty for a clean profile.
///
/// [`HouseholdProfile::read_from`] already drops such tags and the typed writers never write
/// them; this check is for the sync boundary, where a document may come from anything that
/// wrote the store directly.
pub fn sensitive_in_profile<R: ReadDoc>(doc: &R) -> Result<Vec<String>, ViewError> {
    let json = doc_to_json(doc)?;
    let mut found = Vec::new();
    if let Value::Object(root) = &json {
        for field in PRIVATE_FIELDS {
            if root.contains_key(field) {
                found.push(field.to_string());
            }
        }
    }
    sensitive_tags_in(&json, "", &mut found);
    Ok(found)
}

fn is_sensitive_tag(s: &str) -> bool {
    Tag::parse(s).is_some_and(|t| t.flag() == crate::taxonomy::TagFlag::Voluntary)
}

fn sensitive_tags_in(v: &Value, path: &str, found: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                if is_sensitive_tag(k) {
                    found.push(join(k));
                }
                sensitive_tags_in(inner, &join(k), found);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                sensitive_tags_in(inner, &join(&i.to_string()), found);
            }
        }
        Value::String(s) if is_sensitive_tag(s) => found.push(path.to_string()),
        _ => {}
    }
}

const SURVEYOR: TextRule = TextRule {
    max_chars: 32,
    required: false,
    multiline: false,
};
const CONSENT_VERSION: TextRule = TextRule {
    max_chars: 16,
    required: false,
    multiline: false,
};

fn encode_error(e: serde_json::Error) -> FieldErrors {
    FieldErrors(vec![FieldError::new(
        "",
        code::WRONG_TYPE,
        format!("内部编码失败：{e}"),
    )])
}

impl HouseholdProfile {
    /// A profile with only the required fields set and every other field at its default.
    pub fn new(village: AreaCode, group: u8, residents: u8) -> HouseholdProfile {
        HouseholdProfile {
            village,
            group,
            residents,
            age_0_5: 0,
            age_6_14: 0,
            age_15_17: 0,
            age_18_59: 0,
            age_60_69: 0,
            age_70_plus: 0,
            working_away: 0,
            left_behind_elderly: false,
            left_behind_children: false,
            elderly_alone: false,
            education: None,
            smartphones: 0,
            phone_skill_low: false,
            can_watch_video: false,
            uses_wechat: false,
            has_tv: false,
            signal: None,
            channel: None,
            language: None,
            crops: BTreeMap::new(),
            livestock: BTreeMap::new(),
            assets: BTreeSet::new(),
            main_income: None,
            housing: None,
            cooking_fuel: None,
            heating_fuel: None,
            water: None,
            toilet: None,
            sewer: false,
            site_risks: BTreeSet::new(),
            eats_wild_mushrooms: false,
            stated_needs: BTreeMap::new(),
            surveyor: String::new(),
            survey_date: None,
            consent_version: String::new(),
            next_review: None,
        }
    }

    /// Parses API or form input, collecting every problem (see the module docs for the rules).
    pub fn from_json(value: &Value) -> Result<HouseholdProfile, FieldErrors> {
        Self::decode(value, Mode::Input)
    }

    /// Checks a value built in code against the same rules as [`HouseholdProfile::from_json`].
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let json = serde_json::to_value(self).map_err(encode_error)?;
        Self::decode(&json, Mode::Input).map(|_| ())
    }

    /// Reads the profile from its document. Missing fields read as their defaults; values of
    /// the wrong type or out of range are errors; cross-field consistency is not checked (see
    /// [`crate::fields`]). A stated need whose tag is not askable is dropped.
    pub fn read_from<R: ReadDoc>(doc: &R) -> Result<HouseholdProfile, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        Ok(Self::decode(&json, Mode::Document)?)
    }

    /// Validates the profile, then writes into `tx` only the fields that differ from what the
    /// document holds. Refuses to change the village of an existing document.
    pub fn write_to<T: Transactable>(&self, tx: &mut T) -> Result<(), ViewError> {
        self.validate()?;
        check_identity(tx, "village", "所属村", self.village.as_str())?;
        let desired = serde_json::to_value(self).map_err(|e| ViewError::Encode(e.to_string()))?;
        write_root(tx, &desired, &[])
    }

    /// The key of this household's profile document, given its id.
    pub fn key(&self, id: &str) -> Result<DocKey, KeyError> {
        DocKey::new(self.village, Kind::Hh, id)
    }

    /// Members aged 60 or more.
    pub fn elders(&self) -> u8 {
        self.age_60_69.saturating_add(self.age_70_plus)
    }

    /// Members aged 0–14.
    pub fn children(&self) -> u8 {
        self.age_0_5.saturating_add(self.age_6_14)
    }

    /// Members aged 6–17 (school age).
    pub fn school_age(&self) -> u8 {
        self.age_6_14.saturating_add(self.age_15_17)
    }

    /// Members living at home: residents minus those working away.
    pub fn at_home(&self) -> u8 {
        self.residents.saturating_sub(self.working_away)
    }

    fn decode(value: &Value, mode: Mode) -> Result<HouseholdProfile, FieldErrors> {
        let mut dec = Decoder::new(mode);
        let Some(mut o) = dec.root(value, "农户档案") else {
            return dec.finish(None);
        };
        let d = &mut dec;
        o.schema(d);
        let village = o.area(d, "village", "所属村", &[Level::Village]);
        let group = o.small(d, "group", "村民小组", 1, 99, None);
        let residents = o.small(d, "residents", "家庭人口", 0, MAX_RESIDENTS, None);
        let count = |o: &mut Obj<'_>, d: &mut Decoder, key: &'static str, zh: &str| {
            o.small(d, key, zh, 0, MAX_RESIDENTS, Some(0))
        };
        let age_0_5 = count(&mut o, d, "age_0_5", "0–5岁人数");
        let age_6_14 = count(&mut o, d, "age_6_14", "6–14岁人数");
        let age_15_17 = count(&mut o, d, "age_15_17", "15–17岁人数");
        let age_18_59 = count(&mut o, d, "age_18_59", "18–59岁人数");
        let age_60_69 = count(&mut o, d, "age_60_69", "60–69岁人数");
        let age_70_plus = count(&mut o, d, "age_70_plus", "70岁以上人数");
        let working_away = count(&mut o, d, "working_away", "外出务工人数");
        let left_behind_elderly = o.flag(d, "left_behind_elderly", "留守老人");
        let left_behind_children = o.flag(d, "left_behind_children", "留守儿童");
        let elderly_alone = o.flag(d, "elderly_alone", "独居老人");
        let education = o.coded(d, "education", "主要劳动力文化程度");
        let smartphones = o.small(
            d,
            "smartphones",
            "智能手机数量",
            0,
            MAX_SMARTPHONES,
            Some(0),
        );
        let phone_skill_low = o.flag(d, "phone_skill_low", "手机使用能力弱");
        let can_watch_video = o.flag(d, "can_watch_video", "会看视频");
        let uses_wechat = o.flag(d, "uses_wechat", "使用微信");
        let has_tv = o.flag(d, "has_tv", "有电视");
        let signal = o.coded(d, "signal", "手机信号");
        let channel = o.coded(d, "channel", "偏好渠道");
        let language = o.coded(d, "language", "偏好语言");
        let crops = o.entries(
            d,
            "crops",
            "种植作物",
            Crop::ALL.len(),
            |crop: Crop, e, d| {
                let zh = format!("{}种植面积档", crop.zh_name());
                e.small(d, "area_band", &zh, 1, 5, Some(1))
                    .map(|area_band| CropEntry { area_band })
            },
        );
        let livestock = o.entries(
            d,
            "livestock",
            "养殖",
            Livestock::ALL.len(),
            |animal: Livestock, e, d| {
                let zh = format!("{}养殖规模档", animal.zh_name());
                e.small(d, "herd_band", &zh, 1, 5, Some(1))
                    .map(|herd_band| HerdEntry { herd_band })
            },
        );
        let assets = o.set(d, "assets", "设施与经营", Asset::ALL.len());
        let main_income = o.coded(d, "main_income", "主要收入来源");
        let housing = o.coded(d, "housing", "房屋结构");
        let cooking_fuel = o.coded(d, "cooking_fuel", "做饭燃料");
        let heating_fuel = o.coded(d, "heating_fuel", "取暖燃料");
        let water = o.coded(d, "water", "饮用水来源");
        let toilet = o.coded(d, "toilet", "厕所类型");
        let sewer = o.flag(d, "sewer", "生活污水接入管网");
        let site_risks = o.set(d, "site_risks", "房屋选址风险", SiteRisk::ALL.len());
        let eats_wild_mushrooms = o.flag(d, "eats_wild_mushrooms", "采食野生菌");
        let stated_path = o.path("stated_needs");
        let stated_needs = o
            .entries(
                d,
                "stated_needs",
                "自述需求",
                usize::MAX,
                |tag: Tag, e, d| {
                    let zh = format!("需求“{}”的优先级", tag.zh_name());
                    let priority = e.opt_small(d, "priority", &zh, 1, MAX_PRIORITY)?;
                    if tag.is_askable() {
                        return Some(Some(StatedNeed { priority }));
                    }
                    if d.mode() == Mode::Input {
                        d.push(
                            format!("{stated_path}.{}", tag.id()),
                            code::NOT_ALLOWED,
                            format!(
                                "“{}”是{}，不能作为农户自述需求",
                                tag.zh_name(),
                                tag.flag().zh_name()
                            ),
                        );
                        return None;
                    }
                    // A stored document carrying a non-askable tag: drop it (the next write removes
                    // it from the document), never pass it on.
                    Some(None)
                },
            )
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect::<BTreeMap<Tag, StatedNeed>>()
            });
        if let Some(n) = stated_needs.as_ref().map(BTreeMap::len) {
            if n > MAX_STATED_NEEDS && d.mode() == Mode::Input {
                d.push(
                    stated_path.clone(),
                    code::TOO_MANY,
                    format!("自述需求最多{MAX_STATED_NEEDS}项，现有{n}项"),
                );
            }
        }
        let surveyor = o.text(d, "surveyor", "调查员编号", SURVEYOR);
        let survey_date = o.date(d, "survey_date", "调查日期");
        let consent_version = o.text(d, "consent_version", "知情同意版本", CONSENT_VERSION);
        let next_review = o.date(d, "next_review", "下次复核日期");
        o.finish(d);

        if d.mode() == Mode::Input {
            let ages = [
                age_0_5,
                age_6_14,
                age_15_17,
                age_18_59,
                age_60_69,
                age_70_plus,
            ];
            let ages: Option<Vec<u8>> = ages.into_iter().collect();
            let elders = age_60_69
                .zip(age_70_plus)
                .map(|(a, b)| u16::from(a) + u16::from(b));
            let minors = age_0_5
                .zip(age_6_14)
                .zip(age_15_17)
                .map(|((a, b), c)| u16::from(a) + u16::from(b) + u16::from(c));
            if let (Some(r), Some(ages)) = (residents, &ages) {
                let sum: u16 = ages.iter().map(|&a| u16::from(a)).sum();
                if sum > u16::from(r) {
                    d.push(
                        "residents",
                        code::INCONSISTENT,
                        format!("各年龄段人数之和（{sum}）超过家庭人口（{r}）"),
                    );
                }
            }
            if let (Some(r), Some(w)) = (residents, working_away) {
                if w > r {
                    d.push(
                        "working_away",
                        code::INCONSISTENT,
                        format!("外出务工人数（{w}）超过家庭人口（{r}）"),
                    );
                } else if let (Some(a), Some(b)) = (age_0_5, age_6_14) {
                    let adults = u16::from(r).saturating_sub(u16::from(a) + u16::from(b));
                    if u16::from(w) > adults {
                        d.push(
                            "working_away",
                            code::INCONSISTENT,
                            format!("外出务工人数（{w}）超过15岁以上人数（{adults}）"),
                        );
                    }
                }
            }
            if left_behind_elderly == Some(true) && elders == Some(0) {
                d.push(
                    "left_behind_elderly",
                    code::INCONSISTENT,
                    "标记了留守老人，但60岁以上人数为0",
                );
            }
            if elderly_alone == Some(true) {
                if elders == Some(0) {
                    d.push(
                        "elderly_alone",
                        code::INCONSISTENT,
                        "标记了独居老人，但60岁以上人数为0",
                    );
                } else if let (Some(r), Some(w)) = (residents, working_away) {
                    let home = r.saturating_sub(w);
                    if home > 1 {
                        d.push(
                            "elderly_alone",
                            code::INCONSISTENT,
                            format!("标记了独居老人，但在家人数为{home}"),
                        );
                    }
                }
            }
            if left_behind_children == Some(true) {
                if minors == Some(0) {
                    d.push(
                        "left_behind_children",
                        code::INCONSISTENT,
                        "标记了留守儿童，但0–17岁人数为0",
                    );
                } else if working_away == Some(0) {
                    d.push(
                        "left_behind_children",
                        code::INCONSISTENT,
                        "标记了留守儿童，但外出务工人数为0",
                    );
                }
            }
            if uses_wechat == Some(true) && smartphones == Some(0) {
                d.push(
                    "uses_wechat",
                    code::INCONSISTENT,
                    "填写了使用微信，但智能手机数量为0",
                );
            }
            if let Some(needs) = &stated_needs {
                let mut seen = BTreeMap::new();
                for (tag, need) in needs {
                    if let Some(p) = need.priority {
                        if let Some(first) = seen.insert(p, *tag) {
                            d.push(
                                format!("{stated_path}.{}.priority", tag.id()),
                                code::INCONSISTENT,
                                format!(
                                    "优先级{p}已用于“{}”，每个优先级只能用一次",
                                    first.zh_name()
                                ),
                            );
                        }
                    }
                }
            }
            if let (Some(Some(survey)), Some(Some(review))) = (survey_date, next_review) {
                if review < survey {
                    d.push(
                        "next_review",
                        code::INCONSISTENT,
                        format!("下次复核日期（{review}）早于调查日期（{survey}）"),
                    );
                }
            }
        }

        let profile = (|| {
            Some(HouseholdProfile {
                village: village?,
                group: group?,
                residents: residents?,
                age_0_5: age_0_5?,
                age_6_14: age_6_14?,
                age_15_17: age_15_17?,
                age_18_59: age_18_59?,
                age_60_69: age_60_69?,
                age_70_plus: age_70_plus?,
                working_away: working_away?,
                left_behind_elderly: left_behind_elderly?,
                left_behind_children: left_behind_children?,
                elderly_alone: elderly_alone?,
                education: education?,
                smartphones: smartphones?,
                phone_skill_low: phone_skill_low?,
                can_watch_video: can_watch_video?,
                uses_wechat: uses_wechat?,
                has_tv: has_tv?,
                signal: signal?,
                channel: channel?,
                language: language?,
                crops: crops?,
                livestock: livestock?,
                assets: assets?,
                main_income: main_income?,
                housing: housing?,
                cooking_fuel: cooking_fuel?,
                heating_fuel: heating_fuel?,
                water: water?,
                toilet: toilet?,
                sewer: sewer?,
                site_risks: site_risks?,
                eats_wild_mushrooms: eats_wild_mushrooms?,
                stated_needs: stated_needs?,
                surveyor: surveyor?,
                survey_date: survey_date?,
                consent_version: consent_version?,
                next_review: next_review?,
            })
        })();
        dec.finish(profile)
    }
}

const HEAD_NAME: TextRule = TextRule {
    max_chars: 20,
    required: false,
    multiline: false,
};
const ROSTER_NO: TextRule = TextRule {
    max_chars: 20,
    required: false,
    multiline: false,
};
const NOTES: TextRule = TextRule {
    max_chars: 2000,
    required: false,
    multiline: true,
};
const STATED_NEED_TEXT: TextRule = TextRule {
    max_chars: 500,
    required: false,
    multiline: true,
};
const PHONE: TextRule = TextRule {
    max_chars: 20,
    required: false,
    multiline: false,
};

/// Whether `s` is an 11-digit mainland mobile number (`1[3-9]` + 9 digits) or a landline with an
/// area code (`0` + 2–3 digits, optional `-`, 7–8 digits).
pub fn is_valid_phone(s: &str) -> bool {
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    let b = s.as_bytes();
    if b.len() == 11 && digits(s) && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) {
        return true;
    }
    if !s.starts_with('0') {
        return false;
    }
    match s.split_once('-') {
        Some((area, local)) => {
            (3..=4).contains(&area.len())
                && (7..=8).contains(&local.len())
                && digits(area)
                && digits(local)
        }
        None => (10..=12).contains(&s.len()) && digits(s),
    }
}

impl HouseholdPrivate {
    /// Parses API or form input, collecting every problem.
    pub fn from_json(value: &Value) -> Result<HouseholdPrivate, FieldErrors> {
        Self::decode(value, Mode::Input)
    }

    /// Checks a value built in code against the same rules as
    /// [`HouseholdPrivate::from_json`].
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let json = serde_json::to_value(self).map_err(encode_error)?;
        Self::decode(&json, Mode::Input).map(|_| ())
    }

    /// Reads the private part from its document; an empty document reads as the default.
    pub fn read_from<R: ReadDoc>(doc: &R) -> Result<HouseholdPrivate, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        Ok(Self::decode(&json, Mode::Document)?)
    }

    /// Validates, then writes into `tx` only the fields that differ from the document; free
    /// text goes into `Text` objects with `update_text`.
    pub fn write_to<T: Transactable>(&self, tx: &mut T) -> Result<(), ViewError> {
        self.validate()?;
        let desired = serde_json::to_value(self).map_err(|e| ViewError::Encode(e.to_string()))?;
        write_root(tx, &desired, &PRIVATE_TEXT_FIELDS)
    }

    fn decode(value: &Value, mode: Mode) -> Result<HouseholdPrivate, FieldErrors> {
        let mut dec = Decoder::new(mode);
        let Some(mut o) = dec.root(value, "农户隐私信息") else {
            return dec.finish(None);
        };
        let d = &mut dec;
        o.schema(d);
        let head_name = o.text(d, "head_name", "户主姓名", HEAD_NAME);
        let phone_path = o.path("phone");
        let phone = o.text(d, "phone", "联系电话", PHONE).and_then(|p| {
            if p.is_empty() || is_valid_phone(&p) {
                Some(p)
            } else {
                d.push(
                    phone_path,
                    code::BAD_FORMAT,
                    format!("联系电话“{p}”格式不正确，应为11位手机号或带区号的固定电话"),
                );
                None
            }
        });
        let roster_no = o.text(d, "roster_no", "花名册编号", ROSTER_NO);
        let notes = o.text(d, "notes", "备注", NOTES);
        let stated_need_text = o.text(d, "stated_need_text", "需求原话", STATED_NEED_TEXT);
        let health_interests = o.set(d, "health_interests", "健康关注", HealthInterest::ALL.len());
        let aid_monitoring = o.flag(d, "aid_monitoring", "防返贫监测对象");
        let separate_consent = o.flag(d, "separate_consent", "敏感信息单独同意");
        o.finish(d);
        if d.mode() == Mode::Input && separate_consent == Some(false) {
            if health_interests.as_ref().is_some_and(|h| !h.is_empty()) {
                d.push(
                    "health_interests",
                    code::INCONSISTENT,
                    "未取得单独同意，不能记录健康关注",
                );
            }
            if aid_monitoring == Some(true) {
                d.push(
                    "aid_monitoring",
                    code::INCONSISTENT,
                    "未取得单独同意，不能记录防返贫监测对象",
                );
            }
        }
        let private = (|| {
            Some(HouseholdPrivate {
                head_name: head_name?,
                phone: phone?,
                roster_no: roster_no?,
                notes: notes?,
                stated_need_text: stated_need_text?,
                health_interests: health_interests?,
                aid_monitoring: aid_monitoring?,
                separate_consent: separate_consent?,
            })
        })();
        dec.finish(private)
    }
}

#[cfg(test)]
pub(crate) mod testgen {
    //! Proptest strategies for valid households.

    use proptest::prelude::*;

    use super::*;
    use crate::area::AreaCode;

    fn village() -> AreaCode {
        AreaCode::parse("510122104201").expect("valid")
    }

    fn opt<T: Copy + std::fmt::Debug + 'static>(
        all: &'static [T],
    ) -> impl Strategy<Value = Option<T>> {
        prop::option::of(prop::sample::select(all))
    }

    fn date() -> impl Strategy<Value = Date> {
        (2020u16..2030, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| Date::new(y, m, d).expect("valid"))
    }

    /// Valid household profiles (consistent by construction).
    pub(crate) fn arb_profile() -> impl Strategy<Value = HouseholdProfile> {
        let people = (
            1u8..=99,
            prop::array::uniform6(0u8..=4),
            0u8..=3,
            any::<u8>(),
            any::<[bool; 3]>(),
        );
        let media = (
            opt(Education::ALL),
            0u8..=5,
            any::<[bool; 4]>(),
            opt(Signal::ALL),
            opt(Channel::ALL),
            opt(Language::ALL),
        );
        let production = (
            prop::collection::btree_map(prop::sample::select(Crop::ALL), 1u8..=5, 0..6),
            prop::collection::btree_map(prop::sample::select(Livestock::ALL), 1u8..=5, 0..4),
            prop::collection::btree_set(prop::sample::select(Asset::ALL), 0..5),
            opt(Income::ALL),
        );
        let living = (
            opt(Housing::ALL),
            opt(Fuel::ALL),
            opt(Fuel::ALL),
            opt(Water::ALL),
            opt(Toilet::ALL),
            any::<[bool; 2]>(),
            prop::collection::btree_set(prop::sample::select(SiteRisk::ALL), 0..3),
        );
        let askable: Vec<Tag> = Tag::all().filter(|t| t.is_askable()).collect();
        let meta = (
            prop::collection::btree_map(
                prop::sample::select(askable),
                prop::option::of(1u8..=MAX_PRIORITY),
                0..6,
            ),
            "[a-z0-9_]{0,8}",
            prop::option::of(date()),
            0u16..3,
            any::<bool>(),
            "(v[0-9])?",
        );
        (people, media, production, living, meta).prop_map(
            |(people, media, production, living, meta)| {
                let (group, bands, extra, away, flags) = people;
                let mut p = HouseholdProfile::new(village(), group, 0);
                [
                    p.age_0_5,
                    p.age_6_14,
                    p.age_15_17,
                    p.age_18_59,
                    p.age_60_69,
                    p.age_70_plus,
                ] = bands;
                p.residents = bands.iter().sum::<u8>() + extra;
                let adults = p.residents - p.children();
                p.working_away = away % (adults + 1);
                p.left_behind_elderly = flags[0] && p.elders() > 0;
                p.left_behind_children =
                    flags[1] && p.children() + p.age_15_17 > 0 && p.working_away > 0;
                p.elderly_alone = flags[2] && p.elders() > 0 && p.at_home() <= 1;
                let (education, phones, media_flags, signal, channel, language) = media;
                p.education = education;
                p.smartphones = phones;
                p.phone_skill_low = media_flags[0];
                p.can_watch_video = media_flags[1];
                p.uses_wechat = media_flags[2] && phones > 0;
                p.has_tv = media_flags[3];
                p.signal = signal;
                p.channel = channel;
                p.language = language;
                let (crops, livestock, assets, income) = production;
                p.crops = crops
                    .into_iter()
                    .map(|(k, area_band)| (k, CropEntry { area_band }))
                    .collect();
                p.livestock = livestock
                    .into_iter()
                    .map(|(k, herd_band)| (k, HerdEntry { herd_band }))
                    .collect();
                p.assets = assets;
                p.main_income = income;
                let (housing, cooking, heating, water, toilet, living_flags, risks) = living;
                p.housing = housing;
                p.cooking_fuel = cooking;
                p.heating_fuel = heating;
                p.water = water;
                p.toilet = toilet;
                p.sewer = living_flags[0];
                p.eats_wild_mushrooms = living_flags[1];
                p.site_risks = risks;
                let (needs, surveyor, survey, review_years, has_review, consent) = meta;
                let mut used = BTreeSet::new();
                p.stated_needs = needs
                    .into_iter()
                    .map(|(tag, priority)| {
                        let priority = priority.filter(|q| used.insert(*q));
                        (tag, StatedNeed { priority })
                    })
                    .collect();
                p.surveyor = surveyor;
                p.survey_date = survey;
                p.next_review = survey
                    .filter(|_| has_review)
                    .and_then(|s| s.add_years(review_years));
                p.consent_version = consent;
                p
            },
        )
    }

    /// Valid private parts.
    pub(crate) fn arb_private() -> impl Strategy<Value = HouseholdPrivate> {
        (
            "[\\p{Han}]{0,4}",
            prop_oneof![
                Just(String::new()),
                "1[3-9][0-9]{9}",
                "0[1-9][0-9]{1,2}-[1-9][0-9]{6,7}"
            ],
            "[0-9]{0,2}(-[0-9]{1,3})?",
            "[^\\p{Cc}]{0,40}|[\\p{Han}，。\n]{0,40}",
            "\\PC{0,30}",
            prop::collection::btree_set(prop::sample::select(HealthInterest::ALL), 0..4),
            any::<[bool; 2]>(),
        )
            .prop_map(
                |(head_name, phone, roster_no, notes, need, interests, flags)| {
                    let consent = flags[0] || !interests.is_empty();
                    HouseholdPrivate {
                        head_name,
                        phone,
                        roster_no,
                        notes,
                        stated_need_text: need,
                        health_interests: interests,
                        aid_monitoring: flags[1] && consent,
                        separate_consent: consent,
                    }
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use automerge::{AutoCommit, ObjType, ScalarValue, ROOT};
    use proptest::prelude::*;
    use serde_json::json;

    use super::testgen::{arb_private, arb_profile};
    use super::*;

    fn example() -> Value {
        json!({
            "village": "510122104201", "group": 3, "residents": 4,
            "age_6_14": 1, "age_18_59": 2, "age_70_plus": 1, "working_away": 2,
            "left_behind_elderly": true, "left_behind_children": true,
            "education": "primary", "smartphones": 1, "uses_wechat": true, "has_tv": true,
            "signal": "fair", "channel": "wechat_group", "language": "sichuanese",
            "crops": {"citrus": {"area_band": 2}, "rice": {"area_band": 1}},
            "livestock": {"pig": {"herd_band": 1}, "poultry": {"herd_band": 1}},
            "assets": {"dogs": true, "motorbike": true},
            "main_income": "wage", "housing": "brick_concrete",
            "cooking_fuel": "firewood", "heating_fuel": "charcoal",
            "water": "piped", "toilet": "sanitary", "site_risks": {"riverside": true},
            "stated_needs": {"plt.citrus": {"priority": 1}, "liv.asf": {"priority": null}},
            "surveyor": "cadre01", "survey_date": "2025-03-18", "consent_version": "v1",
            "next_review": "2026-03-18"
        })
    }

    #[test]
    fn parses_the_example_and_serialises_back() {
        let p = HouseholdProfile::from_json(&example()).expect("valid");
        assert_eq!(p.village.as_str(), "510122104201");
        assert_eq!(
            p.crops.get(&Crop::Citrus),
            Some(&CropEntry { area_band: 2 })
        );
        assert!(p.assets.contains(&Asset::Dogs));
        assert_eq!(
            p.stated_needs.get(&Tag::PltCitrus),
            Some(&StatedNeed { priority: Some(1) })
        );
        let json = serde_json::to_value(&p).expect("serialise");
        assert_eq!(json["assets"], json!({"dogs": true, "motorbike": true}));
        assert_eq!(json["crops"]["citrus"], json!({"area_band": 2}));
        assert_eq!(json["stated_needs"]["liv.asf"], json!({"priority": null}));
        assert_eq!(json["survey_date"], "2025-03-18");
        assert_eq!(json["education"], "primary");
        assert_eq!(json["water"], "piped");
        assert_eq!(HouseholdProfile::from_json(&json).expect("round trip"), p);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn defaults_for_missing_optional_fields() {
        let p = HouseholdProfile::from_json(&json!({
            "village": "510122104201", "group": 1, "residents": 2, "education": null
        }))
        .expect("valid");
        let village = AreaCode::parse("510122104201").expect("valid");
        assert_eq!(p, HouseholdProfile::new(village, 1, 2));
        // Arrays of ids are accepted for plain multi-selects too.
        let p = HouseholdProfile::from_json(&json!({
            "village": "510122104201", "group": 1, "residents": 2, "assets": ["dogs", "forest"],
            "site_risks": {"riverside": false}
        }))
        .expect("valid");
        assert_eq!(p.assets.len(), 2);
        assert!(p.site_risks.is_empty());
    }

    #[test]
    fn integers_are_strict() {
        // serde_json reads `3.0` and `1e1` as floats; an integer field refuses them, and `2`
        // beside them is accepted.
        let body = r#"{"village": "510122104201", "group": 2, "residents": 3.0,
                       "age_60_69": 1e1, "smartphones": 18446744073709551615}"#;
        let value: Value = serde_json::from_str(body).expect("json");
        let errs = HouseholdProfile::from_json(&value).expect_err("floats are not integers");
        assert!(errs.has("residents", code::WRONG_TYPE), "{errs:#?}");
        assert!(errs.has("age_60_69", code::WRONG_TYPE), "{errs:#?}");
        assert!(errs.has("smartphones", code::OUT_OF_RANGE), "{errs:#?}");
        assert_eq!(errs.len(), 3, "{errs:#?}");
        let msg = errs
            .iter()
            .find(|e| e.field == "residents")
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(msg.contains("应为整数"), "{msg}");
    }

    #[test]
    fn collects_every_error_at_once() {
        let errs = HouseholdProfile::from_json(&json!({
            "village": "5101221042",
            "group": 0,
            "age_60_69": -1,
            "age_70_plus": "2",
            "smartphones": 2.5,
            "has_tv": "yes",
            "education": "phd",
            "crops": {"citrus": {"area_band": 9}, "durian": {"area_band": 1}, "tea": {"size": 1}},
            "livestock": ["pig"],
            "assets": {"dogs": 1},
            "stated_needs": {"saf.quake": {}, "hlt.mental": {}, "liv.nope": {}},
            "survey_date": "2025-02-30",
            "surveyor": "x".repeat(40),
            "favourite_colour": "red"
        }))
        .expect_err("invalid");
        let expected = [
            ("village", code::BAD_FORMAT),
            ("group", code::OUT_OF_RANGE),
            ("residents", code::REQUIRED),
            ("age_60_69", code::OUT_OF_RANGE),
            ("age_70_plus", code::WRONG_TYPE),
            ("smartphones", code::WRONG_TYPE),
            ("has_tv", code::WRONG_TYPE),
            ("education", code::UNKNOWN_VALUE),
            ("crops.citrus.area_band", code::OUT_OF_RANGE),
            ("crops.durian", code::UNKNOWN_VALUE),
            ("crops.tea.size", code::UNKNOWN_FIELD),
            ("livestock", code::WRONG_TYPE),
            ("assets.dogs", code::WRONG_TYPE),
            ("stated_needs.saf.quake", code::NOT_ALLOWED),
            ("stated_needs.hlt.mental", code::NOT_ALLOWED),
            ("stated_needs.liv.nope", code::UNKNOWN_VALUE),
            ("survey_date", code::BAD_FORMAT),
            ("surveyor", code::TOO_LONG),
            ("favourite_colour", code::UNKNOWN_FIELD),
        ];
        for (field, c) in expected {
            assert!(errs.has(field, c), "missing {field}/{c} in {errs:#?}");
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
        let neg = errs
            .iter()
            .find(|e| e.field == "age_60_69")
            .expect("present");
        assert_eq!(neg.message, "60–69岁人数不能为负数");
        assert!(errs.iter().all(|e| e
            .message
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))));
    }

    #[test]
    fn not_an_object() {
        let errs = HouseholdProfile::from_json(&json!([1, 2])).expect_err("invalid");
        assert!(errs.has("", code::WRONG_TYPE));
        let errs = HouseholdPrivate::from_json(&json!("x")).expect_err("invalid");
        assert!(errs.has("", code::WRONG_TYPE));
    }

    #[test]
    fn checks_consistency() {
        let base = |extra: Value| {
            let mut v = json!({"village": "510122104201", "group": 2, "residents": 3});
            if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            HouseholdProfile::from_json(&v)
        };
        let cases: Vec<(Value, &str)> = vec![
            (json!({"age_18_59": 2, "age_60_69": 2}), "residents"),
            (json!({"working_away": 4}), "working_away"),
            (
                json!({"age_0_5": 1, "age_6_14": 1, "working_away": 2}),
                "working_away",
            ),
            (
                json!({"left_behind_elderly": true, "age_18_59": 3}),
                "left_behind_elderly",
            ),
            (
                json!({"elderly_alone": true, "age_18_59": 3}),
                "elderly_alone",
            ),
            (
                json!({"elderly_alone": true, "age_70_plus": 2}),
                "elderly_alone",
            ),
            (
                json!({"left_behind_children": true, "age_18_59": 3, "working_away": 1}),
                "left_behind_children",
            ),
            (
                json!({"left_behind_children": true, "age_6_14": 1}),
                "left_behind_children",
            ),
            (json!({"uses_wechat": true}), "uses_wechat"),
            (
                json!({"stated_needs": {"plt.rice": {"priority": 1}, "liv.pig": {"priority": 1}}}),
                "stated_needs.liv.pig.priority",
            ),
            (
                json!({"survey_date": "2025-03-01", "next_review": "2025-02-01"}),
                "next_review",
            ),
        ];
        for (extra, field) in cases {
            let errs = base(extra.clone()).expect_err(&format!("{extra} is inconsistent"));
            assert!(errs.has(field, code::INCONSISTENT), "{extra}: {errs:#?}");
            assert_eq!(errs.len(), 1, "{extra}: {errs:#?}");
        }
        // The consistent versions pass.
        for ok in [
            json!({"age_18_59": 1, "age_60_69": 2}),
            json!({"working_away": 3}),
            json!({"elderly_alone": true, "age_70_plus": 1, "age_18_59": 2, "working_away": 2}),
            json!({"left_behind_children": true, "age_6_14": 1, "age_18_59": 2, "working_away": 1}),
            json!({"uses_wechat": true, "smartphones": 1}),
        ] {
            assert!(base(ok.clone()).is_ok(), "{ok}");
        }
        // Consistency is still checked when another field is broken.
        let errs = base(json!({"working_away": 4, "education": 7})).expect_err("invalid");
        assert!(errs.has("working_away", code::INCONSISTENT));
        assert!(errs.has("education", code::WRONG_TYPE));
    }

    #[test]
    fn too_many_stated_needs() {
        let needs: serde_json::Map<String, Value> = Tag::all()
            .filter(|t| t.is_askable())
            .take(MAX_STATED_NEEDS + 1)
            .map(|t| (t.id().to_string(), json!({})))
            .collect();
        let errs = HouseholdProfile::from_json(&json!({
            "village": "510122104201", "group": 2, "residents": 3, "stated_needs": needs
        }))
        .expect_err("too many");
        assert!(errs.has("stated_needs", code::TOO_MANY), "{errs:#?}");
    }

    #[test]
    fn validate_catches_values_built_in_code() {
        let mut p = HouseholdProfile::from_json(&example()).expect("valid");
        assert_eq!(p.validate(), Ok(()));
        p.working_away = 9;
        p.group = 100;
        p.stated_needs.insert(Tag::SafQuake, StatedNeed::default());
        let errs = p.validate().expect_err("invalid");
        assert!(errs.has("working_away", code::INCONSISTENT));
        assert!(errs.has("group", code::OUT_OF_RANGE));
        assert!(errs.has("stated_needs.saf.quake", code::NOT_ALLOWED));
        // write_to refuses it and changes nothing.
        let mut doc = AutoCommit::new();
        assert!(matches!(p.write_to(&mut doc), Err(ViewError::Invalid(_))));
        assert_eq!(doc.pending_ops(), 0);
    }

    #[test]
    fn document_round_trip_and_idempotent_write() {
        let p = HouseholdProfile::from_json(&example()).expect("valid");
        let mut doc = AutoCommit::new();
        p.write_to(&mut doc).expect("write");
        doc.commit();
        assert_eq!(HouseholdProfile::read_from(&doc).expect("read"), p);
        // Coded values are scalar strings, counts are Int, multi-selects are maps.
        let (v, _) = doc.get(ROOT, "housing").expect("get").expect("present");
        assert_eq!(v.as_str(), Some("brick_concrete"));
        let (v, _) = doc.get(ROOT, "residents").expect("get").expect("present");
        assert_eq!(v.as_scalar(), Some(&ScalarValue::Int(4)));
        let (v, _) = doc.get(ROOT, "crops").expect("get").expect("present");
        assert_eq!(v, automerge::Value::Object(ObjType::Map));
        let (v, _) = doc.get(ROOT, "schema").expect("get").expect("present");
        assert_eq!(v.as_scalar(), Some(&ScalarValue::Int(SCHEMA_VERSION)));
        let heads = doc.get_heads();
        p.write_to(&mut doc).expect("write again");
        assert_eq!(doc.pending_ops(), 0, "unchanged profile must write nothing");
        doc.commit();
        assert_eq!(doc.get_heads(), heads);
        // Removing things deletes them.
        let mut q = p.clone();
        q.crops.remove(&Crop::Rice);
        q.assets.clear();
        q.signal = None;
        q.stated_needs.remove(&Tag::LivAsf);
        q.write_to(&mut doc).expect("write q");
        doc.commit();
        assert_eq!(HouseholdProfile::read_from(&doc).expect("read"), q);
        assert!(doc.get(ROOT, "signal").expect("get").is_none());
    }

    #[test]
    fn refuses_to_move_a_household_to_another_village() {
        let p = HouseholdProfile::from_json(&example()).expect("valid");
        let mut doc = AutoCommit::new();
        p.write_to(&mut doc).expect("write");
        let mut q = p.clone();
        q.village = AreaCode::parse("510122104202").expect("valid");
        assert!(matches!(
            q.write_to(&mut doc),
            Err(ViewError::Identity { .. })
        ));
    }

    #[test]
    fn concurrent_edits_of_different_fields_both_survive() {
        let p = HouseholdProfile::from_json(&example()).expect("valid");
        let mut a = AutoCommit::new();
        p.write_to(&mut a).expect("write");
        a.commit();
        let mut b = a.fork();
        // Cadre A: more phones, adds tea, drops a stated need.
        let mut pa = p.clone();
        pa.smartphones = 2;
        pa.crops.insert(Crop::Tea, CropEntry { area_band: 1 });
        pa.stated_needs.remove(&Tag::LivAsf);
        pa.write_to(&mut a).expect("write a");
        a.commit();
        // Cadre B: new housing, adds cattle and a stated need, changes a crop band.
        let mut pb = p.clone();
        pb.housing = Some(Housing::SteelConcrete);
        pb.livestock
            .insert(Livestock::Cattle, HerdEntry { herd_band: 2 });
        pb.stated_needs
            .insert(Tag::DigEcom, StatedNeed { priority: Some(2) });
        pb.crops.insert(Crop::Citrus, CropEntry { area_band: 3 });
        pb.write_to(&mut b).expect("write b");
        b.commit();
        a.merge(&mut b).expect("merge");
        let merged = HouseholdProfile::read_from(&a).expect("read");
        let mut expected = p.clone();
        expected.smartphones = 2;
        expected.crops.insert(Crop::Tea, CropEntry { area_band: 1 });
        expected
            .crops
            .insert(Crop::Citrus, CropEntry { area_band: 3 });
        expected.stated_needs.remove(&Tag::LivAsf);
        expected.housing = Some(Housing::SteelConcrete);
        expected
            .livestock
            .insert(Livestock::Cattle, HerdEntry { herd_band: 2 });
        expected
            .stated_needs
            .insert(Tag::DigEcom, StatedNeed { priority: Some(2) });
        assert_eq!(merged, expected);
    }

    #[test]
    fn reads_js_style_documents() {
        // JS Automerge 3 writes plain strings as Text, and may write Uint or float numbers and
        // nulls; unknown fields from a newer compatible writer are ignored.
        let mut doc = AutoCommit::new();
        let put_text = |doc: &mut AutoCommit, obj: &automerge::ObjId, k: &str, s: &str| {
            let t = doc.put_object(obj, k, ObjType::Text).expect("text");
            doc.splice_text(&t, 0, 0, s).expect("splice");
        };
        put_text(&mut doc, &ROOT, "village", "510122104201");
        doc.put(ROOT, "group", ScalarValue::Uint(5)).expect("put");
        doc.put(ROOT, "residents", 2.0_f64).expect("put");
        doc.put(ROOT, "age_70_plus", 1).expect("put");
        put_text(&mut doc, &ROOT, "housing", "earth_wood");
        doc.put(ROOT, "education", ScalarValue::Null).expect("put");
        put_text(&mut doc, &ROOT, "survey_date", "2025-05-01");
        let crops = doc.put_object(ROOT, "crops", ObjType::Map).expect("map");
        let tea = doc.put_object(&crops, "tea", ObjType::Map).expect("map");
        doc.put(&tea, "area_band", 2).expect("put");
        let _empty_entry = doc.put_object(&crops, "maize", ObjType::Map).expect("map");
        let needs = doc
            .put_object(ROOT, "stated_needs", ObjType::Map)
            .expect("map");
        let _ = doc
            .put_object(&needs, "plt.tea", ObjType::Map)
            .expect("map");
        let _ = doc
            .put_object(&needs, "hlt.mental", ObjType::Map)
            .expect("map");
        doc.put(ROOT, "future_field", "x").expect("put");
        doc.commit();
        let p = HouseholdProfile::read_from(&doc).expect("read");
        assert_eq!(p.group, 5);
        assert_eq!(p.residents, 2);
        assert_eq!(p.housing, Some(Housing::EarthWood));
        assert_eq!(p.education, None);
        assert_eq!(p.survey_date, Date::parse("2025-05-01"));
        assert_eq!(p.crops.get(&Crop::Maize), Some(&CropEntry { area_band: 1 }));
        // The sensitive tag is dropped, never passed on.
        assert_eq!(
            p.stated_needs.keys().copied().collect::<Vec<_>>(),
            vec![Tag::PltTea]
        );
        // Writing the same value back changes nothing but the dropped tag and the schema.
        p.write_to(&mut doc).expect("write");
        doc.commit();
        let json = crate::fields::doc_to_json(&doc).expect("json");
        assert_eq!(json["stated_needs"], json!({"plt.tea": {}}));
        assert_eq!(json["future_field"], "x");
        assert_eq!(HouseholdProfile::read_from(&doc).expect("read"), p);
    }

    #[test]
    fn sensitive_content_in_a_profile_is_found() {
        let p = HouseholdProfile::from_json(&example()).expect("valid");
        let mut doc = AutoCommit::new();
        p.write_to(&mut doc).expect("write");
        doc.commit();
        assert_eq!(
            sensitive_in_profile(&doc).expect("check"),
            Vec::<String>::new()
        );
        // Written raw, bypassing the typed layer: a sensitive stated need, a derived tag list, a
        // private field.
        let needs = match doc.get(ROOT, "stated_needs").expect("get") {
            Some((_, id)) => id,
            None => panic!("stated_needs missing"),
        };
        let _ = doc
            .put_object(&needs, "hlt.mental", ObjType::Map)
            .expect("map");
        let tags = doc
            .put_object(ROOT, "derived", ObjType::List)
            .expect("list");
        doc.insert(&tags, 0, "pol.aid").expect("insert");
        doc.put(ROOT, "phone", "13812345678").expect("put");
        doc.commit();
        let found = sensitive_in_profile(&doc).expect("check");
        assert_eq!(found, ["phone", "derived.0", "stated_needs.hlt.mental"]);
        // An askable health tag (hlt.bp) is not sensitive: it may be a stated need in `hh`.
        let mut clean = AutoCommit::new();
        let mut q = p.clone();
        q.stated_needs.insert(Tag::HltBp, StatedNeed::default());
        q.write_to(&mut clean).expect("write");
        assert!(sensitive_in_profile(&clean).expect("check").is_empty());
    }

    #[test]
    fn rejects_bad_documents() {
        let empty = AutoCommit::new();
        match HouseholdProfile::read_from(&empty) {
            Err(ViewError::Invalid(errs)) => {
                assert!(errs.has("village", code::REQUIRED));
                assert!(errs.has("group", code::REQUIRED));
                assert!(errs.has("residents", code::REQUIRED));
            }
            other => panic!("expected required errors, got {other:?}"),
        }
        let p = HouseholdProfile::from_json(&example()).expect("valid");
        let mut doc = AutoCommit::new();
        p.write_to(&mut doc).expect("write");
        doc.put(ROOT, "schema", SCHEMA_VERSION + 1).expect("put");
        assert!(matches!(
            HouseholdProfile::read_from(&doc),
            Err(ViewError::UnsupportedSchema {
                found: 2,
                supported: 1
            })
        ));
        doc.put(ROOT, "schema", SCHEMA_VERSION).expect("put");
        doc.put(ROOT, "group", "three").expect("put");
        doc.put(ROOT, "water", ScalarValue::Bytes(vec![1, 2]))
            .expect("put");
        match HouseholdProfile::read_from(&doc) {
            Err(ViewError::Invalid(errs)) => {
                assert!(errs.has("group", code::WRONG_TYPE));
                assert!(errs.has("water", code::WRONG_TYPE));
            }
            other => panic!("expected type errors, got {other:?}"),
        }
    }

    #[test]
    fn refuses_to_write_into_a_newer_schema() {
        let p = HouseholdProfile::from_json(&example()).expect("valid");
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "schema", SCHEMA_VERSION + 1).expect("put");
        assert!(matches!(
            p.write_to(&mut doc),
            Err(ViewError::UnsupportedSchema { .. })
        ));
        assert_eq!(doc.pending_ops(), 1, "only the test's own put");
    }

    #[test]
    fn document_reads_skip_limits_that_merges_can_break() {
        // Two cadres each add stated needs up to the limit; the merge holds more than the limit
        // and must stay readable (input would be refused).
        let village = AreaCode::parse("510122104201").expect("valid");
        let p = HouseholdProfile::new(village, 1, 1);
        let mut a = AutoCommit::new();
        p.write_to(&mut a).expect("write");
        a.commit();
        let mut b = a.fork();
        let askable: Vec<Tag> = Tag::all().filter(|t| t.is_askable()).collect();
        let mut pa = p.clone();
        let mut pb = p.clone();
        for t in &askable[..MAX_STATED_NEEDS] {
            pa.stated_needs.insert(*t, StatedNeed::default());
        }
        for t in &askable[MAX_STATED_NEEDS..2 * MAX_STATED_NEEDS] {
            pb.stated_needs.insert(*t, StatedNeed::default());
        }
        pa.write_to(&mut a).expect("a");
        a.commit();
        pb.write_to(&mut b).expect("b");
        b.commit();
        a.merge(&mut b).expect("merge");
        let merged = HouseholdProfile::read_from(&a).expect("readable");
        assert_eq!(merged.stated_needs.len(), 2 * MAX_STATED_NEEDS);
        let errs = merged.validate().expect_err("over the limit");
        assert!(errs.has("stated_needs", code::TOO_MANY));
    }

    #[test]
    fn document_reads_skip_consistency() {
        // Two valid concurrent edits that together are inconsistent still read.
        let village = AreaCode::parse("510122104201").expect("valid");
        let mut p = HouseholdProfile::new(village, 1, 2);
        p.age_18_59 = 2;
        let mut a = AutoCommit::new();
        p.write_to(&mut a).expect("write");
        a.commit();
        let mut b = a.fork();
        let mut pa = p.clone();
        pa.residents = 1;
        pa.age_18_59 = 1;
        pa.write_to(&mut a).expect("a");
        a.commit();
        let mut pb = p.clone();
        pb.age_60_69 = 0;
        pb.age_18_59 = 2;
        pb.working_away = 2;
        pb.write_to(&mut b).expect("b");
        b.commit();
        a.merge(&mut b).expect("merge");
        let merged = HouseholdProfile::read_from(&a).expect("readable");
        assert_eq!((merged.residents, merged.working_away), (1, 2));
        assert!(merged.validate().is_err());
    }

    #[test]
    fn private_parses_validates_and_round_trips() {
        let v = json!({
            "head_name": "王秀英", "phone": "13812345678", "roster_no": "3-017",
            "notes": "老人腿脚不便，\n上门前请先打电话", "stated_need_text": "想学手机视频通话",
            "health_interests": {"blood_pressure": true, "elderly_care": true},
            "separate_consent": true
        });
        let q = HouseholdPrivate::from_json(&v).expect("valid");
        assert_eq!(
            serde_json::to_value(&q).expect("ser")["health_interests"],
            v["health_interests"]
        );
        let mut doc = AutoCommit::new();
        q.write_to(&mut doc).expect("write");
        doc.commit();
        assert_eq!(HouseholdPrivate::read_from(&doc).expect("read"), q);
        let (v, _) = doc.get(ROOT, "notes").expect("get").expect("present");
        assert_eq!(v, automerge::Value::Object(ObjType::Text));
        let (v, _) = doc.get(ROOT, "phone").expect("get").expect("present");
        assert_eq!(v.as_str(), Some("13812345678"));
        assert_eq!(
            HouseholdPrivate::read_from(&AutoCommit::new()).expect("empty reads as default"),
            HouseholdPrivate::default()
        );
        // An empty private part still creates its Text objects, so later edits never race.
        let mut fresh = AutoCommit::new();
        HouseholdPrivate::default()
            .write_to(&mut fresh)
            .expect("write");
        let (v, _) = fresh.get(ROOT, "head_name").expect("get").expect("present");
        assert_eq!(v, automerge::Value::Object(ObjType::Text));
    }

    #[test]
    fn private_errors() {
        let errs = HouseholdPrivate::from_json(&json!({
            "head_name": "王\n秀英",
            "phone": "12345",
            "notes": "字".repeat(2001),
            "health_interests": {"blood_pressure": true, "astrology": true},
            "aid_monitoring": true,
            "id_number": "510122199001011234"
        }))
        .expect_err("invalid");
        for (field, c) in [
            ("head_name", code::BAD_FORMAT),
            ("phone", code::BAD_FORMAT),
            ("notes", code::TOO_LONG),
            ("health_interests.astrology", code::UNKNOWN_VALUE),
            ("aid_monitoring", code::INCONSISTENT),
            ("id_number", code::UNKNOWN_FIELD),
        ] {
            assert!(errs.has(field, c), "missing {field}/{c}: {errs:#?}");
        }
        let errs = HouseholdPrivate::from_json(&json!({"health_interests": ["mental"]}))
            .expect_err("no consent");
        assert!(errs.has("health_interests", code::INCONSISTENT));
    }

    #[test]
    fn phone_formats() {
        for ok in [
            "13812345678",
            "19900001111",
            "028-85551234",
            "0834-2345678",
            "02885551234",
            "08342345678",
        ] {
            assert!(is_valid_phone(ok), "{ok}");
        }
        for bad in [
            "12812345678",
            "1381234567",
            "138123456789",
            "28-85551234",
            "028-123",
            "abc",
            "",
            "0283-12a4567",
        ] {
            assert!(!is_valid_phone(bad), "{bad}");
        }
    }

    #[test]
    fn concurrent_text_edits_merge_characterwise() {
        let q = HouseholdPrivate {
            notes: "家中有两位老人".into(),
            separate_consent: false,
            ..HouseholdPrivate::default()
        };
        let mut a = AutoCommit::new();
        q.write_to(&mut a).expect("write");
        a.commit();
        let mut b = a.fork();
        let mut qa = q.clone();
        qa.notes = "张家：家中有两位老人".into();
        qa.write_to(&mut a).expect("a");
        a.commit();
        let mut qb = q.clone();
        qb.notes = "家中有两位老人，儿子在成都务工".into();
        qb.head_name = "张德明".into();
        qb.write_to(&mut b).expect("b");
        b.commit();
        a.merge(&mut b).expect("merge");
        let merged = HouseholdPrivate::read_from(&a).expect("read");
        assert_eq!(merged.notes, "张家：家中有两位老人，儿子在成都务工");
        assert_eq!(merged.head_name, "张德明");
        // A scalar string where Text is expected reads fine and is replaced by Text on change.
        let mut s = AutoCommit::new();
        s.put(ROOT, "notes", "旧备注").expect("put");
        let mut read = HouseholdPrivate::read_from(&s).expect("read");
        assert_eq!(read.notes, "旧备注");
        read.notes = "新备注".into();
        read.write_to(&mut s).expect("write");
        let (v, _) = s.get(ROOT, "notes").expect("get").expect("present");
        assert_eq!(v, automerge::Value::Object(ObjType::Text));
        assert_eq!(
            HouseholdPrivate::read_from(&s).expect("read").notes,
            "新备注"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn generated_profiles_round_trip(p in arb_profile()) {
            prop_assert_eq!(p.validate(), Ok(()));
            let json = serde_json::to_value(&p).expect("serialise");
            prop_assert_eq!(&HouseholdProfile::from_json(&json).expect("from_json"), &p);
            let mut doc = AutoCommit::new();
            p.write_to(&mut doc).expect("write");
            doc.commit();
            prop_assert_eq!(&HouseholdProfile::read_from(&doc).expect("read"), &p);
            p.write_to(&mut doc).expect("write again");
            prop_assert_eq!(doc.pending_ops(), 0);
            // Save and load keeps it too.
            let loaded = AutoCommit::load(&doc.save()).expect("load");
            prop_assert_eq!(&HouseholdProfile::read_from(&loaded).expect("read"), &p);
        }

        #[test]
        fn overwriting_one_profile_with_another(a in arb_profile(), b in arb_profile()) {
            let mut doc = AutoCommit::new();
            a.write_to(&mut doc).expect("write a");
            b.write_to(&mut doc).expect("write b");
            prop_assert_eq!(&HouseholdProfile::read_from(&doc).expect("read"), &b);
        }

        #[test]
        fn generated_privates_round_trip(q in arb_private()) {
            prop_assert_eq!(q.validate(), Ok(()));
            let json = serde_json::to_value(&q).expect("serialise");
            prop_assert_eq!(&HouseholdPrivate::from_json(&json).expect("from_json"), &q);
            let mut doc = AutoCommit::new();
            q.write_to(&mut doc).expect("write");
            doc.commit();
            prop_assert_eq!(&HouseholdPrivate::read_from(&doc).expect("read"), &q);
            q.write_to(&mut doc).expect("write again");
            prop_assert_eq!(doc.pending_ops(), 0);
        }
    }
}
