//! Coverage per area: households recorded, households with recommendations, items recommended
//! and demand by tag, at every level from the province to the village, as rows, CSV and
//! Prometheus lines.
//!
//! Figures come from the matcher's per-household state ([`Matcher::coverage`]): a household is
//! *recorded* when its `hh` document reached the hub, *with recommendations* when at least one item
//! was recommended to it, and *demand* for a tag counts the households that have the tag (stated or
//! derived; the default tags every household gets are left out). From the households' `fb`
//! documents ([`cunyun_protocol::feedback`], written by village nodes, fed in with
//! [`Coverage::add_feedback`]): a household is *reached* when the file of at least one of its
//! items was delivered on its village node, *viewed* when one was opened, *helped* when one was
//! rated 「有帮助」.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cunyun_protocol::area::{AreaCode, Level};
use cunyun_protocol::gazetteer::sichuan;
use cunyun_protocol::taxonomy::{Tag, TAG_COUNT};
use cunyun_protocol::triggers::DEFAULT_TAGS;
use serde::Serialize;

use crate::matcher::Matcher;

/// What is known about one village.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VillageCounts {
    /// Households recorded.
    pub households: u64,
    /// Households with at least one recommendation.
    pub with_rec: u64,
    /// Items recommended, in total.
    pub items: u64,
    /// Households per tag (by tag index).
    pub demand: Vec<u64>,
    /// Households reached: at least one item delivered.
    pub reached: u64,
    /// Households that opened at least one item.
    pub viewed: u64,
    /// Households that rated at least one item helpful.
    pub helped: u64,
}

impl Default for VillageCounts {
    fn default() -> Self {
        VillageCounts {
            households: 0,
            with_rec: 0,
            items: 0,
            demand: vec![0; TAG_COUNT],
            reached: 0,
            viewed: 0,
            helped: 0,
        }
    }
}

/// Coverage of every village the hub knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// By village code.
    pub villages: BTreeMap<AreaCode, VillageCounts>,
}

/// One area's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageRow {
    /// The area's prefix (2, 4, 6, 9 or 12 digits).
    pub area: String,
    /// Households recorded.
    pub households: u64,
    /// Households with at least one recommendation.
    pub with_rec: u64,
    /// `with_rec / households`, 0 when there are none.
    pub share_with_rec: f64,
    /// Items recommended, in total.
    pub items: u64,
    /// The most wanted tags, most households first: (tag id, households).
    pub top_demand: Vec<(String, u64)>,
    /// Households reached (an item delivered).
    pub reached: u64,
    /// Households that opened an item.
    pub viewed: u64,
    /// Households that rated an item helpful.
    pub helped: u64,
}

/// What one household's `fb` document says, for coverage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackSummary {
    /// An item was delivered.
    pub reached: bool,
    /// An item was opened.
    pub viewed: bool,
    /// An item was rated helpful.
    pub helped: bool,
}

impl FeedbackSummary {
    /// The summary of a feedback document.
    pub fn of(fb: &cunyun_protocol::feedback::Feedback) -> FeedbackSummary {
        FeedbackSummary {
            reached: fb.reached(),
            viewed: fb.viewed(),
            helped: fb.helped(),
        }
    }
}

impl Matcher {
    /// Coverage figures from the matcher's state.
    pub fn coverage(&self) -> Coverage {
        let mut c = Coverage::default();
        for (key, tags, recommended) in self.household_summaries() {
            let v = c.villages.entry(*key.area()).or_default();
            v.households += 1;
            if recommended > 0 {
                v.with_rec += 1;
            }
            v.items += recommended as u64;
            // The default tags every household gets say nothing about what an area needs.
            for t in tags.into_iter().filter(|t| !DEFAULT_TAGS.contains(t)) {
                v.demand[t as usize] += 1;
            }
        }
        c
    }
}

/// How many of the most wanted tags a row lists.
pub const TOP_DEMAND: usize = 5;

impl Coverage {
    /// Adds the feedback of one household of `village`.
    pub fn add_feedback(&mut self, village: AreaCode, fb: FeedbackSummary) {
        let v = self.villages.entry(village).or_default();
        v.reached += u64::from(fb.reached);
        v.viewed += u64::from(fb.viewed);
        v.helped += u64::from(fb.helped);
    }

