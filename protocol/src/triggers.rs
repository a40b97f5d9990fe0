//! Trigger rules: from household fields to need tags (`research/domain.md` §2, "Trigger").
//!
//! [`derive_tags`] maps a [`HouseholdProfile`] to the household-level tags its fields imply,
//! each with a [`Reason`] a cadre can check ("家中养猪"). It covers every
//! [`TagFlag::Household`](crate::taxonomy::TagFlag::Household) tag of the tree, including the
//! defaults every household gets. It never returns region tags (set from the area code elsewhere)
//! or voluntary tags, which come only from the private document through
//! [`derive_private_tags`], and only with separate consent. Stated needs are not derived tags;
//! they live in [`HouseholdProfile::stated_needs`] and matching weighs them separately.
//!
//! Output is in tree order with each tag once. When several rules imply the same tag, the
//! reason of the first rule listed in [`derive_tags`] is kept.
//!
//! Choices where the table leaves room:
//! - "has 65+" (`hlt.elderly`) is proxied by the 70+ band: the 60–69 band cannot tell 64 from
//!   65, and those members already get `hlt.stroke`, `hlt.bp`, `hlt.dm` and `saf.fraud_old`.
//! - `hlt.bp` and `hlt.dm` are proxied by "has 60+"; a stated health interest in the private
//!   document adds them too ([`derive_private_tags`]).
//! - "near water" for `saf.drown` is a riverside house site, a fish pond or rice–fish paddies.
//! - "any livestock" for `liv.vaccine` and `liv.manure` means farm animals (pigs, cattle, yaks,
//!   sheep and goats, poultry, rabbits): bees and fish are neither vaccinated nor produce manure.
//!   `liv.drug` and `dig.finance` take any livestock.
//! - `saf.co` follows the table: heating with coal or charcoal (cooking fuel does not count).
//! - `saf.fire_wild` is household-level through forest land (林地/竹林); its region part (林区,
//!   牧区) is left to region rules.
//! - `eco.toilet` applies to any recorded toilet type (a dry pit needs upgrading, a sanitary
//!   toilet needs maintenance); `eco.sewage` applies unless waste water goes to a sewer.
//! - `dig.market` needs a crop or herd in band 3 or more; "large grower" for `dig.coop` is band 4
//!   or more.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::household::{
    Asset, Crop, Fuel, HouseholdPrivate, HouseholdProfile, Housing, Livestock, SiteRisk, Toilet,
    Water,
};
use crate::taxonomy::Tag;

/// Why a tag applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Machine code: the field that triggered the tag (`livestock.pig`, `age_60_plus`,
    /// `crops`, `default`, ...).
    pub code: String,
    /// The reason in Chinese, e.g. `家中养猪`.
    pub text: String,
}

impl Reason {
    fn new(code: impl Into<String>, text: impl Into<String>) -> Reason {
        Reason {
            code: code.into(),
            text: text.into(),
        }
    }

    /// The reason in Chinese, for people.
    pub fn message(&self) -> String {
        self.text.clone()
    }
}

/// Tags every household gets.
pub const DEFAULT_TAGS: [Tag; 10] = [
    Tag::HltNutrition,
    Tag::HltTobacco,
    Tag::HltFirstaid,
    Tag::SafFood,
    Tag::EcoWaste,
    Tag::PolIns,
    Tag::PolLaw,
    Tag::SciWeather,
    Tag::SciRumor,
    Tag::SciFrontier,
];

/// Grain and oil crops, whose straw is burnt or used (`eco.straw`).
const GRAIN_OIL: [Crop; 6] = [
    Crop::Rice,
    Crop::Maize,
    Crop::Wheat,
    Crop::Rape,
    Crop::Soybean,
    Crop::HighlandBarley,
];

/// Farm animals: vaccinated and producing manure.
const FARM_ANIMALS: [Livestock; 6] = [
    Livestock::Pig,
    Livestock::Cattle,
    Livestock::Yak,
    Livestock::Sheep,
    Livestock::Poultry,
    Livestock::Rabbit,
];

fn crop_tags(crop: Crop) -> &'static [Tag] {
    match crop {
        Crop::Rice => &[Tag::PltRice],
        Crop::Maize => &[Tag::PltMaize, Tag::PltSoystrip],
        Crop::Soybean => &[Tag::PltSoystrip],
        Crop::Wheat => &[Tag::PltWheat],
        Crop::Rape => &[Tag::PltRape],
        Crop::Potato | Crop::SweetPotato => &[Tag::PltPotato],
        Crop::HighlandBarley => &[Tag::PltHighland],
        Crop::Vegetables => &[Tag::PltVeg],
        Crop::Citrus => &[Tag::PltCitrus],
        Crop::Kiwi => &[Tag::PltKiwi],
        Crop::Tea => &[Tag::PltTea],
        Crop::SichuanPepper => &[Tag::PltPepper],
        Crop::OtherFruit => &[Tag::PltFruit],
        Crop::Herbs => &[Tag::PltHerb],
        Crop::Fungi => &[Tag::PltFungi],
    }
}

