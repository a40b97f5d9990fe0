//! Table tests of the scorer and the byte budget.

use super::*;
use crate::household::{Crop, CropEntry, HerdEntry, Livestock, StatedNeed};
use crate::library::{AgeBand, MAIN_RENDITION};
use serde_json::json;

/// A village in 丹棱县 (a citrus county of 眉山).
const VILLAGE: &str = "511424104201";
/// A village in another county.
const ELSEWHERE: &str = "513401104201";

fn date(s: &str) -> Date {
    Date::parse(s).unwrap()
}

fn meta(v: serde_json::Value) -> ContentMeta {
    let mut base = json!({
        "format": "article", "bytes": 800_000, "review_date": "2026-01-10"
    });
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    ContentMeta::from_json(&base).unwrap()
}

/// The pig-raising, citrus-growing household with two members over 70.
fn pig_citrus_elderly(village: &str) -> HouseholdProfile {
    let mut p = HouseholdProfile::new(AreaCode::parse(village).unwrap(), 2, 3);
    p.age_18_59 = 1;
    p.age_70_plus = 2;
    p.smartphones = 1;
    p.uses_wechat = true;
    p.can_watch_video = true;
    p.crops.insert(Crop::Citrus, CropEntry { area_band: 2 });
    p.crops.insert(Crop::Rice, CropEntry { area_band: 1 });
    p.livestock
        .insert(Livestock::Pig, HerdEntry { herd_band: 1 });
    p.validate().unwrap();
    p
}

/// A library with the three items the acceptance case wants first and plenty of distractors.
fn library(today: &str) -> Library {
    let mut lib = Library::new(date(today));
    let items = [
        (
            "asf",
            json!({"title": "非洲猪瘟防控十要点", "tags": ["liv.asf"], "format": "video",
            "bytes": 34_000_000}),
        ),
        (
            "citrus-mite",
            json!({"title": "柑橘红蜘蛛春季防治", "tags": ["plt.citrus"],
            "regions": ["511424"], "months": [4, 5, 6]}),
        ),
        (
            "elderly-falls",
            json!({"title": "老年人防跌倒", "tags": ["hlt.elderly"],
            "audience": ["age_60_69", "age_70_plus"], "format": "audio", "bytes": 2_400_000}),
        ),
        // Distractors.
        (
            "asf-expired",
            json!({"title": "非洲猪瘟（旧版，含过时药物）", "tags": ["liv.asf", "liv.pig"],
            "review_date": "2023-01-01", "expires": "2026-03-01"}),
        ),
        (
            "citrus-fruitfly-oct",
            json!({"title": "大实蝇落果处理", "tags": ["plt.citrus"],
            "months": [10]}),
        ),
        (
            "citrus-other-county",
            json!({"title": "西昌柑橘木虱防治", "tags": ["plt.citrus"],
            "regions": ["513401"], "months": [4]}),
        ),
        (
            "nutrition",
            json!({"title": "减盐减油", "tags": ["hlt.nutrition"]}),
        ),
        (
            "weather",
            json!({"title": "看懂天气预报", "tags": ["sci.weather"]}),
        ),
        (
            "kiwi",
            json!({"title": "猕猴桃溃疡病", "tags": ["plt.kiwi"], "months": [4]}),
        ),
        (
            "tea",
            json!({"title": "春茶采制", "tags": ["plt.tea"], "months": [4]}),
        ),
        (
            "infant",
            json!({"title": "婴幼儿预防接种", "tags": ["hlt.infant"],
            "audience": ["age_0_5"]}),
        ),
        (
            "rice-old-review",
            json!({"title": "水稻二化螟", "tags": ["plt.rice"],
            "review_date": "2021-01-01", "months": [9]}),
        ),
    ];
    for (id, v) in items {
        lib.upsert(id, meta(v));
    }
    lib
}

fn ids(picks: &[Pick]) -> Vec<&str> {
    picks.iter().map(|p| p.content_id.as_str()).collect()
}