    /// Rows for every area of `level`, by area code.
    pub fn rows(&self, level: Level) -> Vec<CoverageRow> {
        let len = level.prefix_len();
        let mut acc: BTreeMap<String, VillageCounts> = BTreeMap::new();
        for (village, counts) in &self.villages {
            let prefix = village.as_str()[..len].to_string();
            let a = acc.entry(prefix).or_default();
            a.households += counts.households;
            a.with_rec += counts.with_rec;
            a.items += counts.items;
            a.reached += counts.reached;
            a.viewed += counts.viewed;
            a.helped += counts.helped;
            for (x, y) in a.demand.iter_mut().zip(&counts.demand) {
                *x += y;
            }
        }
        acc.into_iter()
            .map(|(area, c)| {
                let mut demand: Vec<(Tag, u64)> = Tag::ALL
                    .iter()
                    .map(|&t| (t, c.demand[t as usize]))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                demand.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                CoverageRow {
                    area,
                    households: c.households,
                    with_rec: c.with_rec,
                    share_with_rec: if c.households == 0 {
                        0.0
                    } else {
                        c.with_rec as f64 / c.households as f64
                    },
                    items: c.items,
                    top_demand: demand
                        .into_iter()
                        .take(TOP_DEMAND)
                        .map(|(t, n)| (t.id().to_string(), n))
                        .collect(),
                    reached: c.reached,
                    viewed: c.viewed,
                    helped: c.helped,
                }
            })
            .collect()
    }

    /// The rows of `level` as CSV with a zh-CN header.
    pub fn csv(&self, level: Level) -> String {
        let mut out = String::from(
            "地区代码,地区名称,层级,登记农户,已推荐农户,推荐覆盖率,推荐条目数,需求最多的标签,已送达农户,已查看农户,反馈有帮助农户\n",
        );
        for r in self.rows(level) {
            let top: Vec<String> = r
                .top_demand
                .iter()
                .map(|(t, n)| {
                    let name = Tag::parse(t).map_or(t.as_str(), |t| t.zh_name());
                    format!("{name}({n})")
                })
                .collect();
            let _ = writeln!(
                out,
                "{},\"{}\",{},{},{},{:.3},{},\"{}\",{},{},{}",
                r.area,
                sichuan().code_label(&r.area).replace('"', "\"\""),
                level.zh_name(),
                r.households,
                r.with_rec,
                r.share_with_rec,
                r.items,
                top.join("；").replace('"', "\"\""),
                r.reached,
                r.viewed,
                r.helped
            );
        }
        out
    }

    /// Prometheus text lines (no `# EOF`) for the province, prefecture and county levels.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP cunyun_hub_households Households recorded at the hub, by area.\n");
        out.push_str("# TYPE cunyun_hub_households gauge\n");
        let levels = [Level::Province, Level::Prefecture, Level::County];
        let rows: Vec<(Level, Vec<CoverageRow>)> =
            levels.iter().map(|&l| (l, self.rows(l))).collect();
        for (l, rs) in &rows {
            for r in rs {
                let _ = writeln!(
                    out,
                    "cunyun_hub_households{{area=\"{}\",level=\"{}\"}} {}",
                    r.area,
                    level_id(*l),
                    r.households
                );
            }
        }
        out.push_str(
            "# HELP cunyun_hub_households_with_rec Households with at least one recommendation, by area.\n",
        );
        out.push_str("# TYPE cunyun_hub_households_with_rec gauge\n");
        for (l, rs) in &rows {
            for r in rs {
                let _ = writeln!(
                    out,
                    "cunyun_hub_households_with_rec{{area=\"{}\",level=\"{}\"}} {}",
                    r.area,
                    level_id(*l),
                    r.with_rec
                );
            }
        }
        for (name, help, get) in [
            (
                "cunyun_hub_households_reached",
                "Households with at least one recommended file delivered on their village node, by area.",
                (|r: &CoverageRow| r.reached) as fn(&CoverageRow) -> u64,
            ),
            (
                "cunyun_hub_households_viewed",
                "Households that opened at least one recommended item, by area.",
                |r: &CoverageRow| r.viewed,
            ),
            (
                "cunyun_hub_households_helped",
                "Households that rated at least one recommended item helpful, by area.",
                |r: &CoverageRow| r.helped,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (l, rs) in &rows {
                for r in rs {
                    let _ = writeln!(
                        out,
                        "{name}{{area=\"{}\",level=\"{}\"}} {}",
                        r.area,
                        level_id(*l),
                        get(r)
                    );
                }
            }
        }
        out.push_str("# HELP cunyun_hub_demand Households having a need tag, by prefecture.\n");
        out.push_str("# TYPE cunyun_hub_demand gauge\n");
        for r in self.rows(Level::Prefecture) {
            for (tag, n) in &r.top_demand {
                let _ = writeln!(
                    out,
                    "cunyun_hub_demand{{area=\"{}\",tag=\"{tag}\"}} {n}",
                    r.area
                );
            }
        }
        out
    }
}