fn livestock_tags(animal: Livestock) -> &'static [Tag] {
    match animal {
        Livestock::Pig => &[Tag::LivPig, Tag::LivAsf],
        Livestock::Cattle => &[Tag::LivCattle, Tag::LivZoonosis, Tag::LivFeed],
        Livestock::Yak => &[Tag::LivYak, Tag::LivZoonosis, Tag::LivFeed],
        Livestock::Sheep => &[Tag::LivSheep, Tag::LivZoonosis, Tag::LivFeed],
        Livestock::Poultry => &[Tag::LivPoultry],
        Livestock::Rabbit => &[Tag::LivRabbit],
        Livestock::Bee => &[Tag::LivBee],
        Livestock::Fish => &[Tag::LivFish],
    }
}

fn asset_tags(asset: Asset) -> &'static [Tag] {
    match asset {
        Asset::Greenhouse => &[Tag::PltGreenhouse],
        Asset::Machinery => &[Tag::PltMachinery],
        Asset::Forest => &[Tag::PltForest, Tag::SafFireWild],
        Asset::FishPond | Asset::RiceFish => &[Tag::LivFish],
        Asset::Dogs => &[Tag::SafDog, Tag::LivZoonosis],
        Asset::Motorbike => &[Tag::SafTraffic],
        Asset::Agritourism => &[Tag::DigTour],
        Asset::Ecommerce => &[Tag::DigEcom],
        Asset::CoopMember => &[Tag::DigCoop],
    }
}

/// Collects tags, keeping the first reason for each.
#[derive(Default)]
struct Derived(BTreeMap<Tag, Reason>);

impl Derived {
    fn add(&mut self, tag: Tag, code: impl Into<String>, text: impl Into<String>) {
        self.0.entry(tag).or_insert_with(|| Reason::new(code, text));
    }

    fn add_all(&mut self, tags: &[Tag], code: &str, text: &str) {
        for &tag in tags {
            self.add(tag, code, text);
        }
    }

    fn finish(self) -> Vec<(Tag, Reason)> {
        self.0.into_iter().collect()
    }
}

