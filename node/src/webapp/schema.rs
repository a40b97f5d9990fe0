//! The household and need form schema the web app renders: every field of the profile, the
//! private part and a local need, with its Chinese label, kind, limits and options. The app
//! builds its forms and cheap client-side checks from this, so labels and limits have one
//! source next to the protocol types (the server still validates everything).

use cunyun_protocol::fields::Coded;
use cunyun_protocol::household::{
    Asset, Channel, Crop, Education, Fuel, HealthInterest, Housing, Income, Language, Livestock,
    Signal, SiteRisk, Toilet, Water, AREA_BANDS, HERD_BANDS, MAX_PRIORITY, MAX_RESIDENTS,
    MAX_SMARTPHONES, MAX_STATED_NEEDS,
};
use cunyun_protocol::need::{NeedStatus, Requester};
use serde_json::{json, Value};

fn options<C: Coded + Copy>() -> Value {
    C::options()
        .iter()
        .map(|o| json!({ "id": o.code_id(), "name": o.code_zh() }))
        .collect()
}

fn int(key: &str, label: &str, min: u8, max: u8, required: bool) -> Value {
    json!({ "key": key, "label": label, "type": "int", "min": min, "max": max, "required": required })
}

fn flag(key: &str, label: &str) -> Value {
    json!({ "key": key, "label": label, "type": "bool" })
}

fn select<C: Coded + Copy>(key: &str, label: &str) -> Value {
    json!({ "key": key, "label": label, "type": "select", "options": options::<C>() })
}

fn multi<C: Coded + Copy>(key: &str, label: &str) -> Value {
    json!({ "key": key, "label": label, "type": "multi", "options": options::<C>() })
}

fn text(key: &str, label: &str, max: usize, multiline: bool) -> Value {
    json!({ "key": key, "label": label, "type": if multiline { "textarea" } else { "text" }, "max": max })
}

fn date(key: &str, label: &str) -> Value {
    json!({ "key": key, "label": label, "type": "date" })
}

fn bands<C: Coded + Copy>(key: &str, label: &str, detail: &str, bands: &[&str]) -> Value {
    json!({ "key": key, "label": label, "type": "bands", "detail": detail,
            "bands": bands, "options": options::<C>() })
}

fn section(title: &str, part: &str, fields: Vec<Value>) -> Value {
    json!({ "title": title, "part": part, "fields": fields })
}

