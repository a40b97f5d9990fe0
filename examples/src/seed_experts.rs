//! The demo's expert registry (科技所能): generated experts with realistic Sichuan organisations,
//! fields and public contact channels, so that the demo villages' local needs are really matched
//! and the cadre sees who will help and how to reach them.
//!
//! The names are generated; organisations are the kind that serve these needs in Sichuan (the
//! provincial academy's institutes, the agricultural university, the county's extension centre);
//! contacts are public service channels only (the 12316 三农 hotline, the 96110 anti-fraud line,
//! a studio's address and hours), never a personal phone. Every local-need template of
//! `cunyun_node::sample` has at least one expert here whose fields share a tag with it
//! (a test checks it). [`experts`] is deterministic; the demo saves each through the hub's
//! registry (`cunyun_hub::experts::save`), so whatever store the hub uses is used.

use serde_json::{json, Value};

/// One generated expert, as an operator would enter it in the console.
struct Seed {
    name: &'static str,
    organisation: &'static str,
    title: &'static str,
    fields: &'static [&'static str],
    regions: &'static [&'static str],
    services: &'static [&'static str],
    contact: &'static str,
}

const SEEDS: &[Seed] = &[
    Seed {
        name: "彭志勇",
        organisation: "丹棱县动物疫病预防控制中心",
        title: "兽医师",
        fields: &["liv.asf", "liv.pig"],
        regions: &["511424"],
        services: &["onsite", "testing", "training"],
        contact: "丹棱县动物疫病预防控制中心值班室，工作日 8:30–17:30",
    },
    Seed {
        name: "谢明远",
        organisation: "四川省农业科学院茶叶研究所",
        title: "研究员",
        fields: &["plt.tea", "plt.pesticide", "dig.market"],
        regions: &[],
        services: &["onsite", "remote", "training"],
        contact: "12316 三农服务热线（转茶叶所）",
    },
    Seed {
        name: "唐晓梅",
        organisation: "眉山市柑橘产业技术研究院",
        title: "高级农艺师",
        fields: &["plt.citrus", "plt.pesticide", "dig.ecom"],
        regions: &["5114"],
        services: &["onsite", "testing", "training"],
        contact: "丹棱县科技服务中心柑橘专家工作站，每周三坐班",
    },
    Seed {
        name: "周永明",
        organisation: "四川省农业科学院作物研究所",
        title: "研究员",
        fields: &["plt.rice", "plt.soystrip", "plt.pesticide"],
        regions: &[],
        services: &["onsite", "remote", "training"],
        contact: "12316 三农服务热线（转省农科院专家）",
    },
    Seed {
        name: "刘晓燕",
        organisation: "四川农业大学农学院",
        title: "教授",
        fields: &["plt.soystrip", "plt.machinery", "plt.rice"],
        regions: &["51"],
        services: &["training", "remote"],
        contact: "四川农业大学科技服务中心（雅安）",
    },
    Seed {
        name: "陈国华",
        organisation: "丹棱县农业技术推广中心",
        title: "高级农艺师",
        fields: &["plt.rice", "plt.pesticide", "plt.greenhouse", "plt.fungi"],
        regions: &["511424"],
        services: &["onsite", "training", "testing"],
        contact: "丹棱县科技服务中心科创工作室，工作日 9:00–17:00",
    },
    Seed {
        name: "王丽君",
        organisation: "四川省农业科学院园艺研究所",
        title: "副研究员",
        fields: &[
            "plt.citrus",
            "plt.greenhouse",
            "plt.kiwi",
            "plt.pepper",
            "plt.fungi",
        ],
        regions: &[],
        services: &["onsite", "remote"],
        contact: "12316 三农服务热线（转园艺所）",
    },
    Seed {
        name: "李春林",
        organisation: "四川省农业科学院水产研究所",
        title: "研究员",
        fields: &["liv.fish", "plt.rice"],
        regions: &[],
        services: &["onsite", "remote", "training"],
        contact: "12316 三农服务热线（转水产所）",
    },
    Seed {
        name: "张德福",
        organisation: "四川省畜牧科学研究院",
        title: "研究员",
        fields: &["liv.pig", "liv.asf", "liv.feed", "eco.straw"],
        regions: &[],
        services: &["onsite", "training"],
        contact: "四川省畜牧科学研究院科技服务部（成都）",
    },
    Seed {
        name: "杨秀英",
        organisation: "四川省中医药科学院",
        title: "副研究员",
        fields: &["plt.herb", "dig.market"],
        regions: &[],
        services: &["remote", "training", "testing"],
        contact: "四川省中医药科学院中药材种植技术服务站",
    },
    Seed {
        name: "赵建军",
        organisation: "四川省农业机械科学研究院",
        title: "高级工程师",
        fields: &["plt.machinery", "plt.soystrip", "eco.straw"],
        regions: &[],
        services: &["onsite", "training"],
        contact: "12316 三农服务热线（转农机院）",
    },
    Seed {
        name: "黄志强",
        organisation: "眉山市农业农村局",
        title: "农艺师",
        fields: &["eco.toilet", "eco.sewage", "eco.straw"],
        regions: &["5114"],
        services: &["onsite", "training"],
        contact: "眉山市农村人居环境整治服务窗口，工作日 9:00–17:00",
    },
    Seed {
        name: "吴海燕",
        organisation: "眉山市电子商务公共服务中心",
        title: "讲师",
        fields: &["dig.ecom", "dig.market", "dig.phone"],
        regions: &["5114"],
        services: &["training", "remote"],
        contact: "眉山市电商公共服务中心（东坡区），微信公众号“眉山电商服务”",
    },
    Seed {
        name: "孙立新",
        organisation: "四川省地质调查研究院",
        title: "高级工程师",
        fields: &["saf.geo", "saf.flood"],
        regions: &[],
        services: &["onsite", "training"],
        contact: "各县自然资源局地质灾害防治值班室",
    },
    Seed {
        name: "罗文斌",
        organisation: "丹棱县公安局反诈中心",
        title: "民警",
        fields: &["saf.fraud", "saf.fraud_old", "dig.phone"],
        regions: &["511424"],
        services: &["training"],
        contact: "96110 反诈专线；丹棱县公安局反诈中心",
    },
    Seed {
        name: "何玉兰",
        organisation: "四川农业大学园艺学院",
        title: "教授",
        fields: &["plt.kiwi", "plt.pepper", "plt.pesticide"],
        regions: &["51"],
        services: &["onsite", "remote", "testing"],
        contact: "四川农业大学科技服务中心（成都温江）",
    },
    Seed {
        name: "邓光辉",
        organisation: "丹棱县农业农村局",
        title: "农艺师",
        fields: &["dig.ecom", "eco.toilet", "liv.fish", "plt.herb"],
        regions: &["511424"],
        services: &["onsite", "remote"],
        contact: "丹棱县农业农村局农技服务窗口，工作日 9:00–17:00",
    },
];