fn recommend(lib: &Library, p: &HouseholdProfile, seen: &[&str], limit: usize) -> Vec<Pick> {
    let seen: Vec<Slot> = seen.iter().filter_map(|id| lib.slot(id)).collect();
    lib.recommend(p, &household_tags(p), &seen, limit, &mut Scratch::default())
}

#[test]
fn pig_elderly_citrus_county_in_april_gets_asf_citrus_pest_and_elderly_health_first() {
    let lib = library("2026-04-15");
    let p = pig_citrus_elderly(VILLAGE);
    let picks = recommend(&lib, &p, &[], 6);
    let first: std::collections::BTreeSet<&str> = ids(&picks)[..3].iter().copied().collect();
    assert_eq!(
        first,
        ["asf", "citrus-mite", "elderly-falls"]
            .into_iter()
            .collect(),
        "{picks:#?}"
    );
    assert!(!ids(&picks).contains(&"asf-expired"));
    assert!(!ids(&picks).contains(&"citrus-other-county"));
    // Reasons are the household's, in Chinese.
    let asf = picks.iter().find(|p| p.content_id == "asf").unwrap();
    assert_eq!(asf.tags, vec![Tag::LivAsf]);
    assert!(asf.reason.contains("养猪"), "{}", asf.reason);
}

#[test]
fn expired_content_is_never_recommended() {
    // Only the expired item answers the household's stated need; it still never comes.
    let mut lib = Library::new(date("2026-04-15"));
    lib.upsert(
        "old",
        meta(
            json!({"title": "旧", "tags": ["liv.asf"], "review_date": "2025-01-01",
            "expires": "2026-04-15"}),
        ),
    );
    let mut p = pig_citrus_elderly(VILLAGE);
    p.stated_needs
        .insert(Tag::LivAsf, StatedNeed { priority: Some(1) });
    assert!(recommend(&lib, &p, &[], 5).is_empty());
    // The day before it expires it is recommended.
    lib.set_today(date("2026-04-14"));
    assert_eq!(ids(&recommend(&lib, &p, &[], 5)), vec!["old"]);
    // And moving the date on removes it again.
    lib.set_today(date("2026-05-01"));
    assert!(recommend(&lib, &p, &[], 5).is_empty());
}

#[test]
fn stated_needs_outrank_derived_tags() {
    let lib = library("2026-04-15");
    let mut p = pig_citrus_elderly(VILLAGE);
    p.stated_needs
        .insert(Tag::PltTea, StatedNeed { priority: Some(1) });
    let picks = recommend(&lib, &p, &[], 3);
    assert_eq!(picks[0].content_id, "tea", "{picks:#?}");
    assert!(picks[0].reason.contains("自述"));
}

#[test]
fn season_region_and_audience_order_items() {
    let lib = library("2026-04-15");
    let p = pig_citrus_elderly(VILLAGE);
    let all = ids(&recommend(&lib, &p, &[], 20)).join(",");
    let pos = |id: &str| all.split(',').position(|x| x == id);
    // Out of season ranks below in season.
    assert!(pos("citrus-mite") < pos("citrus-fruitfly-oct"), "{all}");
    // Another county's item is left out entirely; so are tags the household lacks.
    assert_eq!(pos("citrus-other-county"), None);
    assert_eq!(pos("kiwi"), None);
    // Infant content: the household has no young child, so no tag of it matches.
    assert_eq!(pos("infant"), None);
    // In the other county the county-specific item comes and ours goes.
    let q = pig_citrus_elderly(ELSEWHERE);
    let there_picks = recommend(&lib, &q, &[], 20);
    let there = ids(&there_picks);
    assert!(there.contains(&"citrus-other-county") && !there.contains(&"citrus-mite"));
    // In October the October item is in season and leads the citrus items.
    let oct = library("2026-10-10");
    let all = ids(&recommend(&oct, &p, &[], 20)).join(",");
    let pos = |id: &str| all.split(',').position(|x| x == id);
    assert!(pos("citrus-fruitfly-oct") < pos("citrus-mite"), "{all}");
}

