//! Deterministic generation of realistic sample villages, for demos, tests and benchmarks.
//!
//! This module owns the sample data: a hollowed-out Sichuan-basin village of households
//! ([`sample_village`]), local needs ([`sample_needs`]) and plausible single edits
//! ([`sample_edit`]). Everything is drawn from `ChaCha8Rng::seed_from_u64(seed)`, so the same
//! arguments always give the same data on every platform. Every generated record passes the
//! protocol's validation.
//!
//! What the data looks like: 村民小组 1–8; many households of one or two people over 60 whose
//! working-age children are away, grandparents raising left-behind children, fewer working
//! families; rice, maize, rape, vegetables and sweet potato as staples plus two or three cash
//! crops per village (citrus, tea, kiwi, 花椒 ...); pigs and poultry in most households, some
//! cattle and goats; mostly brick-concrete houses with some earth-and-wood ones; firewood, LPG
//! and electricity for cooking. Names, phone numbers (well formed, made up) and roster numbers
//! fill the private part; a few households have notes or a need in their own words.

use std::collections::{BTreeSet, HashSet};

use cunyun_protocol::area::AreaCode;
use cunyun_protocol::fields::Date;
use cunyun_protocol::household::{
    Asset, Channel, Crop, CropEntry, Education, Fuel, HealthInterest, HerdEntry, HouseholdPrivate,
    HouseholdProfile, Housing, Income, Language, Livestock, Signal, SiteRisk, StatedNeed, Toilet,
    Water, MAX_PRIORITY, MAX_SMARTPHONES, MAX_STATED_NEEDS,
};
use cunyun_protocol::need::{LocalNeed, NeedStatus, Requester};
use cunyun_protocol::taxonomy::{Group, Tag};
use cunyun_protocol::triggers::derive_tags;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One generated household: its id (a valid document id) and both documents' contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleHousehold {
    /// Pseudonymous id: `h` followed by 8 lower-case hex digits, unique within the village.
    pub id: String,
    /// The profile (`hh`).
    pub profile: HouseholdProfile,
    /// The private part (`hp`).
    pub private: HouseholdPrivate,
}

/// A weighted choice; `items` must not be empty.
fn pick<T: Copy, R: Rng + ?Sized>(rng: &mut R, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut r = rng.gen_range(0..total.max(1));
    for &(item, w) in items {
        if r < w {
            return item;
        }
        r -= w;
    }
    items[items.len() - 1].0
}

/// A uniform choice; `items` must not be empty.
fn one<T: Copy, R: Rng + ?Sized>(rng: &mut R, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

const SURNAMES: [&str; 30] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "罗", "邓", "谢", "唐", "冯", "曾", "彭", "蒋", "袁", "任", "熊", "雷",
];
const OLD_GIVEN: [&str; 24] = [
    "秀英", "桂兰", "玉兰", "淑芬", "秀珍", "素华", "凤英", "德明", "国华", "建国", "志刚", "永福",
    "明贵", "光荣", "文华", "德贵", "正华", "长寿", "树林", "开福", "福全", "玉珍", "淑华", "世清",
];
const YOUNG_GIVEN: [&str; 24] = [
    "伟", "磊", "勇", "军", "强", "静", "丽", "敏", "艳", "海波", "小兵", "春梅", "红梅", "建平",
    "志强", "晓东", "丹", "燕", "俊", "波", "鹏", "婷", "小琴", "德华",
];
const MOBILE_PREFIXES: [&str; 24] = [
    "138", "139", "135", "136", "137", "150", "151", "152", "157", "158", "159", "182", "183",
    "187", "188", "130", "131", "132", "155", "156", "133", "153", "189", "199",
];
const NOTES: [&str; 10] = [
    "老人腿脚不便，上门前请先打电话。",
    "儿子在成都务工，春节前后返乡。",
    "女儿在广东打工，孙子由爷爷奶奶带。",
    "房屋后面有小溪，雨季注意。",
    "家里的狗比较凶，进院子前先喊一声。",
    "户主耳朵不太好，说话要大声些。",
    "对柑橘大实蝇防治很关心，去年损失较大。",
    "愿意参加村里组织的手机培训。",
    "白天多在坡上干活，傍晚在家。",
    "腊月要杀年猪，提醒注意生猪防疫。",
];
const GENERIC_NEED_TEXT: [&str; 5] = [
    "想学怎么在手机上看天气预报。",
    "希望有人讲讲怎么防电话诈骗。",
    "想知道种地补贴怎么领。",
    "想学做腊肉怎么更安全卫生。",
    "希望多放些四川话的科普视频。",
];
const SURVEYORS: [&str; 4] = ["cadre01", "cadre02", "cadre03", "cadre04"];