/// The demo's experts, as console/API bodies (`name`, `organisation`, `title`, `fields`,
/// `regions`, `services`, `contact`), in a fixed order.
pub fn experts() -> Vec<Value> {
    SEEDS
        .iter()
        .map(|s| {
            let set = |items: &[&str]| -> Value {
                items
                    .iter()
                    .map(|t| (t.to_string(), json!(true)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            json!({
                "name": s.name, "organisation": s.organisation, "title": s.title,
                "fields": set(s.fields), "regions": set(s.regions),
                "services": set(s.services), "contact": s.contact,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cunyun_protocol::area::AreaCode;
    use cunyun_protocol::expert::{suggest_experts, Expert};

    #[test]
    fn every_seed_expert_is_valid_and_every_sample_need_finds_one() {
        let parsed: Vec<(String, Expert)> = experts()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let e = Expert::from_json(v).unwrap_or_else(|e| panic!("expert {i}: {e}"));
                (format!("e{i}"), e)
            })
            .collect();
        assert!(parsed.len() >= 10);
        for village in ["511424109208", "511424109201", "511424204201"] {
            let needs = cunyun_node::sample::sample_needs(AreaCode::parse(village).unwrap(), 40, 7);
            assert!(!needs.is_empty());
            for need in needs {
                let s = suggest_experts(&need, parsed.iter().map(|(id, e)| (id.as_str(), e)));
                assert!(!s.is_empty(), "no expert for “{}” in {village}", need.title);
            }
        }
    }
}