#[test]
fn already_recommended_or_viewed_items_are_left_out_and_limit_holds() {
    let lib = library("2026-04-15");
    let p = pig_citrus_elderly(VILLAGE);
    let picks = recommend(&lib, &p, &["asf", "elderly-falls"], 2);
    assert_eq!(picks.len(), 2);
    assert!(!ids(&picks).contains(&"asf") && !ids(&picks).contains(&"elderly-falls"));
    assert!(recommend(&lib, &p, &[], 0).is_empty());
}

#[test]
fn picks_are_diverse_across_tags() {
    let mut lib = Library::new(date("2026-04-15"));
    for i in 0..5 {
        lib.upsert(
            &format!("asf-{i}"),
            meta(json!({"title": format!("猪瘟{i}"), "tags": ["liv.asf"]})),
        );
    }
    lib.upsert(
        "falls",
        meta(json!({"title": "防跌倒", "tags": ["hlt.elderly"]})),
    );
    lib.upsert(
        "citrus",
        meta(json!({"title": "柑橘", "tags": ["plt.citrus"]})),
    );
    let p = pig_citrus_elderly(VILLAGE);
    let picks = recommend(&lib, &p, &[], 3);
    let asf = picks
        .iter()
        .filter(|p| p.content_id.starts_with("asf"))
        .count();
    assert_eq!(asf, 1, "{picks:#?}");
}

#[test]
fn rendition_follows_media_and_language() {
    let m = meta(
        json!({"title": "防非洲猪瘟", "tags": ["liv.asf"], "format": "video",
        "bytes": 34_000_000, "renditions": [
            {"id": "audio-yi", "format": "audio", "language": "yi", "bytes": 2_000_000},
            {"id": "leaflet", "format": "pdf", "bytes": 900_000}]}),
    );
    let mut p = pig_citrus_elderly(VILLAGE);
    // A household that watches video on its phone gets the video.
    assert_eq!(MediaFit::of(&p).best(&m).unwrap().0.id, MAIN_RENDITION);
    // No smartphone, no TV: video is unusable; the leaflet is the best of what is left.
    p.smartphones = 0;
    p.uses_wechat = false;
    p.can_watch_video = false;
    assert_eq!(MediaFit::of(&p).best(&m).unwrap().0.id, "leaflet");
    // A Yi-speaking household gets the Yi audio.
    p.language = Some(Language::Yi);
    assert_eq!(MediaFit::of(&p).best(&m).unwrap().0.id, "audio-yi");
    // Only video and nothing to play it on: the item is not recommended at all.
    let video_only = meta(
        json!({"title": "视频", "tags": ["liv.asf"], "format": "video",
        "bytes": 1}),
    );
    assert!(MediaFit::of(&p).best(&video_only).is_none());
    let mut lib = Library::new(date("2026-04-15"));
    lib.upsert("v", video_only);
    assert!(recommend(&lib, &p, &[], 3).is_empty());
}

#[test]
fn library_updates_and_removals_change_the_index() {
    let mut lib = library("2026-04-15");
    let p = pig_citrus_elderly(VILLAGE);
    let slot = lib.slot("asf").unwrap();
    assert_eq!(lib.id_at(slot), Some("asf"));
    assert!(lib.remove("asf"));
    assert!(!lib.remove("asf"));
    assert_eq!(lib.id_at(slot), None);
    assert!(!ids(&recommend(&lib, &p, &[], 20)).contains(&"asf"));
    lib.upsert(
        "citrus-mite",
        meta(json!({"title": "改为茶", "tags": ["plt.tea"]})),
    );
    assert!(!ids(&recommend(&lib, &p, &[], 20)).contains(&"citrus-mite"));
    assert_eq!(lib.get("citrus-mite").unwrap().title, "改为茶");
    lib.upsert("asf", meta(json!({"title": "新版", "tags": ["liv.asf"]})));
    assert!(ids(&recommend(&lib, &p, &[], 20)).contains(&"asf"));
    // Slots are never reused.
    assert_ne!(lib.slot("asf"), Some(slot));
}