/// What the household says in its own words about a stated need, when there is a fitting one.
fn need_text(tag: Tag) -> Option<&'static str> {
    Some(match tag {
        Tag::PltCitrus => "柑橘红蜘蛛年年打药都压不住，想学怎么防。",
        Tag::PltTea => "春茶采了卖不起价，想学机采和加工。",
        Tag::PltKiwi => "猕猴桃溃疡病死了好几棵树，不晓得咋个治。",
        Tag::PltPepper => "花椒树流胶，想请人来看看。",
        Tag::PltRice => "稻子去年得了稻瘟病，想知道怎么预防。",
        Tag::LivPig => "猪长得慢，想学科学喂养。",
        Tag::LivAsf => "怕非洲猪瘟，猪圈消毒不晓得用啥子药。",
        Tag::LivPoultry => "鸡老是生病，想学防病。",
        Tag::DigEcom => "想在网上卖自家的腊肉和橘子。",
        Tag::DigPhone => "手机只会接电话，想学视频通话。",
        _ => return None,
    })
}

/// The household's structure: how many in each age band and how many are away.
struct People {
    bands: [u8; 6],
    away: u8,
    left_behind_elderly: bool,
    left_behind_children: bool,
    elderly_alone: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    ElderlyCouple,
    ElderAlone,
    SkippedGeneration,
    WorkingFamily,
    MiddleAged,
}

fn elder_band<R: Rng + ?Sized>(rng: &mut R, bands: &mut [u8; 6]) {
    if rng.gen_bool(0.55) {
        bands[5] += 1;
    } else {
        bands[4] += 1;
    }
}

fn child_band<R: Rng + ?Sized>(rng: &mut R, bands: &mut [u8; 6]) {
    let i = pick(rng, &[(0usize, 25), (1, 55), (2, 20)]);
    bands[i] += 1;
}

fn gen_people<R: Rng + ?Sized>(rng: &mut R) -> People {
    let shape = pick(
        rng,
        &[
            (Shape::ElderlyCouple, 28),
            (Shape::ElderAlone, 14),
            (Shape::SkippedGeneration, 22),
            (Shape::WorkingFamily, 22),
            (Shape::MiddleAged, 14),
        ],
    );
    let mut bands = [0u8; 6];
    let away: u8;
    let mut lbe = false;
    let mut lbc = false;
    let mut alone = false;
    match shape {
        Shape::ElderlyCouple => {
            elder_band(rng, &mut bands);
            elder_band(rng, &mut bands);
            away = pick(rng, &[(0u8, 25), (1, 45), (2, 30)]);
            bands[3] += away;
            lbe = away > 0 && rng.gen_bool(0.9);
        }
        Shape::ElderAlone => {
            elder_band(rng, &mut bands);
            away = pick(rng, &[(0u8, 35), (1, 40), (2, 25)]);
            bands[3] += away;
            alone = true;
            lbe = away > 0 && rng.gen_bool(0.7);
        }
        Shape::SkippedGeneration => {
            elder_band(rng, &mut bands);
            if rng.gen_bool(0.6) {
                elder_band(rng, &mut bands);
            }
            for _ in 0..pick(rng, &[(1u8, 60), (2, 35), (3, 5)]) {
                child_band(rng, &mut bands);
            }
            let parents = pick(rng, &[(2u8, 80), (1, 20)]);
            bands[3] += parents;
            away = if rng.gen_bool(0.75) { parents } else { 1 };
            lbc = true;
            lbe = rng.gen_bool(0.6);
        }
        Shape::WorkingFamily => {
            bands[3] += 2;
            for _ in 0..pick(rng, &[(0u8, 25), (1, 50), (2, 25)]) {
                child_band(rng, &mut bands);
            }
            if rng.gen_bool(0.35) {
                elder_band(rng, &mut bands);
            }
            away = u8::from(rng.gen_bool(0.3));
            lbc = away > 0 && bands[0] + bands[1] + bands[2] > 0 && rng.gen_bool(0.2);
        }
        Shape::MiddleAged => {
            bands[3] += pick(rng, &[(1u8, 25), (2, 75)]);
            if rng.gen_bool(0.3) {
                elder_band(rng, &mut bands);
            }
            away = u8::from(rng.gen_bool(0.25));
        }
    }
    People {
        bands,
        away,
        left_behind_elderly: lbe,
        left_behind_children: lbc,
        elderly_alone: alone,
    }
}

fn band_staple<R: Rng + ?Sized>(rng: &mut R) -> u8 {
    pick(rng, &[(1u8, 70), (2, 25), (3, 5)])
}

fn band_cash<R: Rng + ?Sized>(rng: &mut R) -> u8 {
    pick(rng, &[(1u8, 38), (2, 40), (3, 17), (4, 4), (5, 1)])
}