/// The household-level tags a profile's fields imply, each with its reason, in tree order.
pub fn derive_tags(p: &HouseholdProfile) -> Vec<(Tag, Reason)> {
    let mut out = Derived::default();

    // Production: crops, livestock, assets, each with its own tags.
    for &crop in p.crops.keys() {
        let text = format!("家中种{}", crop.zh_name());
        out.add_all(crop_tags(crop), &format!("crops.{}", crop.id()), &text);
    }
    for &animal in p.livestock.keys() {
        let text = format!("家中养{}", animal.zh_name());
        out.add_all(
            livestock_tags(animal),
            &format!("livestock.{}", animal.id()),
            &text,
        );
    }
    for &asset in &p.assets {
        let text = match asset {
            Asset::Dogs => "家中养狗".to_string(),
            Asset::Ecommerce => "在网上卖农产品".to_string(),
            Asset::CoopMember => "是合作社成员".to_string(),
            Asset::Agritourism => "经营农家乐".to_string(),
            other => format!("家中有{}", other.zh_name()),
        };
        out.add_all(asset_tags(asset), &format!("assets.{}", asset.id()), &text);
    }

    // Anything grown.
    if let Some(&first) = p.crops.keys().next() {
        let text = format!("家中种{}等作物", first.zh_name());
        out.add_all(
            &[
                Tag::PltPesticide,
                Tag::PltFertilizer,
                Tag::PltSeed,
                Tag::EcoFilm,
                Tag::PolFarm,
                Tag::PolLand,
                Tag::DigFinance,
            ],
            "crops",
            &text,
        );
        if p.children() > 0 || p.elders() > 0 {
            out.add(
                Tag::SafPestPoison,
                "crops+age",
                "家中种地、存放农药，且有儿童或老人",
            );
        }
    }
    if let Some(&crop) = GRAIN_OIL.iter().find(|c| p.crops.contains_key(c)) {
        out.add(
            Tag::EcoStraw,
            format!("crops.{}", crop.id()),
            format!("种植粮油作物（{}），有秸秆处理问题", crop.zh_name()),
        );
    }
    // Scale.
    let big_crop = |min: u8| p.crops.iter().find(|(_, e)| e.area_band >= min);
    let big_herd = |min: u8| p.livestock.iter().find(|(_, e)| e.herd_band >= min);
    if let Some((crop, e)) = big_crop(3) {
        let text = format!("{}种植面积较大（{}档）", crop.zh_name(), e.area_band);
        let code = format!("crops.{}.area_band", crop.id());
        out.add(Tag::PltMachinery, &code, &text);
        out.add(Tag::DigMarket, &code, &text);
    }
    if let Some((animal, e)) = big_herd(3) {
        let text = format!("{}养殖规模较大（{}档）", animal.zh_name(), e.herd_band);
        out.add(
            Tag::DigMarket,
            format!("livestock.{}.herd_band", animal.id()),
            text,
        );
    }
    if let Some((crop, e)) = big_crop(4) {
        let text = format!("{}种植大户（{}档）", crop.zh_name(), e.area_band);
        out.add(Tag::DigCoop, format!("crops.{}.area_band", crop.id()), text);
    }
    if let Some((animal, e)) = big_herd(4) {
        let text = format!("{}养殖大户（{}档）", animal.zh_name(), e.herd_band);
        out.add(
            Tag::DigCoop,
            format!("livestock.{}.herd_band", animal.id()),
            text,
        );
    }
    // Any livestock.
    if let Some(&animal) = FARM_ANIMALS.iter().find(|a| p.livestock.contains_key(a)) {
        let text = format!("家中养{}", animal.zh_name());
        out.add_all(
            &[Tag::LivVaccine, Tag::LivManure],
            &format!("livestock.{}", animal.id()),
            &text,
        );
    }
    if let Some(&animal) = p.livestock.keys().next() {
        let text = format!("家中养{}", animal.zh_name());
        out.add_all(
            &[Tag::LivDrug, Tag::DigFinance],
            &format!("livestock.{}", animal.id()),
            &text,
        );
    }

    // People.
    if p.elders() > 0 {
        out.add_all(
            &[
                Tag::HltBp,
                Tag::HltDm,
                Tag::HltStroke,
                Tag::HltMedicine,
                Tag::SafFraudOld,
            ],
            "age_60_plus",
            "有60岁以上成员",
        );
    }
    if p.age_70_plus > 0 {
        out.add(Tag::HltElderly, "age_70_plus", "有70岁以上成员");
    }
    if p.left_behind_elderly {
        out.add(Tag::HltAlone, "left_behind_elderly", "家中有留守老人");
    }
    if p.elderly_alone {
        out.add(Tag::HltAlone, "elderly_alone", "家中有独居老人");
    }
    if p.age_0_5 > 0 {
        out.add(Tag::HltInfant, "age_0_5", "有0–5岁婴幼儿");
    }
    if p.age_6_14 > 0 {
        out.add(Tag::HltChild, "age_6_14", "有6–14岁学龄儿童");
    }
    if p.left_behind_children {
        out.add(Tag::HltLeftchild, "left_behind_children", "家中有留守儿童");
    }
    if p.school_age() > 0 {
        out.add_all(
            &[Tag::PolEdu, Tag::SciYouth],
            "age_6_17",
            "有6–17岁在学年龄成员",
        );
        let near_water = if p.site_risks.contains(&SiteRisk::Riverside) {
            Some(("site_risks.riverside", "有6–17岁成员，且房屋临河"))
        } else if p.assets.contains(&Asset::FishPond) {
            Some(("assets.fish_pond", "有6–17岁成员，且家有鱼塘"))
        } else if p.assets.contains(&Asset::RiceFish) {
            Some(("assets.rice_fish", "有6–17岁成员，且有稻田养鱼"))
        } else {
            None
        };
        if let Some((code, text)) = near_water {
            out.add(Tag::SafDrown, code, text);
        }
    }
    if p.working_away > 0 {
        out.add(Tag::DigJob, "working_away", "有成员外出务工");
    } else if p.age_18_59 > 0 {
        out.add(Tag::DigJob, "age_18_59", "有18–59岁劳动力");
    }

    // Phones.
    if p.smartphones > 0 {
        out.add_all(
            &[Tag::SafFraud, Tag::DigPay, Tag::DigGov],
            "smartphones",
            "家中有智能手机",
        );
        if p.phone_skill_low {
            out.add(Tag::DigPhone, "phone_skill_low", "有智能手机，但不太会用");
        }
    }

    // Housing, fuel, water, sanitation, site.
    match p.housing {
        Some(Housing::EarthWood) => {
            out.add(Tag::SafFireHome, "housing.earth_wood", "住土木结构房屋");
            out.add(Tag::PolHouse, "housing.earth_wood", "住土木结构房屋");
        }
        Some(Housing::Wood) => out.add(Tag::SafFireHome, "housing.wood", "住木结构房屋"),
        _ => {}
    }
    if p.cooking_fuel == Some(Fuel::Firewood) {
        out.add(Tag::SafFireHome, "cooking_fuel.firewood", "烧柴草做饭");
        out.add(Tag::EcoEnergy, "cooking_fuel.firewood", "烧柴草做饭");
    }
    if p.heating_fuel == Some(Fuel::Firewood) {
        out.add(Tag::SafFireHome, "heating_fuel.firewood", "烧柴草取暖");
        out.add(Tag::EcoEnergy, "heating_fuel.firewood", "烧柴草取暖");
    }
    match p.heating_fuel {
        Some(Fuel::Coal) => out.add(Tag::SafCo, "heating_fuel.coal", "烧煤取暖"),
        Some(Fuel::Charcoal) => out.add(Tag::SafCo, "heating_fuel.charcoal", "烧炭取暖"),
        _ => {}
    }
    if let Some(water @ (Water::WellSpring | Water::Cistern | Water::Surface)) = p.water {
        out.add(
            Tag::EcoWater,
            format!("water.{}", water.id()),
            format!("饮用{}", water.zh_name()),
        );
    }
    match p.toilet {
        Some(Toilet::DryPit) => out.add(Tag::EcoToilet, "toilet.dry_pit", "家中为旱厕"),
        Some(Toilet::Sanitary) => out.add(Tag::EcoToilet, "toilet.sanitary", "家中有卫生厕所"),
        None => {}
    }
    if !p.sewer {
        out.add(Tag::EcoSewage, "sewer", "生活污水未接入管网");
    }
    for risk in [SiteRisk::SlopeFoot, SiteRisk::GullyMouth] {
        if p.site_risks.contains(&risk) {
            let text = format!("房屋位于{}", risk.zh_name());
            out.add(Tag::SafGeo, format!("site_risks.{}", risk.id()), text);
        }
    }
    for risk in [SiteRisk::Riverside, SiteRisk::GullyMouth] {
        if p.site_risks.contains(&risk) {
            let text = format!("房屋位于{}", risk.zh_name());
            out.add(Tag::SafFlood, format!("site_risks.{}", risk.id()), text);
        }
    }
    if p.eats_wild_mushrooms {
        out.add(Tag::SafMushroom, "eats_wild_mushrooms", "有采食野生菌习惯");
    }

    out.add_all(&DEFAULT_TAGS, "default", "面向所有农户");
    out.finish()
}

