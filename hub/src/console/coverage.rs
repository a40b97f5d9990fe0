//! `/`: coverage per area at a chosen level (households recorded, with recommendations, reached,
//! viewed, rated helpful; the tags in most demand), with the CSV export link.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use cunyun_protocol::area::Level;
use cunyun_protocol::taxonomy::Tag;

use super::{esc, page, place};
use crate::coverage::{self as cov, CoverageRow};
use crate::Hub;

/// The coverage table at `level`, as HTML.
pub fn render(level: Level, rows: &[CoverageRow]) -> String {
    let mut html = String::from("<p class=\"levels\">层级：");
    for l in Level::ALL {
        let id = cov::level_id(l);
        let current = if l == level {
            " aria-current=\"true\""
        } else {
            ""
        };
        html.push_str(&format!(
            "<a href=\"/?level={id}\"{current}>{}</a> ",
            l.zh_name()
        ));
    }
    html.push_str(&format!(
        "｜<a href=\"/api/v1/coverage.csv?level={}\">导出CSV</a></p>",
        cov::level_id(level)
    ));
    html.push_str(
        "<div class=\"scroll\"><table><tr><th>地区</th><th>登记农户</th><th>已推荐农户</th><th>覆盖率</th>\
         <th>推荐条目</th><th>需求最多的标签</th><th>已送达农户</th><th>已查看农户</th><th>反馈有帮助农户</th></tr>",
    );
    for r in rows {
        let top: Vec<String> = r
            .top_demand
            .iter()
            .map(|(t, n)| {
                let name = Tag::parse(t).map_or(t.as_str(), |t| t.zh_name());
                format!("{}（{n}户）", esc(name))
            })
            .collect();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            place(&r.area),
            r.households,
            r.with_rec,
            r.share_with_rec * 100.0,
            r.items,
            top.join("、"),
            r.reached,
            r.viewed,
            r.helped
        ));
    }
    if rows.is_empty() {
        html.push_str("<tr><td colspan=\"9\">还没有农户数据同步上来。</td></tr>");
    }
    html.push_str("</table></div><p>已送达、已查看、反馈有帮助：按各村节点同步上来的反馈记录（fb）统计的农户数。</p>");
    html
}

/// `GET /?level=`.
pub(crate) async fn handler(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let level = match crate::level_of(&q) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let rows = hub.engine.coverage().rows(level);
    page("覆盖情况", "/", &render(level, &rows)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(area: &str) -> CoverageRow {
        CoverageRow {
            area: area.to_string(),
            households: 3,
            with_rec: 2,
            share_with_rec: 2.0 / 3.0,
            items: 4,
            top_demand: Vec::new(),
            reached: 1,
            viewed: 1,
            helped: 0,
        }
    }

    #[test]
    fn areas_are_named_with_the_code_as_small_text() {
        let html = render(
            Level::Village,
            &[
                row("510116108203"),
                row("511424102202"),
                row("511424102999"),
            ],
        );
        assert!(html.contains("双流区 › 彭镇 › 岷江村"), "{html}");
        assert!(html.contains("丹棱县 › 仁美镇 › 雄义村"), "{html}");
        assert!(html.contains("<small class=\"code\">510116108203</small>"));
        assert!(html.contains("511424102999（未知地区）"), "{html}");
        assert!(!html.contains("<td>510116108203</td>"), "no bare code cell");
        let county = render(Level::County, &[row("511424")]);
        assert!(county.contains("眉山市 › 丹棱县"), "{county}");
    }
}