/// Picks up to three stated needs among the tags the household's situation implies, mostly
/// about what it grows and raises, with distinct priorities.
fn gen_stated_needs<R: Rng + ?Sized>(rng: &mut R, p: &mut HouseholdProfile) {
    let how_many = pick(rng, &[(0usize, 25), (1, 30), (2, 30), (3, 15)]);
    let mut production = Vec::new();
    let mut other = Vec::new();
    for (tag, reason) in derive_tags(p) {
        if !tag.is_askable() || reason.code == "default" {
            continue;
        }
        let from_production = ["crops.", "livestock.", "assets."]
            .iter()
            .any(|prefix| reason.code.starts_with(prefix));
        if from_production && matches!(tag.group(), Group::Plt | Group::Liv | Group::Dig) {
            production.push(tag);
        } else if matches!(tag.group(), Group::Dig | Group::Saf) {
            other.push(tag);
        }
    }
    production.shuffle(rng);
    other.shuffle(rng);
    let mut chosen = Vec::new();
    while chosen.len() < how_many.min(MAX_STATED_NEEDS) {
        let from = if !production.is_empty() && (other.is_empty() || rng.gen_bool(0.75)) {
            &mut production
        } else {
            &mut other
        };
        match from.pop() {
            Some(tag) => chosen.push(tag),
            None => break,
        }
    }
    p.stated_needs = chosen
        .into_iter()
        .zip(1..=MAX_PRIORITY)
        .map(|(tag, priority)| {
            let priority = rng.gen_bool(0.85).then_some(priority);
            (tag, StatedNeed { priority })
        })
        .collect();
}