/// The whole schema, as served at `/api/v1/schema`.
pub fn schema() -> Value {
    let r = MAX_RESIDENTS;
    let household = vec![
        section(
            "家庭人口",
            "profile",
            vec![
                int("group", "村民小组", 1, 99, true),
                int("residents", "家庭人口（含外出）", 0, r, true),
                int("age_0_5", "0–5岁人数", 0, r, false),
                int("age_6_14", "6–14岁人数", 0, r, false),
                int("age_15_17", "15–17岁人数", 0, r, false),
                int("age_18_59", "18–59岁人数", 0, r, false),
                int("age_60_69", "60–69岁人数", 0, r, false),
                int("age_70_plus", "70岁以上人数", 0, r, false),
                int("working_away", "外出务工人数", 0, r, false),
                flag("left_behind_elderly", "留守老人"),
                flag("left_behind_children", "留守儿童"),
                flag("elderly_alone", "独居老人"),
            ],
        ),
        section(
            "文化与媒体",
            "profile",
            vec![
                select::<Education>("education", "主要劳动力文化程度"),
                int("smartphones", "智能手机数量", 0, MAX_SMARTPHONES, false),
                flag("phone_skill_low", "手机使用能力弱"),
                flag("can_watch_video", "会看视频"),
                flag("uses_wechat", "使用微信"),
                flag("has_tv", "有电视"),
                select::<Signal>("signal", "手机信号"),
                select::<Channel>("channel", "偏好渠道"),
                select::<Language>("language", "偏好语言"),
            ],
        ),
        section(
            "生产经营",
            "profile",
            vec![
                bands::<Crop>("crops", "种植作物", "area_band", &AREA_BANDS),
                bands::<Livestock>("livestock", "养殖", "herd_band", &HERD_BANDS),
                multi::<Asset>("assets", "设施与经营"),
                select::<Income>("main_income", "主要收入来源"),
            ],
        ),
        section(
            "居住与环境",
            "profile",
            vec![
                select::<Housing>("housing", "房屋结构"),
                select::<Fuel>("cooking_fuel", "做饭燃料"),
                select::<Fuel>("heating_fuel", "取暖燃料"),
                select::<Water>("water", "饮用水来源"),
                select::<Toilet>("toilet", "厕所类型"),
                flag("sewer", "生活污水接入管网"),
                multi::<SiteRisk>("site_risks", "房屋选址风险"),
                flag("eats_wild_mushrooms", "采食野生菌"),
            ],
        ),
        section(
            "农户自述需求",
            "profile",
            vec![
                json!({ "key": "stated_needs", "label": "自述需求（最多10项）", "type": "needs",
                         "max": MAX_STATED_NEEDS, "max_priority": MAX_PRIORITY }),
            ],
        ),
        section(
            "调查信息",
            "profile",
            vec![
                text("surveyor", "调查员编号", 32, false),
                date("survey_date", "调查日期"),
                text("consent_version", "知情同意版本", 16, false),
                date("next_review", "下次复核日期"),
            ],
        ),
        section(
            "户主信息（仅存本县，不上传省级）",
            "private",
            vec![
                text("head_name", "户主姓名", 20, false),
                json!({ "key": "phone", "label": "联系电话", "type": "phone", "max": 20 }),
                text("roster_no", "花名册编号", 20, false),
                text("stated_need_text", "需求原话", 500, true),
                text("notes", "备注", 2000, true),
                flag(
                    "separate_consent",
                    "敏感信息单独同意（记录健康关注或监测对象前必须取得）",
                ),
                multi::<HealthInterest>("health_interests", "健康关注"),
                flag("aid_monitoring", "防返贫监测对象"),
            ],
        ),
    ];
    let need = vec![
        select::<Requester>("requester", "提出方"),
        text(
            "title",
            "需求标题",
            cunyun_protocol::need::MAX_TITLE_CHARS,
            false,
        ),
        text(
            "description",
            "详细说明",
            cunyun_protocol::need::MAX_DESCRIPTION_CHARS,
            true,
        ),
        json!({ "key": "tags", "label": "需求标签", "type": "tags" }),
        select::<NeedStatus>("status", "状态"),
        int("satisfaction", "满意度（1–5，仅已解决时）", 1, 5, false),
        text("contact_role", "联系人职务", 30, false),
        date("created", "提出日期"),
        date("updated", "更新日期"),
    ];
    let transitions: Value = NeedStatus::ALL
        .iter()
        .map(|s| {
            (
                s.id().to_string(),
                s.next().iter().map(|n| json!(n.id())).collect::<Value>(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    json!({ "household": household, "need": need, "need_transitions": transitions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cunyun_protocol::area::AreaCode;
    use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
    use cunyun_protocol::need::LocalNeed;
    use std::collections::BTreeSet;

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .expect("object")
            .keys()
            .filter(|k| *k != "schema")
            .cloned()
            .collect()
    }

    #[test]
    fn the_form_covers_every_field_of_profile_private_and_need() {
        let s = schema();
        let mut profile = BTreeSet::new();
        let mut private = BTreeSet::new();
        for sec in s["household"].as_array().expect("sections") {
            for f in sec["fields"].as_array().expect("fields") {
                let k = f["key"].as_str().expect("key").to_string();
                if sec["part"] == "profile" {
                    profile.insert(k);
                } else {
                    private.insert(k);
                }
            }
        }
        let village = AreaCode::parse("510116108203").expect("village");
        let mut expected =
            keys(&serde_json::to_value(HouseholdProfile::new(village, 1, 1)).expect("json"));
        // The village is the node's and never edited in the form.
        expected.remove("village");
        assert_eq!(profile, expected);
        assert_eq!(
            private,
            keys(&serde_json::to_value(HouseholdPrivate::default()).expect("json"))
        );
        let need: BTreeSet<String> = s["need"]
            .as_array()
            .expect("need")
            .iter()
            .map(|f| f["key"].as_str().expect("key").to_string())
            .collect();
        let mut expected = keys(
            &serde_json::to_value(LocalNeed::new(village, Requester::Coop, "标题")).expect("json"),
        );
        expected.remove("area");
        // Answered with the buttons of the need page's expert card, not a form field.
        expected.remove("expert_choice");
        assert_eq!(need, expected);
    }
}