#[test]
fn household_tags_weigh_stated_over_derived_over_default() {
    let mut p = pig_citrus_elderly(VILLAGE);
    p.stated_needs
        .insert(Tag::LivPig, StatedNeed { priority: Some(2) });
    let tags = household_tags(&p);
    let w = |t: Tag| {
        tags.iter()
            .find(|x| x.tag == t)
            .map(|x| (x.weight, x.source))
    };
    assert_eq!(
        w(Tag::LivPig),
        Some((STATED_WEIGHT[1], TagSource::Stated(Some(2))))
    );
    assert_eq!(w(Tag::LivAsf), Some((DERIVED_WEIGHT, TagSource::Derived)));
    assert_eq!(
        w(Tag::HltNutrition),
        Some((DEFAULT_WEIGHT, TagSource::Default))
    );
    assert_eq!(tags.iter().filter(|x| x.tag == Tag::LivPig).count(), 1);
}

#[test]
fn factors() {
    let months = [4u8, 5].into_iter().collect();
    assert_eq!(season_fit(&months, 4), SEASON_IN);
    assert_eq!(season_fit(&months, 3), SEASON_NEXT);
    assert_eq!(season_fit(&months, 9), SEASON_OFF);
    assert_eq!(season_fit(&[12u8].into_iter().collect(), 11), SEASON_NEXT);
    assert_eq!(season_fit(&Default::default(), 9), SEASON_ALL_YEAR);
    assert_eq!(freshness(date("2025-05-01"), date("2026-04-15")), 1.0);
    assert_eq!(
        freshness(date("2020-01-01"), date("2026-04-15")),
        FRESHNESS_FLOOR
    );
    let mid = freshness(date("2024-04-15"), date("2026-04-15"));
    assert!(mid > FRESHNESS_FLOOR && mid < 1.0);
    let v = AreaCode::parse(VILLAGE).unwrap();
    let s = |x: &str| crate::area::AreaScope::parse(x).unwrap();
    assert_eq!(region_fit(&[], &v), 0.9);
    assert_eq!(region_fit(&[s("51"), s("511424")], &v), 1.1);
    assert_eq!(region_fit(&[s("513401")], &v), 0.0);
    assert!(AgeBand::Age70Plus.members(&pig_citrus_elderly(VILLAGE)) == 2);
}

fn file(id: &str, bytes: u64, households: u32) -> FileDemand {
    FileDemand {
        content_id: id.into(),
        rendition: "main".into(),
        bytes,
        households,
    }
}

#[test]
fn byte_budget_takes_most_households_per_byte_first() {
    let files = [
        file("video", 34_000_000, 40),       // 1.2 per MB
        file("audio", 2_400_000, 30),        // 12.5 per MB
        file("leaflet", 900_000, 5),         // 5.6 per MB
        file("big-popular", 60_000_000, 90), // 1.5 per MB
        file("nobody", 1, 0),
    ];
    // 40 MB: audio, leaflet, then big-popular does not fit, video does.
    let picked: Vec<&str> = select_for_budget(&files, 40_000_000)
        .into_iter()
        .map(|i| files[i].content_id.as_str())
        .collect();
    assert_eq!(picked, vec!["audio", "leaflet", "video"]);
    // Enough room for everything wanted, never for what nobody wants.
    assert_eq!(select_for_budget(&files, u64::MAX).len(), 4);
    assert!(select_for_budget(&files, 0).is_empty());
    // Total never exceeds the budget.
    for budget in [0, 1_000_000, 3_000_000, 37_300_000, 100_000_000] {
        let used: u64 = select_for_budget(&files, budget)
            .iter()
            .map(|&i| files[i].bytes)
            .sum();
        assert!(used <= budget);
    }
}