fn gen_profile<R: Rng + ?Sized>(
    rng: &mut R,
    village: AreaCode,
    group: u8,
    cash_crops: &[Crop],
) -> HouseholdProfile {
    let people = gen_people(rng);
    let residents: u8 = people.bands.iter().sum();
    let mut p = HouseholdProfile::new(village, group, residents);
    [
        p.age_0_5,
        p.age_6_14,
        p.age_15_17,
        p.age_18_59,
        p.age_60_69,
        p.age_70_plus,
    ] = people.bands;
    p.working_away = people.away;
    p.left_behind_elderly = people.left_behind_elderly;
    p.left_behind_children = people.left_behind_children;
    p.elderly_alone = people.elderly_alone;
    let elderly_only = p.age_18_59 <= p.working_away && p.age_15_17 == 0;

    // Education and media.
    p.education = Some(if elderly_only {
        pick(
            rng,
            &[
                (Education::None, 30),
                (Education::Primary, 58),
                (Education::Junior, 12),
            ],
        )
    } else {
        pick(
            rng,
            &[
                (Education::Primary, 15),
                (Education::Junior, 52),
                (Education::Senior, 24),
                (Education::College, 9),
            ],
        )
    });
    let at_home_adults = p.age_18_59.saturating_sub(p.working_away);
    let mut phones = at_home_adults + p.age_15_17;
    for _ in 0..p.age_60_69 {
        phones += u8::from(rng.gen_bool(0.6));
    }
    for _ in 0..p.age_70_plus {
        phones += u8::from(rng.gen_bool(0.3));
    }
    p.smartphones = phones.min(MAX_SMARTPHONES);
    if p.smartphones > 0 {
        p.phone_skill_low = if elderly_only {
            rng.gen_bool(0.8)
        } else {
            rng.gen_bool(0.1)
        };
        p.can_watch_video = rng.gen_bool(0.85);
        p.uses_wechat = rng.gen_bool(0.9);
    }
    p.has_tv = rng.gen_bool(0.88);
    p.signal = Some(pick(
        rng,
        &[
            (Signal::Good, 45),
            (Signal::Fair, 35),
            (Signal::Weak, 15),
            (Signal::None, 5),
        ],
    ));
    p.channel = Some(if p.smartphones == 0 {
        pick(
            rng,
            &[
                (Channel::Loudspeaker, 50),
                (Channel::Visit, 35),
                (Channel::Paper, 15),
            ],
        )
    } else if elderly_only {
        pick(
            rng,
            &[
                (Channel::Loudspeaker, 35),
                (Channel::Visit, 25),
                (Channel::WechatGroup, 25),
                (Channel::Paper, 10),
                (Channel::ShortVideo, 5),
            ],
        )
    } else {
        pick(
            rng,
            &[
                (Channel::WechatGroup, 45),
                (Channel::ShortVideo, 35),
                (Channel::Loudspeaker, 10),
                (Channel::Paper, 5),
                (Channel::Visit, 5),
            ],
        )
    });
    p.language = Some(if rng.gen_bool(0.88) {
        Language::Sichuanese
    } else {
        Language::Mandarin
    });

    // Crops: elderly-only households grow less and on smaller plots.
    let f = if elderly_only { 0.7 } else { 1.0 };
    let cap = |b: u8| if elderly_only { b.min(2) } else { b };
    for (crop, prob) in [
        (Crop::Vegetables, 0.85),
        (Crop::Rice, 0.55),
        (Crop::Maize, 0.45),
        (Crop::Rape, 0.35),
        (Crop::SweetPotato, 0.25),
        (Crop::Potato, 0.15),
        (Crop::Wheat, 0.05),
        (Crop::OtherFruit, 0.10),
        (Crop::Herbs, 0.03),
        (Crop::Fungi, 0.02),
    ] {
        if rng.gen_bool(prob * f) {
            let area_band = cap(band_staple(rng));
            p.crops.insert(crop, CropEntry { area_band });
        }
    }
    let soy = if p.crops.contains_key(&Crop::Maize) {
        0.25
    } else {
        0.05
    };
    if rng.gen_bool(soy) {
        p.crops.insert(Crop::Soybean, CropEntry { area_band: 1 });
    }
    for &crop in cash_crops {
        if rng.gen_bool(0.38 * f) {
            let area_band = cap(band_cash(rng));
            p.crops.insert(crop, CropEntry { area_band });
        }
    }

    // Livestock.
    for (animal, prob) in [
        (Livestock::Pig, 0.55),
        (Livestock::Poultry, 0.6),
        (Livestock::Cattle, 0.05),
        (Livestock::Sheep, 0.07),
        (Livestock::Rabbit, 0.05),
        (Livestock::Bee, 0.04),
        (Livestock::Fish, 0.03),
    ] {
        if rng.gen_bool(prob) {
            let herd_band = match animal {
                Livestock::Pig => pick(rng, &[(1u8, 85), (2, 10), (3, 4), (4, 1)]),
                _ => pick(rng, &[(1u8, 80), (2, 15), (3, 5)]),
            };
            p.livestock.insert(animal, HerdEntry { herd_band });
        }
    }

    // Assets and activities.
    let big_grower = p.crops.values().any(|e| e.area_band >= 3);
    for (asset, prob) in [
        (Asset::Dogs, 0.45),
        (Asset::Motorbike, if elderly_only { 0.15 } else { 0.5 }),
        (Asset::Machinery, if big_grower { 0.4 } else { 0.05 }),
        (Asset::Forest, 0.3),
        (Asset::Greenhouse, 0.03),
        (Asset::FishPond, 0.04),
        (Asset::Agritourism, 0.02),
        (Asset::CoopMember, if big_grower { 0.35 } else { 0.07 }),
    ] {
        if rng.gen_bool(prob) {
            p.assets.insert(asset);
        }
    }
    if p.crops.contains_key(&Crop::Rice) && rng.gen_bool(0.05) {
        p.assets.insert(Asset::RiceFish);
    }
    if p.smartphones > 0 && !elderly_only && rng.gen_bool(0.08) {
        p.assets.insert(Asset::Ecommerce);
    }

    // Income, housing, living conditions.
    p.main_income = Some(
        if p.assets.contains(&Asset::Agritourism) || p.assets.contains(&Asset::Ecommerce) {
            pick(rng, &[(Income::Business, 50), (Income::Farming, 50)])
        } else if p.working_away > 0 {
            pick(rng, &[(Income::Wage, 80), (Income::Farming, 20)])
        } else if elderly_only {
            pick(rng, &[(Income::Transfer, 55), (Income::Farming, 45)])
        } else {
            pick(
                rng,
                &[
                    (Income::Farming, 60),
                    (Income::Wage, 30),
                    (Income::Business, 10),
                ],
            )
        },
    );
    p.housing = Some(pick(
        rng,
        &[
            (Housing::BrickConcrete, 58),
            (Housing::SteelConcrete, 14),
            (Housing::BrickWood, 14),
            (Housing::EarthWood, 12),
            (Housing::Wood, 2),
        ],
    ));
    let firewood = if elderly_only { 45 } else { 25 };
    p.cooking_fuel = Some(pick(
        rng,
        &[
            (Fuel::Firewood, firewood),
            (Fuel::Electric, 30),
            (Fuel::Lpg, 25),
            (Fuel::NaturalGas, 8),
            (Fuel::Biogas, 5),
        ],
    ));
    p.heating_fuel = pick(
        rng,
        &[
            (None, 35),
            (Some(Fuel::Firewood), 20),
            (Some(Fuel::Charcoal), 15),
            (Some(Fuel::Electric), 25),
            (Some(Fuel::Coal), 5),
        ],
    );
    p.water = Some(pick(
        rng,
        &[
            (Water::Piped, 78),
            (Water::WellSpring, 16),
            (Water::Cistern, 5),
            (Water::Surface, 1),
        ],
    ));
    p.toilet = Some(pick(rng, &[(Toilet::Sanitary, 78), (Toilet::DryPit, 22)]));
    p.sewer = rng.gen_bool(0.18);
    for (risk, prob) in [
        (SiteRisk::SlopeFoot, 0.10),
        (SiteRisk::GullyMouth, 0.04),
        (SiteRisk::Riverside, 0.12),
    ] {
        if rng.gen_bool(prob) {
            p.site_risks.insert(risk);
        }
    }
    p.eats_wild_mushrooms = rng.gen_bool(0.15);

    gen_stated_needs(rng, &mut p);

    // Survey metadata: spring 2025, reviewed a year later.
    p.surveyor = one(rng, &SURVEYORS).to_string();
    p.survey_date = Date::new(2025, rng.gen_range(3..=6), rng.gen_range(1..=28));
    p.next_review = p.survey_date.and_then(|d| d.add_years(1));
    p.consent_version = "v1".to_string();
    p
}

fn gen_name<R: Rng + ?Sized>(rng: &mut R, old: bool) -> String {
    let given = if old {
        one(rng, &OLD_GIVEN)
    } else {
        one(rng, &YOUNG_GIVEN)
    };
    format!("{}{}", one(rng, &SURNAMES), given)
}