/// The level's id in URLs and metrics labels.
pub fn level_id(l: Level) -> &'static str {
    match l {
        Level::Province => "province",
        Level::Prefecture => "prefecture",
        Level::County => "county",
        Level::Township => "township",
        Level::Village => "village",
    }
}

/// Parses a level id (`province` … `village`).
pub fn parse_level(s: &str) -> Option<Level> {
    Level::ALL.into_iter().find(|&l| level_id(l) == s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cunyun_protocol::fields::Date;
    use cunyun_protocol::household::{HerdEntry, HouseholdProfile, Livestock};
    use cunyun_protocol::key::{DocKey, Kind};
    use cunyun_protocol::library::ContentMeta;

    #[test]
    fn counts_roll_up_from_villages_to_the_province() {
        let mut m = Matcher::new(Date::parse("2026-04-15").unwrap(), 3);
        m.upsert_content(
            "asf",
            ContentMeta::from_json(&serde_json::json!({"title": "猪瘟", "tags": ["liv.asf"],
                "format": "audio", "bytes": 10, "review_date": "2026-01-01"}))
            .unwrap(),
        );
        let mut batch = Vec::new();
        for (v, pigs) in [
            ("511424104201", true),
            ("511424104201", false),
            ("511424104202", true),
            ("513401104201", false),
        ] {
            let village = AreaCode::parse(v).unwrap();
            let mut p = HouseholdProfile::new(village, 1, 2);
            p.age_18_59 = 2;
            if pigs {
                p.livestock
                    .insert(Livestock::Pig, HerdEntry { herd_band: 1 });
            }
            let key = DocKey::new(village, Kind::Hh, format!("h{}", batch.len())).unwrap();
            m.upsert_household(&key, &p);
            batch.push((key, p));
        }
        m.match_households(&batch);
        let c = m.coverage();
        let county = c.rows(Level::County);
        assert_eq!(county.len(), 2);
        let dl = &county[0];
        assert_eq!(
            (dl.area.as_str(), dl.households, dl.with_rec),
            ("511424", 3, 2)
        );
        assert!(dl.top_demand.contains(&("liv.asf".to_string(), 2)));
        let province = c.rows(Level::Province);
        assert_eq!((province[0].households, province[0].with_rec), (4, 2));
        assert_eq!(c.rows(Level::Village).len(), 3);
        let csv = c.csv(Level::County);
        assert!(csv.starts_with("地区代码,地区名称,层级,登记农户"));
        assert!(
            csv.contains("511424,\"眉山市 › 丹棱县\",县,3,2,0.667,2,"),
            "{csv}"
        );
        let prom = c.prometheus();
        assert!(prom.contains("cunyun_hub_households{area=\"51\",level=\"province\"} 4"));
        assert!(
            prom.contains("cunyun_hub_households_with_rec{area=\"5114\",level=\"prefecture\"} 2")
        );
        assert!(!prom.contains("cunyun_hub_households_helped{area=\"51\",level=\"province\"} 1"));

        // Feedback: one household reached, viewed and helped; another only reached.
        let mut c = c;
        let v = AreaCode::parse("511424104201").unwrap();
        let mut fb = cunyun_protocol::feedback::Feedback::new(v);
        let day = Date::parse("2026-04-16").unwrap();
        fb.record_delivered("asf", day);
        c.add_feedback(v, FeedbackSummary::of(&fb));
        fb.record_view("asf", day);
        fb.record_helpful("asf", day);
        c.add_feedback(v, FeedbackSummary::of(&fb));
        let county = c.rows(Level::County);
        assert_eq!(
            (county[0].reached, county[0].viewed, county[0].helped),
            (2, 1, 1)
        );
        assert_eq!((county[1].reached, county[1].viewed), (0, 0));
        let csv = c.csv(Level::County);
        assert!(csv
            .lines()
            .next()
            .unwrap()
            .ends_with("已送达农户,已查看农户,反馈有帮助农户"));
        assert!(
            csv.contains("511424,\"眉山市 › 丹棱县\",县,3,2,0.667,2,")
                && csv.contains("\",2,1,1\n"),
            "{csv}"
        );
        let prom = c.prometheus();
        assert!(prom.contains("cunyun_hub_households_reached{area=\"51\",level=\"province\"} 2"));
        assert!(prom.contains("cunyun_hub_households_helped{area=\"511424\",level=\"county\"} 1"));
        assert_eq!(parse_level("county"), Some(Level::County));
        assert_eq!(parse_level("x"), None);
    }
}
