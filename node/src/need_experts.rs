//! What a village sees of the hub's expert suggestions for one of its local needs.
//!
//! The hub writes `<need area>/match/<need id>` (a [`NeedMatch`]: expert ids with score, shared
//! tags and a reason); the experts themselves are `<province>/expert/<id>` documents that flow
//! down to every node. This module joins the two for the need page: who (name, organisation,
//! title), what they offer (services), how to reach them (the contact channel they published)
//! and what the village answered ([`ExpertChoice`], written by the cadre into the need itself
//! through the usual need update, so it works offline and syncs up like any edit).
//!
//! A suggestion whose expert document has not arrived yet (or was withdrawn) is left out:
//! the page never shows an id in place of a person.

use cunyun_platform::store::{DocStore, StoreError};
use cunyun_protocol::area::{AreaCode, Level};
use cunyun_protocol::expert::{Expert, NeedMatch};
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::need::{ExpertChoice, LocalNeed};
use serde::Serialize;

/// One suggested expert, ready for the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuggestedExpert {
    /// The expert's id (what the cadre's answer is keyed by).
    pub id: String,
    /// Name.
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Professional title ("" if none).
    pub title: String,
    /// Services offered, in Chinese (现场指导, 远程咨询, …).
    pub services: Vec<&'static str>,
    /// The contact channel the expert published ("" if none).
    pub contact: String,
    /// Why the hub suggested them (zh-CN).
    pub reason: String,
    /// Shared tags, in plain words.
    pub tags: Vec<&'static str>,
    /// The village's answer so far: `"accepted"`, `"declined"` or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<&'static str>,
}

/// The hub's suggestions for the need under `key`, best first, joined with the expert
/// documents this node holds; an expert the village accepted comes first whatever its score.
pub fn suggestions(
    store: &DocStore,
    key: &DocKey,
    need: &LocalNeed,
) -> Result<Vec<SuggestedExpert>, StoreError> {
    let match_key = key.with_kind(Kind::Match);
    let Some(doc) = store.load(&match_key)? else {
        return Ok(Vec::new());
    };
    let found = match NeedMatch::read_from(&doc) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(key = %match_key, error = %e, "match document unreadable; no suggestions shown");
            return Ok(Vec::new());
        }
    };
    let Some(province) = province_of(key.area()) else {
        return Ok(Vec::new());
    };
    let mut ranked: Vec<_> = found.suggestions.into_iter().collect();
    ranked.sort_by(|a, b| b.1.score.cmp(&a.1.score).then(a.0.cmp(&b.0)));
    let mut out = Vec::new();
    for (id, s) in ranked {
        let Ok(expert_key) = DocKey::new(province, Kind::Expert, id.as_str()) else {
            continue;
        };
        let Some(doc) = store.load(&expert_key)? else {
            continue;
        };
        let expert = match Expert::read_from(&doc) {
            Ok(e) if !e.withdrawn => e,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(key = %expert_key, error = %e, "expert document unreadable; not shown");
                continue;
            }
        };
        let choice = need.expert_choice.get(&id).map(|c| match c {
            ExpertChoice::Accepted => "accepted",
            ExpertChoice::Declined => "declined",
        });
        out.push(SuggestedExpert {
            services: expert.services.iter().map(|s| s.zh_name()).collect(),
            tags: s.tags.iter().map(|t| t.plain_words()).collect(),
            id,
            name: expert.name,
            organisation: expert.organisation,
            title: expert.title,
            contact: expert.contact,
            reason: s.reason,
            choice,
        });
    }
    // The accepted expert first; declined ones (the hub drops them at its next round) last.
    out.sort_by_key(|e| match e.choice {
        Some("accepted") => 0,
        Some(_) => 2,
        None => 1,
    });
    Ok(out)
}

/// The province code of `area` (`51` → `510000000000`), where experts are keyed.
fn province_of(area: &AreaCode) -> Option<AreaCode> {
    if area.level() == Level::Province {
        return Some(*area);
    }
    area.ancestor(Level::Province)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use cunyun_platform::store::{DocWrite, StoreConfig};
    use cunyun_protocol::fields::Date;
    use serde_json::json;

    fn put(store: &DocStore, key: &DocKey, write: impl FnOnce(&mut AutoCommit)) {
        let mut doc = AutoCommit::new();
        write(&mut doc);
        doc.commit();
        store
            .commit(vec![DocWrite {
                key: key.clone(),
                chunk: doc.save(),
                heads: doc.get_heads(),
                updated_at_ms: 1,
            }])
            .unwrap();
    }

    #[test]
    fn suggestions_name_the_expert_and_follow_the_villages_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(&dir.path().join("s"), StoreConfig::default()).unwrap();
        let village = AreaCode::parse("511424109208").unwrap();
        let province = AreaCode::parse("510000000000").unwrap();
        let need_key = DocKey::new(village, Kind::Need, "n1").unwrap();
        let mut need = LocalNeed::from_json(&json!({"area": village.as_str(), "requester": "coop",
            "title": "柑橘大实蝇防控", "tags": {"plt.citrus": true}}))
        .unwrap();
        assert!(
            suggestions(&store, &need_key, &need).unwrap().is_empty(),
            "no match yet"
        );

        for (id, name, contact) in [
            ("e1", "李明", "四川省农科院科技服务热线 028-84504000"),
            ("e2", "王芳", ""),
        ] {
            let e = Expert::from_json(&json!({"name": name, "organisation": "四川省农业科学院",
                "title": "研究员", "fields": {"plt.citrus": true},
                "services": {"onsite": true, "remote": true}, "contact": contact}))
            .unwrap();
            put(
                &store,
                &DocKey::new(province, Kind::Expert, id).unwrap(),
                |d| e.write_to(d).unwrap(),
            );
        }
        let suggested = |score: u32| cunyun_protocol::expert::Suggestion {
            score,
            tags: [cunyun_protocol::taxonomy::Tag::PltCitrus].into(),
            reason: "四川省农业科学院本地专家，擅长柑橘".into(),
        };
        let m = NeedMatch {
            area: village,
            updated: Date::parse("2026-12-07").unwrap(),
            // e9's document never arrived: not shown.
            suggestions: [
                ("e1".to_string(), suggested(2000)),
                ("e2".to_string(), suggested(1000)),
                ("e9".to_string(), suggested(3000)),
            ]
            .into(),
        };
        put(&store, &need_key.with_kind(Kind::Match), |d| {
            m.write_to(d).unwrap()
        });

        let got = suggestions(&store, &need_key, &need).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["李明", "王芳"]);
        assert_eq!(got[0].contact, "四川省农科院科技服务热线 028-84504000");
        assert_eq!(got[0].services, ["现场指导", "远程咨询"]);
        assert_eq!(got[0].choice, None);

        need.expert_choice
            .insert("e1".into(), ExpertChoice::Declined);
        need.expert_choice
            .insert("e2".into(), ExpertChoice::Accepted);
        let got = suggestions(&store, &need_key, &need).unwrap();
        let order: Vec<(&str, Option<&str>)> =
            got.iter().map(|e| (e.name.as_str(), e.choice)).collect();
        assert_eq!(
            order,
            [("王芳", Some("accepted")), ("李明", Some("declined"))]
        );
    }
}
