//! `/needs`: the province's local needs (科技所需) — area, title, tags, status, suggested experts,
//! satisfaction — filterable by area prefix and status, with one button per status the need may
//! move to (`POST /api/v1/needs/{area}/{id}/status`; typically matched → 「服务中」).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cunyun_protocol::need::NeedStatus;

use super::{error_page, esc, page, place};
use crate::needs::{self, NeedFilter, NeedRow};
use crate::Hub;

/// The filter form and the needs table.
pub fn render(rows: &[NeedRow], filter: &NeedFilter) -> String {
    let area = filter
        .area
        .map(|a| a.prefix().to_string())
        .unwrap_or_default();
    let mut html = format!(
        "<form class=\"filter\" method=\"get\" action=\"/needs\"><label>地区 <input name=\"area\" value=\"{}\" placeholder=\"如 511424\" size=\"12\"></label> <label>状态 <select name=\"status\"><option value=\"\">全部</option>",
        esc(&area)
    );
    for s in NeedStatus::ALL {
        html.push_str(&format!(
            "<option value=\"{}\"{}>{}</option>",
            s.id(),
            if filter.status == Some(*s) {
                " selected"
            } else {
                ""
            },
            s.zh_name()
        ));
    }
    html.push_str(&format!(
        "</select></label> <button type=\"submit\">筛选</button></form><p>共{}条需求。「服务中」由枢纽标记，「已解决」和满意度由村里填写，双方的修改都会同步。</p>",
        rows.len()
    ));
    html.push_str("<p class=\"form-msg\" role=\"status\"></p><div class=\"scroll\"><table id=\"need-table\"><tr><th>地区</th><th>需求</th><th>标签</th><th>状态</th><th>推荐专家</th><th>满意度</th><th>更新</th><th>操作</th></tr>");
    for r in rows {
        let n = &r.need;
        let tags: Vec<&str> = n.tags.iter().map(|t| t.zh_name()).collect();
        let experts: Vec<String> = r
            .suggestions
            .iter()
            .map(|s| {
                let who = if s.name.is_empty() {
                    s.expert_id.clone()
                } else {
                    format!("{}（{}）", s.name, s.organisation)
                };
                format!("<li title=\"{}\">{}</li>", esc(&s.reason), esc(&who))
            })
            .collect();
        let mut actions = String::new();
        for next in n.status.next() {
            let confirm = if *next == NeedStatus::InService {
                String::new()
            } else {
                format!(
                    " data-confirm=\"把需求“{}”改为{}？\"",
                    esc(&n.title),
                    next.zh_name()
                )
            };
            actions.push_str(&format!(
                "<button type=\"button\" data-status=\"{}\" data-url=\"/api/v1/needs/{}/{}/status\"{confirm}>改为{}</button> ",
                next.id(),
                esc(n.area.as_str()),
                esc(&r.id),
                next.zh_name()
            ));
        }
        html.push_str(&format!(
            "<tr data-id=\"{id}\"><td>{area}</td><td class=\"title\">{title}<br><small>{req} · {contact}</small></td><td>{tags}</td><td class=\"status\" data-status=\"{sid}\">{status}</td><td><ul>{experts}</ul></td><td>{sat}</td><td>{updated}</td><td>{actions}</td></tr>",
            id = esc(&r.id),
            area = place(n.area.as_str()),
            title = esc(&n.title),
            req = esc(n.requester.zh_name()),
            contact = esc(&n.contact_role),
            tags = esc(&tags.join("、")),
            sid = n.status.id(),
            status = n.status.zh_name(),
            experts = experts.join(""),
            sat = n.satisfaction.map_or("—".to_string(), |s| format!("{}分（满分5分）", s)),
            updated = n.updated.map_or("—".to_string(), |d| d.to_string()),
        ));
    }
    if rows.is_empty() {
        html.push_str("<tr><td colspan=\"8\">没有符合条件的需求。</td></tr>");
    }
    html.push_str("</table></div>");
    html
}

pub(crate) async fn page_handler(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let filter = match crate::manage_api::need_filter(&q) {
        Ok(f) => f,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, "/needs", &m),
    };
    match needs::list(hub.store.as_ref(), &hub.scope, hub.scope.area(), &filter) {
        Ok(rows) => page("需求", "/needs", &render(&rows, &filter)).into_response(),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "/needs", &e.to_string()),
    }
}