/// The household's derived (not default) tags, in a fixed order.
fn derived(p: &HouseholdProfile) -> Vec<Tag> {
    let mut out: Vec<Tag> = household_tags(p)
        .into_iter()
        .filter(|t| t.source == TagSource::Derived)
        .map(|t| t.tag)
        .collect();
    out.sort();
    out
}

#[test]
fn priority_stated_needs_get_in_season_items_before_generic_derived_ones() {
    // The case seen in the demo: generic items that carry several of the household's derived
    // tags each add up to more than a stated need's single tag, and used to take every weekly
    // slot while the household's priority-1 and -2 needs went unserved.
    let mut p = pig_citrus_elderly(VILLAGE);
    p.stated_needs
        .insert(Tag::PltMaize, StatedNeed { priority: Some(1) });
    p.stated_needs
        .insert(Tag::PltWheat, StatedNeed { priority: Some(2) });
    let tags = derived(&p);
    assert!(tags.len() >= 6, "the profile derives enough tags: {tags:?}");
    let mut lib = Library::new(date("2026-04-15"));
    // Three generic all-year items, each with two derived tags of its own (score 2 × 1.0 = 2.0
    // before the household factors), distinct main tags so diversity does not hold them back.
    for (i, pair) in tags.chunks(2).take(3).enumerate() {
        let names: Vec<&str> = pair.iter().map(|t| t.id()).collect();
        lib.upsert(
            &format!("generic-{i}"),
            meta(json!({"title": format!("综合{i}"), "tags": names})),
        );
    }
    lib.upsert(
        "generic-big",
        meta(json!({"title": "综合大全", "tags": tags.iter().take(8).map(|t| t.id()).collect::<Vec<_>>()})),
    );
    // Maize: one item out of season (December) and one in season (April).
    lib.upsert(
        "maize-winter",
        meta(json!({"title": "玉米冬季管理", "tags": ["plt.maize"], "months": [12]})),
    );
    lib.upsert(
        "maize-spring",
        meta(json!({"title": "春玉米播种", "tags": ["plt.maize"], "months": [4]})),
    );
    // Wheat: only an out-of-season item, so no slot is reserved for it.
    lib.upsert(
        "wheat-autumn",
        meta(json!({"title": "秋播小麦", "tags": ["plt.wheat"], "months": [10]})),
    );
    let picks = recommend(&lib, &p, &[], 3);
    let got = ids(&picks);
    assert_eq!(
        got[0], "maize-spring",
        "priority 1 first, in season: {got:?}"
    );
    assert!(!got.contains(&"maize-winter"), "{got:?}");
    assert!(!got.contains(&"wheat-autumn"), "{got:?}");
    assert_eq!(got.len(), 3);

    // With an all-year wheat item the priority-2 need gets the second slot, ahead of the
    // generic items that outscore it.
    lib.upsert(
        "wheat-basics",
        meta(json!({"title": "小麦条锈病识别", "tags": ["plt.wheat"]})),
    );
    let picks = recommend(&lib, &p, &[], 3);
    let got = ids(&picks);
    assert_eq!(&got[..2], ["maize-spring", "wheat-basics"], "{got:?}");
    assert!(got[2].starts_with("generic"), "{got:?}");

    // A weekly cap of one serves the priority-1 need only.
    assert_eq!(ids(&recommend(&lib, &p, &[], 1)), ["maize-spring"]);

    // Once the in-season maize item was recommended, the next pick for maize is not forced:
    // the out-of-season item competes on score like any other.
    let picks = recommend(&lib, &p, &["maize-spring"], 3);
    let got = ids(&picks);
    assert_eq!(got[0], "wheat-basics", "{got:?}");
    assert!(!got.contains(&"maize-spring"), "{got:?}");
}