/// The tags of the private document: health interests and the aid flag, only with separate
/// consent (without it, nothing). These may include voluntary tags and must stay on the node.
pub fn derive_private_tags(q: &HouseholdPrivate) -> Vec<(Tag, Reason)> {
    let mut out = Derived::default();
    if !q.separate_consent {
        return Vec::new();
    }
    for &interest in &q.health_interests {
        out.add(
            interest.tag(),
            format!("health_interests.{}", interest.id()),
            format!("本人选择关注{}", interest.zh_name()),
        );
    }
    if q.aid_monitoring {
        out.add(Tag::PolAid, "aid_monitoring", "防返贫监测对象（村台账）");
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::area::AreaCode;
    use crate::household::testgen::arb_profile;
    use crate::household::{CropEntry, Education, HealthInterest, HerdEntry, StatedNeed};
    use crate::taxonomy::TagFlag;

    /// One row of the trigger table: a household, tags it must have, tags it must not have.
    struct Case {
        name: &'static str,
        edit: fn(&mut HouseholdProfile),
        present: &'static [Tag],
        absent: &'static [Tag],
    }

    fn bare() -> HouseholdProfile {
        HouseholdProfile::new(AreaCode::parse("510122104201").expect("valid"), 1, 1)
    }

    fn crop(p: &mut HouseholdProfile, c: Crop, band: u8) {
        p.crops.insert(c, CropEntry { area_band: band });
    }

    fn herd(p: &mut HouseholdProfile, a: Livestock, band: u8) {
        p.livestock.insert(a, HerdEntry { herd_band: band });
    }

    fn people(p: &mut HouseholdProfile, bands: [u8; 6], away: u8) {
        [
            p.age_0_5,
            p.age_6_14,
            p.age_15_17,
            p.age_18_59,
            p.age_60_69,
            p.age_70_plus,
        ] = bands;
        p.residents = bands.iter().sum();
        p.working_away = away;
    }

    use crate::taxonomy::Tag::*;

    const ANY_CROP: &[Tag] = &[
        PltPesticide,
        PltFertilizer,
        PltSeed,
        EcoFilm,
        PolFarm,
        PolLand,
        DigFinance,
    ];

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "bare household: defaults and no sewer only",
                edit: |_| {},
                present: &[EcoSewage],
                absent: &[],
            },
            Case {
                name: "sewer connected",
                edit: |p| p.sewer = true,
                present: &[],
                absent: &[EcoSewage],
            },
            Case {
                name: "rice, small",
                edit: |p| crop(p, Crop::Rice, 1),
                present: &[PltRice, EcoStraw],
                absent: &[
                    PltMaize,
                    PltSoystrip,
                    PltMachinery,
                    DigMarket,
                    DigCoop,
                    SafPestPoison,
                ],
            },
            Case {
                name: "any crop",
                edit: |p| crop(p, Crop::Vegetables, 2),
                present: ANY_CROP,
                absent: &[EcoStraw, PltMachinery, SafPestPoison, LivDrug],
            },
            Case {
                name: "maize",
                edit: |p| crop(p, Crop::Maize, 1),
                present: &[PltMaize, PltSoystrip, EcoStraw],
                absent: &[PltRice],
            },
            Case {
                name: "soybean only",
                edit: |p| crop(p, Crop::Soybean, 1),
                present: &[PltSoystrip, EcoStraw],
                absent: &[PltMaize],
            },
            Case {
                name: "wheat",
                edit: |p| crop(p, Crop::Wheat, 1),
                present: &[PltWheat, EcoStraw],
                absent: &[PltRape],
            },
            Case {
                name: "rape",
                edit: |p| crop(p, Crop::Rape, 2),
                present: &[PltRape, EcoStraw],
                absent: &[PltWheat],
            },
            Case {
                name: "potato",
                edit: |p| crop(p, Crop::Potato, 1),
                present: &[PltPotato],
                absent: &[EcoStraw],
            },
            Case {
                name: "sweet potato",
                edit: |p| crop(p, Crop::SweetPotato, 1),
                present: &[PltPotato],
                absent: &[EcoStraw, PltHighland],
            },
            Case {
                name: "highland barley",
                edit: |p| crop(p, Crop::HighlandBarley, 1),
                present: &[PltHighland, EcoStraw],
                absent: &[PltWheat],
            },
            Case {
                name: "vegetables",
                edit: |p| crop(p, Crop::Vegetables, 1),
                present: &[PltVeg],
                absent: &[PltGreenhouse],
            },
            Case {
                name: "citrus, band 3",
                edit: |p| crop(p, Crop::Citrus, 3),
                present: &[PltCitrus, PltMachinery, DigMarket],
                absent: &[DigCoop, PltKiwi, EcoStraw],
            },
            Case {
                name: "kiwi, band 4 (large grower)",
                edit: |p| crop(p, Crop::Kiwi, 4),
                present: &[PltKiwi, PltMachinery, DigMarket, DigCoop],
                absent: &[PltCitrus],
            },
            Case {
                name: "tea",
                edit: |p| crop(p, Crop::Tea, 2),
                present: &[PltTea],
                absent: &[PltMachinery, DigMarket],
            },
            Case {
                name: "sichuan pepper",
                edit: |p| crop(p, Crop::SichuanPepper, 1),
                present: &[PltPepper],
                absent: &[PltFruit],
            },
            Case {
                name: "other fruit",
                edit: |p| crop(p, Crop::OtherFruit, 1),
                present: &[PltFruit],
                absent: &[PltCitrus],
            },
            Case {
                name: "herbs",
                edit: |p| crop(p, Crop::Herbs, 1),
                present: &[PltHerb],
                absent: &[PltFungi],
            },
            Case {
                name: "fungi",
                edit: |p| crop(p, Crop::Fungi, 1),
                present: &[PltFungi],
                absent: &[PltHerb],
            },
            Case {
                name: "greenhouse",
                edit: |p| {
                    p.assets.insert(Asset::Greenhouse);
                },
                present: &[PltGreenhouse],
                absent: &[PltVeg, PltPesticide],
            },
            Case {
                name: "forest land",
                edit: |p| {
                    p.assets.insert(Asset::Forest);
                },
                present: &[PltForest, SafFireWild],
                absent: &[PltPesticide],
            },
            Case {
                name: "machinery without crops",
                edit: |p| {
                    p.assets.insert(Asset::Machinery);
                },
                present: &[PltMachinery],
                absent: &[DigMarket, PltPesticide],
            },
            Case {
                name: "fish pond",
                edit: |p| {
                    p.assets.insert(Asset::FishPond);
                },
                present: &[LivFish],
                absent: &[LivVaccine, LivDrug, SafDrown],
            },
            Case {
                name: "rice-fish paddies",
                edit: |p| {
                    p.assets.insert(Asset::RiceFish);
                },
                present: &[LivFish],
                absent: &[LivVaccine],
            },
            Case {
                name: "dogs",
                edit: |p| {
                    p.assets.insert(Asset::Dogs);
                },
                present: &[SafDog, LivZoonosis],
                absent: &[LivVaccine, LivFeed],
            },
            Case {
                name: "motorbike",
                edit: |p| {
                    p.assets.insert(Asset::Motorbike);
                },
                present: &[SafTraffic],
                absent: &[PltMachinery],
            },
            Case {
                name: "agritourism",
                edit: |p| {
                    p.assets.insert(Asset::Agritourism);
                },
                present: &[DigTour],
                absent: &[DigEcom],
            },
            Case {
                name: "sells online",
                edit: |p| {
                    p.assets.insert(Asset::Ecommerce);
                },
                present: &[DigEcom],
                absent: &[DigTour],
            },
            Case {
                name: "cooperative member",
                edit: |p| {
                    p.assets.insert(Asset::CoopMember);
                },
                present: &[DigCoop],
                absent: &[DigMarket],
            },
            Case {
                name: "pigs",
                edit: |p| herd(p, Livestock::Pig, 1),
                present: &[LivPig, LivAsf, LivVaccine, LivManure, LivDrug, DigFinance],
                absent: &[LivZoonosis, LivFeed, DigMarket, PltPesticide],
            },
            Case {
                name: "pigs, band 3",
                edit: |p| herd(p, Livestock::Pig, 3),
                present: &[DigMarket],
                absent: &[DigCoop],
            },
            Case {
                name: "pigs, band 4",
                edit: |p| herd(p, Livestock::Pig, 4),
                present: &[DigMarket, DigCoop],
                absent: &[],
            },
            Case {
                name: "cattle",
                edit: |p| herd(p, Livestock::Cattle, 1),
                present: &[LivCattle, LivZoonosis, LivFeed, LivVaccine],
                absent: &[LivYak],
            },
            Case {
                name: "yaks",
                edit: |p| herd(p, Livestock::Yak, 2),
                present: &[LivYak, LivZoonosis, LivFeed],
                absent: &[LivCattle],
            },
            Case {
                name: "sheep and goats",
                edit: |p| herd(p, Livestock::Sheep, 1),
                present: &[LivSheep, LivZoonosis, LivFeed, LivManure],
                absent: &[LivPig],
            },
            Case {
                name: "poultry",
                edit: |p| herd(p, Livestock::Poultry, 1),
                present: &[LivPoultry, LivVaccine, LivManure],
                absent: &[LivFeed, LivZoonosis],
            },
            Case {
                name: "rabbits",
                edit: |p| herd(p, Livestock::Rabbit, 1),
                present: &[LivRabbit, LivVaccine],
                absent: &[LivFeed],
            },
            Case {
                name: "bees",
                edit: |p| herd(p, Livestock::Bee, 1),
                present: &[LivBee, LivDrug, DigFinance],
                absent: &[LivVaccine, LivManure],
            },
            Case {
                name: "fish as livestock",
                edit: |p| herd(p, Livestock::Fish, 1),
                present: &[LivFish, LivDrug],
                absent: &[LivVaccine, LivManure],
            },
            Case {
                name: "one member aged 60–69",
                edit: |p| people(p, [0, 0, 0, 0, 1, 0], 0),
                present: &[HltBp, HltDm, HltStroke, HltMedicine, SafFraudOld],
                absent: &[HltElderly, HltAlone, DigJob, SafPestPoison],
            },
            Case {
                name: "one member aged 70+ (the 65+ proxy)",
                edit: |p| people(p, [0, 0, 0, 0, 0, 1], 0),
                present: &[HltElderly, HltStroke, SafFraudOld],
                absent: &[HltAlone],
            },
            Case {
                name: "left-behind elderly",
                edit: |p| {
                    people(p, [0, 0, 0, 1, 1, 0], 1);
                    p.left_behind_elderly = true;
                },
                present: &[HltAlone, DigJob],
                absent: &[HltLeftchild],
            },
            Case {
                name: "elderly living alone",
                edit: |p| {
                    people(p, [0, 0, 0, 0, 0, 1], 0);
                    p.elderly_alone = true;
                },
                present: &[HltAlone],
                absent: &[DigJob],
            },
            Case {
                name: "infant",
                edit: |p| people(p, [1, 0, 0, 2, 0, 0], 0),
                present: &[HltInfant, DigJob],
                absent: &[HltChild, PolEdu, SciYouth],
            },
            Case {
                name: "school child",
                edit: |p| people(p, [0, 1, 0, 1, 0, 0], 0),
                present: &[HltChild, PolEdu, SciYouth],
                absent: &[HltInfant, SafDrown, HltLeftchild],
            },
            Case {
                name: "teenager",
                edit: |p| people(p, [0, 0, 1, 1, 0, 0], 0),
                present: &[PolEdu, SciYouth],
                absent: &[HltChild],
            },
            Case {
                name: "left-behind child",
                edit: |p| {
                    people(p, [0, 1, 0, 2, 1, 0], 2);
                    p.left_behind_children = true;
                },
                present: &[HltLeftchild, DigJob],
                absent: &[],
            },
            Case {
                name: "school child by a river",
                edit: |p| {
                    people(p, [0, 1, 0, 1, 0, 0], 0);
                    p.site_risks.insert(SiteRisk::Riverside);
                },
                present: &[SafDrown, SafFlood],
                absent: &[SafGeo],
            },
            Case {
                name: "teenager with a fish pond",
                edit: |p| {
                    people(p, [0, 0, 1, 1, 0, 0], 0);
                    p.assets.insert(Asset::FishPond);
                },
                present: &[SafDrown],
                absent: &[],
            },
            Case {
                name: "riverside without children",
                edit: |p| {
                    p.site_risks.insert(SiteRisk::Riverside);
                },
                present: &[SafFlood],
                absent: &[SafDrown],
            },
            Case {
                name: "crops and a child: pesticide poisoning",
                edit: |p| {
                    people(p, [1, 0, 0, 1, 0, 0], 0);
                    crop(p, Crop::Maize, 1);
                },
                present: &[SafPestPoison],
                absent: &[],
            },
            Case {
                name: "crops and an elder: pesticide poisoning",
                edit: |p| {
                    people(p, [0, 0, 0, 0, 0, 1], 0);
                    crop(p, Crop::Tea, 1);
                },
                present: &[SafPestPoison],
                absent: &[],
            },
            Case {
                name: "child without crops",
                edit: |p| people(p, [1, 0, 0, 1, 0, 0], 0),
                present: &[],
                absent: &[SafPestPoison],
            },
            Case {
                name: "smartphone",
                edit: |p| p.smartphones = 1,
                present: &[SafFraud, DigPay, DigGov],
                absent: &[DigPhone],
            },
            Case {
                name: "smartphone, low skill",
                edit: |p| {
                    p.smartphones = 1;
                    p.phone_skill_low = true;
                },
                present: &[DigPhone],
                absent: &[],
            },
            Case {
                name: "low skill, no smartphone",
                edit: |p| p.phone_skill_low = true,
                present: &[],
                absent: &[DigPhone, SafFraud, DigPay, DigGov],
            },
            Case {
                name: "member working away",
                edit: |p| people(p, [0, 0, 0, 2, 0, 0], 1),
                present: &[DigJob],
                absent: &[],
            },
            Case {
                name: "earth-and-wood house",
                edit: |p| p.housing = Some(Housing::EarthWood),
                present: &[SafFireHome, PolHouse],
                absent: &[EcoEnergy],
            },
            Case {
                name: "wooden house",
                edit: |p| p.housing = Some(Housing::Wood),
                present: &[SafFireHome],
                absent: &[PolHouse],
            },
            Case {
                name: "brick-concrete house, LPG cooking",
                edit: |p| {
                    p.housing = Some(Housing::BrickConcrete);
                    p.cooking_fuel = Some(Fuel::Lpg);
                },
                present: &[],
                absent: &[SafFireHome, PolHouse, EcoEnergy],
            },
            Case {
                name: "cooks with firewood",
                edit: |p| p.cooking_fuel = Some(Fuel::Firewood),
                present: &[SafFireHome, EcoEnergy],
                absent: &[SafCo],
            },
            Case {
                name: "heats with firewood",
                edit: |p| p.heating_fuel = Some(Fuel::Firewood),
                present: &[SafFireHome, EcoEnergy],
                absent: &[SafCo],
            },
            Case {
                name: "heats with coal",
                edit: |p| p.heating_fuel = Some(Fuel::Coal),
                present: &[SafCo],
                absent: &[EcoEnergy],
            },
            Case {
                name: "heats with charcoal",
                edit: |p| p.heating_fuel = Some(Fuel::Charcoal),
                present: &[SafCo],
                absent: &[],
            },
            Case {
                name: "cooks with coal (heating only counts)",
                edit: |p| p.cooking_fuel = Some(Fuel::Coal),
                present: &[],
                absent: &[SafCo],
            },
            Case {
                name: "well or spring water",
                edit: |p| p.water = Some(Water::WellSpring),
                present: &[EcoWater],
                absent: &[],
            },
            Case {
                name: "cistern",
                edit: |p| p.water = Some(Water::Cistern),
                present: &[EcoWater],
                absent: &[],
            },
            Case {
                name: "river or pond water",
                edit: |p| p.water = Some(Water::Surface),
                present: &[EcoWater],
                absent: &[],
            },
            Case {
                name: "piped water",
                edit: |p| p.water = Some(Water::Piped),
                present: &[],
                absent: &[EcoWater],
            },
            Case {
                name: "dry pit toilet",
                edit: |p| p.toilet = Some(Toilet::DryPit),
                present: &[EcoToilet],
                absent: &[],
            },
            Case {
                name: "sanitary toilet",
                edit: |p| p.toilet = Some(Toilet::Sanitary),
                present: &[EcoToilet],
                absent: &[],
            },
            Case {
                name: "slope foot",
                edit: |p| {
                    p.site_risks.insert(SiteRisk::SlopeFoot);
                },
                present: &[SafGeo],
                absent: &[SafFlood],
            },
            Case {
                name: "gully mouth",
                edit: |p| {
                    p.site_risks.insert(SiteRisk::GullyMouth);
                },
                present: &[SafGeo, SafFlood],
                absent: &[],
            },
            Case {
                name: "eats wild mushrooms",
                edit: |p| p.eats_wild_mushrooms = true,
                present: &[SafMushroom],
                absent: &[],
            },
            Case {
                name: "stated needs are not derived",
                edit: |p| {
                    p.stated_needs
                        .insert(PltTea, StatedNeed { priority: Some(1) });
                    p.stated_needs.insert(DigEcom, StatedNeed::default());
                },
                present: &[],
                absent: &[PltTea, DigEcom],
            },
            Case {
                name: "education and media preferences imply nothing",
                edit: |p| {
                    p.education = Some(Education::Primary);
                    p.has_tv = true;
                    p.can_watch_video = true;
                },
                present: &[],
                absent: &[DigPhone, DigPay],
            },
        ]
    }

    fn tags_of(p: &HouseholdProfile) -> BTreeSet<Tag> {
        derive_tags(p).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn trigger_table() {
        for case in cases() {
            let mut p = bare();
            (case.edit)(&mut p);
            assert_eq!(
                p.validate(),
                Ok(()),
                "{}: the table household must be valid",
                case.name
            );
            let tags = tags_of(&p);
            for t in DEFAULT_TAGS {
                assert!(tags.contains(&t), "{}: default {t:?} missing", case.name);
            }
            for t in case.present {
                assert!(
                    tags.contains(t),
                    "{}: expected {t:?} in {tags:?}",
                    case.name
                );
            }
            for t in case.absent {
                assert!(
                    !tags.contains(t),
                    "{}: unexpected {t:?} in {tags:?}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn bare_household_gets_exactly_the_defaults_and_sewage() {
        let mut expected: BTreeSet<Tag> = DEFAULT_TAGS.into_iter().collect();
        expected.insert(EcoSewage);
        assert_eq!(tags_of(&bare()), expected);
    }

    #[test]
    fn the_table_covers_every_household_tag() {
        let mut present: BTreeSet<Tag> = DEFAULT_TAGS.into_iter().collect();
        let mut absent: BTreeSet<Tag> = BTreeSet::new();
        for case in cases() {
            present.extend(case.present.iter().copied());
            absent.extend(case.absent.iter().copied());
        }
        // Every household tag is shown to appear by some row...
        for t in Tag::all().filter(|t| t.flag() == TagFlag::Household) {
            assert!(present.contains(&t), "no table row triggers {t:?}");
        }
        // ...and every non-default one is shown not to appear without its trigger (the bare
        // household has none of them, and rows check the near misses).
        let bare = tags_of(&bare());
        for t in Tag::all().filter(|t| t.flag() == TagFlag::Household) {
            if !DEFAULT_TAGS.contains(&t) && t != EcoSewage {
                assert!(!bare.contains(&t), "{t:?} without a trigger");
            }
        }
        assert!(absent.len() > 50, "rows should check near misses");
    }

    #[test]
    fn reasons_are_readable() {
        let mut p = bare();
        people(&mut p, [0, 0, 0, 1, 1, 0], 0);
        herd(&mut p, Livestock::Pig, 1);
        crop(&mut p, Crop::Citrus, 3);
        p.heating_fuel = Some(Fuel::Coal);
        let derived: BTreeMap<Tag, Reason> = derive_tags(&p).into_iter().collect();
        let text = |t: Tag| derived.get(&t).map(|r| r.text.as_str());
        assert_eq!(text(LivPig), Some("家中养猪"));
        assert_eq!(text(LivAsf), Some("家中养猪"));
        assert_eq!(text(HltStroke), Some("有60岁以上成员"));
        assert_eq!(text(SafCo), Some("烧煤取暖"));
        assert_eq!(text(PltCitrus), Some("家中种柑橘"));
        assert_eq!(text(DigMarket), Some("柑橘种植面积较大（3档）"));
        assert_eq!(text(SciWeather), Some("面向所有农户"));
        assert_eq!(
            derived.get(&LivAsf).map(|r| r.code.as_str()),
            Some("livestock.pig")
        );
        assert_eq!(
            derived.get(&HltBp).map(Reason::message),
            Some("有60岁以上成员".into())
        );
        // The first rule's reason is kept: a machinery owner with a big field.
        p.assets.insert(Asset::Machinery);
        let derived: BTreeMap<Tag, Reason> = derive_tags(&p).into_iter().collect();
        assert_eq!(
            derived.get(&PltMachinery).map(|r| r.code.as_str()),
            Some("assets.machinery")
        );
    }

    #[test]
    fn private_tags_need_consent() {
        let mut q = HouseholdPrivate {
            health_interests: [HealthInterest::BloodPressure, HealthInterest::Mental]
                .into_iter()
                .collect(),
            aid_monitoring: true,
            separate_consent: false,
            ..HouseholdPrivate::default()
        };
        assert!(derive_private_tags(&q).is_empty());
        q.separate_consent = true;
        let tags: Vec<Tag> = derive_private_tags(&q)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(tags, vec![HltBp, HltMental, PolAid]);
        let table = [
            (HealthInterest::BloodPressure, HltBp),
            (HealthInterest::BloodSugar, HltDm),
            (HealthInterest::ElderlyCare, HltElderly),
            (HealthInterest::Maternal, HltMaternal),
            (HealthInterest::Child, HltChild),
            (HealthInterest::Mental, HltMental),
            (HealthInterest::Rehab, HltDisability),
            (HealthInterest::Medication, HltMedicine),
        ];
        for (interest, tag) in table {
            q.health_interests = [interest].into_iter().collect();
            q.aid_monitoring = false;
            let derived = derive_private_tags(&q);
            assert_eq!(derived.len(), 1);
            assert_eq!(derived[0].0, tag, "{interest:?}");
            assert!(derived[0].1.text.contains(interest.zh_name()));
        }
        // Every voluntary tag has a source in the private document.
        for t in Tag::all().filter(|t| t.flag() == TagFlag::Voluntary) {
            assert!(
                t == PolAid || table.iter().any(|(_, tag)| *tag == t),
                "{t:?} has no private source"
            );
        }
    }

    proptest! {
        #[test]
        fn derived_tags_are_sorted_unique_and_household_level(p in arb_profile()) {
            let derived = derive_tags(&p);
            let tags: Vec<Tag> = derived.iter().map(|(t, _)| *t).collect();
            let mut sorted = tags.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&tags, &sorted);
            for (t, r) in &derived {
                prop_assert_eq!(t.flag(), TagFlag::Household);
                prop_assert!(!r.code.is_empty() && !r.text.is_empty());
            }
            prop_assert_eq!(derive_tags(&p), derived);
        }
    }
}