fn gen_phone<R: Rng + ?Sized>(rng: &mut R) -> String {
    format!(
        "{}{:08}",
        one(rng, &MOBILE_PREFIXES),
        rng.gen_range(0..100_000_000u32)
    )
}

fn gen_private<R: Rng + ?Sized>(
    rng: &mut R,
    p: &HouseholdProfile,
    roster_no: String,
) -> HouseholdPrivate {
    let elderly_head = p.age_18_59 <= p.working_away;
    let mut q = HouseholdPrivate {
        head_name: gen_name(rng, elderly_head),
        phone: if p.smartphones == 0 && rng.gen_bool(0.4) {
            String::new()
        } else {
            gen_phone(rng)
        },
        roster_no,
        ..HouseholdPrivate::default()
    };
    if rng.gen_bool(0.2) {
        q.notes = one(rng, &NOTES).to_string();
    }
    if rng.gen_bool(0.3) {
        let own_words = p.stated_needs.keys().find_map(|t| need_text(*t));
        q.stated_need_text = own_words
            .unwrap_or_else(|| one(rng, &GENERIC_NEED_TEXT))
            .to_string();
    }
    if rng.gen_bool(0.35) {
        q.separate_consent = true;
        let mut interests = BTreeSet::new();
        if p.elders() > 0 {
            for (interest, prob) in [
                (HealthInterest::BloodPressure, 0.6),
                (HealthInterest::BloodSugar, 0.3),
                (HealthInterest::Medication, 0.2),
            ] {
                if rng.gen_bool(prob) {
                    interests.insert(interest);
                }
            }
            if p.age_70_plus > 0 && rng.gen_bool(0.3) {
                interests.insert(HealthInterest::ElderlyCare);
            }
        }
        if p.children() > 0 && rng.gen_bool(0.4) {
            interests.insert(HealthInterest::Child);
        }
        if p.age_0_5 > 0 && p.age_18_59 > 0 && rng.gen_bool(0.1) {
            interests.insert(HealthInterest::Maternal);
        }
        if rng.gen_bool(0.04) {
            interests.insert(HealthInterest::Mental);
        }
        q.health_interests = interests;
        q.aid_monitoring = rng.gen_bool(0.04);
    }
    q
}

fn fresh_id<R: Rng + ?Sized>(rng: &mut R, seen: &mut HashSet<u32>, prefix: char) -> String {
    loop {
        let n: u32 = rng.gen();
        if seen.insert(n) {
            return format!("{prefix}{n:08x}");
        }
    }
}

/// Generates `households` households of `village` (which should be a village-level code),
/// deterministically from `seed`.
pub fn sample_village(village: AreaCode, households: usize, seed: u64) -> Vec<SampleHousehold> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Each village has two or three cash crops.
    let mut cash: Vec<Crop> = vec![
        Crop::Citrus,
        Crop::Tea,
        Crop::Kiwi,
        Crop::SichuanPepper,
        Crop::OtherFruit,
        Crop::Herbs,
    ];
    cash.shuffle(&mut rng);
    cash.truncate(rng.gen_range(2..=3));
    let mut seen = HashSet::new();
    let mut roster = [0u16; 9];
    (0..households)
        .map(|_| {
            let id = fresh_id(&mut rng, &mut seen, 'h');
            let group: u8 = rng.gen_range(1..=8);
            let seq = &mut roster[usize::from(group)];
            *seq += 1;
            let roster_no = format!("{group}-{:03}", *seq);
            let profile = gen_profile(&mut rng, village, group, &cash);
            let private = gen_private(&mut rng, &profile, roster_no);
            SampleHousehold {
                id,
                profile,
                private,
            }
        })
        .collect()
}

/// A template for sample local needs.
struct NeedTemplate {
    title: &'static str,
    description: &'static str,
    tags: &'static [Tag],
    requester: Requester,
    contact_role: &'static str,
}

const NEED_TEMPLATES: [NeedTemplate; 14] = [
    NeedTemplate {
        title: "柑橘大实蝇绿色防控技术指导",
        description: "合作社有柑橘三百余亩，去年大实蝇危害严重，落果多。希望专家在四五月来现场指导诱杀、清园和落果处理。",
        tags: &[Tag::PltCitrus, Tag::PltPesticide],
        requester: Requester::Coop,
        contact_role: "合作社理事长",
    },
    NeedTemplate {
        title: "生猪养殖场非洲猪瘟生物安全改造",
        description: "家庭农场存栏生猪约两百头，想按生物安全要求改造进出通道和消毒设施，请专家评估现有圈舍。",
        tags: &[Tag::LivPig, Tag::LivAsf],
        requester: Requester::FamilyFarm,
        contact_role: "家庭农场主",
    },
    NeedTemplate {
        title: "茶园春茶机采与名优茶加工",
        description: "村集体茶园约一百五十亩，采茶劳力不足，想试机采，并提高春茶加工品质。",
        tags: &[Tag::PltTea, Tag::PltMachinery],
        requester: Requester::VillageCollective,
        contact_role: "村党支部书记",
    },
    NeedTemplate {
        title: "猕猴桃溃疡病冬季防治",
        description: "全村猕猴桃约八十亩，近两年溃疡病发病加重，死树较多，希望冬季清园前有专家来讲防治。",
        tags: &[Tag::PltKiwi],
        requester: Requester::Coop,
        contact_role: "合作社技术员",
    },
    NeedTemplate {
        title: "花椒流胶病和天牛防治",
        description: "花椒树流胶、天牛蛀干问题突出，产量下降，想请专家诊断并培训椒农。",
        tags: &[Tag::PltPepper, Tag::PltPesticide],
        requester: Requester::VillageCollective,
        contact_role: "村委会主任",
    },
    NeedTemplate {
        title: "农产品直播带货培训",
        description: "村里年轻人少，想培训几名留守妇女用手机直播卖柑橘、腊肉等农产品。",
        tags: &[Tag::DigEcom, Tag::DigPhone],
        requester: Requester::VillageCollective,
        contact_role: "村妇联主席",
    },
    NeedTemplate {
        title: "稻渔综合种养技术",
        description: "计划在五十亩稻田开展稻田养鱼，需要田间工程和鱼种投放方面的技术指导。",
        tags: &[Tag::LivFish, Tag::PltRice],
        requester: Requester::Coop,
        contact_role: "合作社理事长",
    },
    NeedTemplate {
        title: "玉米大豆带状复合种植机械化",
        description: "推广玉米大豆带状复合种植，缺少适合丘陵地块的播种和收获机械，希望专家推荐机型并示范。",
        tags: &[Tag::PltSoystrip, Tag::PltMachinery],
        requester: Requester::Coop,
        contact_role: "农机合作社负责人",
    },
    NeedTemplate {
        title: "防范电信网络诈骗进村宣讲",
        description: "村里老人多，最近有村民接到冒充医保局的电话，希望派人来村里讲防骗知识。",
        tags: &[Tag::SafFraud, Tag::SafFraudOld],
        requester: Requester::VillageCollective,
        contact_role: "村党支部书记",
    },
    NeedTemplate {
        title: "地质灾害隐患点避险演练",
        description: "村里有两处滑坡隐患点，汛期前希望专家指导制定避险路线并组织演练。",
        tags: &[Tag::SafGeo, Tag::SafFlood],
        requester: Requester::VillageCollective,
        contact_role: "村委会主任",
    },
    NeedTemplate {
        title: "食用菌大棚栽培技术",
        description: "企业计划建设食用菌大棚二十个，需要菌种选择、温湿度管理和病害防治方面的指导。",
        tags: &[Tag::PltFungi, Tag::PltGreenhouse],
        requester: Requester::Enterprise,
        contact_role: "企业技术负责人",
    },
    NeedTemplate {
        title: "秸秆综合利用与禁烧",
        description: "收割后秸秆多，村民习惯焚烧，想了解秸秆还田、做饲料和基料的办法。",
        tags: &[Tag::EcoStraw, Tag::LivFeed],
        requester: Requester::VillageCollective,
        contact_role: "村委会主任",
    },
    NeedTemplate {
        title: "农村改厕后期管护",
        description: "已改建卫生厕所的农户有的不会维护，粪污清运也有困难，希望有专家来讲管护办法。",
        tags: &[Tag::EcoToilet, Tag::EcoSewage],
        requester: Requester::VillageCollective,
        contact_role: "村文书",
    },
    NeedTemplate {
        title: "中药材规范化种植",
        description: "合作社准备种植川芎和黄连，需要品种选择、种植规范和采收加工方面的培训。",
        tags: &[Tag::PltHerb, Tag::DigMarket],
        requester: Requester::Coop,
        contact_role: "合作社理事长",
    },
];

/// Generates `n` local needs of `village`, deterministically from `seed`. Each need belongs to
/// the village itself, so a node serving the village accepts all of them.
pub fn sample_needs(village: AreaCode, n: usize, seed: u64) -> Vec<LocalNeed> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6564_7321);
    let mut order: Vec<usize> = (0..NEED_TEMPLATES.len()).collect();
    order.shuffle(&mut rng);
    (0..n)
        .map(|i| {
            let t = &NEED_TEMPLATES[order[i % order.len()]];
            let mut need = LocalNeed::new(village, t.requester, t.title);
            need.description = t.description.to_string();
            need.tags = t.tags.iter().copied().collect();
            need.contact_role = t.contact_role.to_string();
            need.status = pick(
                &mut rng,
                &[
                    (NeedStatus::Open, 40),
                    (NeedStatus::Matched, 20),
                    (NeedStatus::InService, 15),
                    (NeedStatus::Resolved, 15),
                    (NeedStatus::Closed, 10),
                ],
            );
            if need.status == NeedStatus::Resolved {
                need.satisfaction = Some(pick(&mut rng, &[(3u8, 15), (4, 45), (5, 40)]));
            }
            let (m, d) = (rng.gen_range(1..=6u8), rng.gen_range(1..=28u8));
            need.created = Date::new(2025, m, d);
            let later = m + rng.gen_range(0..=2u8);
            let later_day = if later == m {
                rng.gen_range(d..=28)
            } else {
                rng.gen_range(1..=28)
            };
            need.updated = Date::new(2025, later, later_day);
            need
        })
        .collect()
}

/// Makes one or two plausible edits to `profile` (a phone bought, a crop added, a pig sold, a
/// member back from work ...), keeping it valid. Benchmarks use it to simulate revisits.
pub fn sample_edit(profile: &mut HouseholdProfile, rng: &mut impl Rng) {
    let edits = if rng.gen_bool(0.3) { 2 } else { 1 };
    for _ in 0..edits {
        edit_once(profile, rng);
    }
}

fn edit_once<R: Rng + ?Sized>(p: &mut HouseholdProfile, rng: &mut R) {
    match rng.gen_range(0..12u8) {
        0 => {
            if p.smartphones > 0 && rng.gen_bool(0.3) {
                p.smartphones -= 1;
            } else if p.smartphones < MAX_SMARTPHONES {
                p.smartphones += 1;
            }
            p.uses_wechat = p.smartphones > 0 && (p.uses_wechat || rng.gen_bool(0.5));
        }
        1 => p.has_tv = !p.has_tv,
        2 => p.signal = Some(one(rng, Signal::ALL)),
        3 => p.channel = Some(one(rng, Channel::ALL)),
        4 => {
            let crop = one(rng, Crop::ALL);
            if p.crops.remove(&crop).is_none() {
                p.crops.insert(
                    crop,
                    CropEntry {
                        area_band: rng.gen_range(1..=2),
                    },
                );
            }
        }
        5 => {
            let keys: Vec<Crop> = p.crops.keys().copied().collect();
            if keys.is_empty() {
                p.crops.insert(Crop::Vegetables, CropEntry { area_band: 1 });
            } else {
                let crop = one(rng, &keys);
                p.crops.insert(
                    crop,
                    CropEntry {
                        area_band: rng.gen_range(1..=5),
                    },
                );
            }
        }
        6 => {
            let animal = one(rng, &[Livestock::Pig, Livestock::Poultry, Livestock::Sheep]);
            match p.livestock.get(&animal) {
                Some(e) if rng.gen_bool(0.5) => {
                    let herd_band = (e.herd_band % 5) + 1;
                    p.livestock.insert(animal, HerdEntry { herd_band });
                }
                Some(_) => {
                    p.livestock.remove(&animal);
                }
                None => {
                    p.livestock.insert(animal, HerdEntry { herd_band: 1 });
                }
            }
        }
        7 => {
            let asset = one(
                rng,
                &[
                    Asset::Dogs,
                    Asset::Motorbike,
                    Asset::Forest,
                    Asset::Machinery,
                    Asset::CoopMember,
                ],
            );
            if !p.assets.remove(&asset) {
                p.assets.insert(asset);
            }
        }
        8 => {
            p.cooking_fuel = Some(one(
                rng,
                &[Fuel::Electric, Fuel::Lpg, Fuel::Firewood, Fuel::NaturalGas],
            ));
            p.heating_fuel = one(
                rng,
                &[
                    None,
                    Some(Fuel::Electric),
                    Some(Fuel::Firewood),
                    Some(Fuel::Charcoal),
                ],
            );
        }
        9 => {
            let stated: Vec<Tag> = p.stated_needs.keys().copied().collect();
            if !stated.is_empty() && (stated.len() >= MAX_STATED_NEEDS || rng.gen_bool(0.4)) {
                p.stated_needs.remove(&one(rng, &stated));
            } else {
                let candidates: Vec<Tag> = derive_tags(p)
                    .into_iter()
                    .map(|(t, _)| t)
                    .filter(|t| t.is_askable() && !p.stated_needs.contains_key(t))
                    .collect();
                if !candidates.is_empty() {
                    let used: BTreeSet<u8> =
                        p.stated_needs.values().filter_map(|n| n.priority).collect();
                    let priority = (1..=MAX_PRIORITY).find(|q| !used.contains(q));
                    p.stated_needs
                        .insert(one(rng, &candidates), StatedNeed { priority });
                }
            }
        }
        10 => p.eats_wild_mushrooms = !p.eats_wild_mushrooms,
        _ => {
            // A working-age member leaves for work or comes back.
            if p.working_away > 0 && rng.gen_bool(0.5) {
                p.working_away -= 1;
            } else if p.working_away < p.age_18_59 {
                p.working_away += 1;
            }
            if p.working_away == 0 {
                p.left_behind_children = false;
            }
            if p.at_home() > 1 {
                p.elderly_alone = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn village() -> AreaCode {
        AreaCode::parse("510122104201").expect("valid")
    }

    #[test]
    fn every_household_is_valid_for_several_seeds() {
        for seed in [0, 1, 42, 2025, u64::MAX] {
            let sample = sample_village(village(), 1000, seed);
            assert_eq!(sample.len(), 1000);
            let mut ids = HashSet::new();
            for h in &sample {
                assert_eq!(h.profile.validate(), Ok(()), "seed {seed}, {}", h.id);
                assert_eq!(h.private.validate(), Ok(()), "seed {seed}, {}", h.id);
                assert!(
                    h.profile.key(&h.id).is_ok(),
                    "{} is not a document id",
                    h.id
                );
                assert!(h.id.len() == 9 && h.id.starts_with('h'));
                assert!(ids.insert(h.id.clone()), "duplicate id {}", h.id);
                assert_eq!(h.profile.village, village());
                // The JSON the API receives parses back to the same values.
                let json = serde_json::to_value(&h.profile).expect("serialise");
                assert_eq!(HouseholdProfile::from_json(&json).as_ref(), Ok(&h.profile));
                let json = serde_json::to_value(&h.private).expect("serialise");
                assert_eq!(HouseholdPrivate::from_json(&json).as_ref(), Ok(&h.private));
            }
        }
    }

    #[test]
    fn deterministic_per_seed() {
        assert_eq!(
            sample_village(village(), 50, 7),
            sample_village(village(), 50, 7)
        );
        assert_ne!(
            sample_village(village(), 50, 7),
            sample_village(village(), 50, 8)
        );
        assert_eq!(sample_needs(village(), 8, 7), sample_needs(village(), 8, 7));
    }

    #[test]
    fn looks_like_a_hollowed_out_basin_village() {
        let sample = sample_village(village(), 1000, 3);
        let share = |f: &dyn Fn(&SampleHousehold) -> bool| {
            sample.iter().filter(|h| f(h)).count() as f64 / sample.len() as f64
        };
        let elders = share(&|h| h.profile.elders() > 0);
        let pigs = share(&|h| h.profile.livestock.contains_key(&Livestock::Pig));
        let away = share(&|h| h.profile.working_away > 0);
        let left_children = share(&|h| h.profile.left_behind_children);
        let earth = share(&|h| h.profile.housing == Some(Housing::EarthWood));
        let stated = share(&|h| !h.profile.stated_needs.is_empty());
        assert!(elders > 0.6, "households with 60+: {elders}");
        assert!((0.4..0.7).contains(&pigs), "pig households: {pigs}");
        assert!(away > 0.4, "households with members away: {away}");
        assert!(left_children > 0.1, "left-behind children: {left_children}");
        assert!(
            (0.05..0.2).contains(&earth),
            "earth-and-wood houses: {earth}"
        );
        assert!(stated > 0.5, "households with stated needs: {stated}");
        let groups: BTreeSet<u8> = sample.iter().map(|h| h.profile.group).collect();
        assert_eq!(groups, (1..=8).collect());
        // Roster numbers are unique and belong to the household's group.
        let mut rosters = HashSet::new();
        for h in &sample {
            assert!(rosters.insert(h.private.roster_no.clone()));
            assert!(h
                .private
                .roster_no
                .starts_with(&format!("{}-", h.profile.group)));
        }
        // Stated needs follow production: a stated crop or livestock tag is also derived.
        for h in &sample {
            let derived: BTreeSet<Tag> = derive_tags(&h.profile)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            for t in h.profile.stated_needs.keys() {
                assert!(
                    derived.contains(t),
                    "{} states {t:?} without a reason",
                    h.id
                );
            }
        }
        // Names: a common surname and a given name.
        let surnames: BTreeMap<char, usize> = sample.iter().fold(BTreeMap::new(), |mut m, h| {
            if let Some(c) = h.private.head_name.chars().next() {
                *m.entry(c).or_default() += 1;
            }
            m
        });
        assert!(surnames.len() >= 20);
        assert!(sample
            .iter()
            .all(|h| (2..=3).contains(&h.private.head_name.chars().count())));
    }

    #[test]
    fn needs_are_valid_and_in_the_village() {
        for seed in [0, 1, 99] {
            let needs = sample_needs(village(), 40, seed);
            assert_eq!(needs.len(), 40);
            for n in &needs {
                assert_eq!(n.validate(), Ok(()), "{n:?}");
                assert_eq!(n.area, village());
                let json = serde_json::to_value(n).expect("serialise");
                assert_eq!(LocalNeed::from_json(&json).as_ref(), Ok(n));
            }
            let titles: BTreeSet<&str> = needs.iter().take(14).map(|n| n.title.as_str()).collect();
            assert_eq!(titles.len(), 14, "the first needs all differ");
        }
    }

    #[test]
    fn edits_keep_households_valid_and_change_something() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut changed = 0;
        for mut h in sample_village(village(), 1000, 5) {
            for _ in 0..10 {
                let before = h.profile.clone();
                sample_edit(&mut h.profile, &mut rng);
                assert_eq!(h.profile.validate(), Ok(()), "{}", h.id);
                changed += usize::from(before != h.profile);
            }
        }
        assert!(
            changed > 9000,
            "edits should usually change something: {changed}"
        );
    }
}
