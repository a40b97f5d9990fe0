//! `/experts`: the expert registry (科技所能, public fields only) — the list, and the add and edit
//! forms (`POST /api/v1/experts`, `PUT /api/v1/experts/{id}`); removal is
//! `DELETE /api/v1/experts/{id}`.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cunyun_protocol::expert::Service;

use super::{checkboxes, error_page, esc, field, page, tag_picker, text_input};
use crate::experts::{self, ExpertError, ExpertRecord};
use crate::Hub;

/// The registry table.
pub fn render_list(list: &[ExpertRecord]) -> String {
    let mut html = format!(
        "<p><a class=\"button\" href=\"/experts/new\">添加专家</a>（共{}位）</p>",
        list.len()
    );
    html.push_str("<div class=\"scroll\"><table id=\"expert-table\"><tr><th>姓名</th><th>单位</th><th>职称</th><th>专业领域</th><th>服务地区</th><th>服务方式</th><th>操作</th></tr>");
    for r in list {
        let e = &r.expert;
        let fields: Vec<&str> = e.fields.iter().map(|t| t.zh_name()).collect();
        let regions: Vec<&str> = e.regions.iter().map(|r| r.prefix()).collect();
        let services: Vec<&str> = e.services.iter().map(|s| s.zh_name()).collect();
        html.push_str(&format!(
            "<tr data-id=\"{id}\"><td class=\"name\">{name}</td><td>{org}</td><td>{title}</td><td>{fields}</td><td>{regions}</td><td>{services}</td>\
             <td><a href=\"/experts/{id}/edit\">编辑</a> <button type=\"button\" class=\"danger\" data-delete=\"/api/v1/experts/{id}\" data-confirm=\"从专家库移除“{name}”？\">移除</button></td></tr>",
            id = esc(&r.id),
            name = esc(&e.name),
            org = esc(&e.organisation),
            title = esc(&e.title),
            fields = esc(&fields.join("、")),
            regions = if regions.is_empty() { "全省".to_string() } else { esc(&regions.join(" ")) },
            services = esc(&services.join("、")),
        ));
    }
    if list.is_empty() {
        html.push_str("<tr><td colspan=\"7\">还没有登记专家。</td></tr>");
    }
    html.push_str("</table></div><p>只登记公开信息（姓名、单位、职称、领域、地区、服务方式），不登记个人电话或证件号；群众通过专家所在单位联系。</p>");
    html
}

/// The add form (`existing` = `None`) or the edit form of an expert.
pub fn render_form(existing: Option<&ExpertRecord>) -> String {
    let e = existing.map(|r| &r.expert);
    let (api, method) = match existing {
        None => ("/api/v1/experts".to_string(), "POST"),
        Some(r) => (format!("/api/v1/experts/{}", r.id), "PUT"),
    };
    let mut html = format!(
        "<form id=\"expert-form\" class=\"form\" data-api=\"{}\" data-method=\"{method}\" data-kind=\"expert\" data-done=\"/experts\" novalidate>",
        esc(&api)
    );
    html.push_str(&field(
        "name",
        "姓名（必填）",
        &text_input("name", e.map_or("", |e| &e.name), 20),
        "",
    ));
    html.push_str(&field(
        "organisation",
        "单位（必填）",
        &text_input("organisation", e.map_or("", |e| &e.organisation), 40),
        "如 四川省农业科学院",
    ));
    html.push_str(&field(
        "title",
        "职称",
        &text_input("title", e.map_or("", |e| &e.title), 20),
        "如 研究员",
    ));
    let has_field = |id: &str| e.is_some_and(|e| e.fields.iter().any(|t| t.id() == id));
    html.push_str(&field(
        "fields",
        "专业领域（必填，最多12个）",
        &tag_picker("fields", &has_field),
        "",
    ));
    let regions: Vec<&str> = e.map_or(Vec::new(), |e| {
        e.regions.iter().map(|r| r.prefix()).collect()
    });
    html.push_str(&field(
        "regions",
        "服务地区",
        &text_input("regions", &regions.join(" "), 400),
        "区划代码前缀，空格分隔，如 5114；留空为全省",
    ));
    html.push_str(&field(
        "contact",
        "联系方式",
        &text_input("contact", e.map_or("", |e| &e.contact), 60),
        "村里看得到：单位服务热线、公众号或工作站地址，如 四川省农科院科技服务热线 028-84504000；不填个人手机号",
    ));
    let has_service = |v: &str| e.is_some_and(|e| e.services.iter().any(|s| s.id() == v));
    html.push_str(&field(
        "services",
        "服务方式（必填）",
        &checkboxes(
            "services",
            Service::ALL.iter().map(|s| (s.id(), s.zh_name())),
            &has_service,
        ),
        "",
    ));
    html.push_str(&format!(
        "<p class=\"form-msg\" role=\"status\"></p><button type=\"submit\">{}</button> <a href=\"/experts\">取消</a></form>",
        if existing.is_none() { "添加" } else { "保存修改" }
    ));
    html
}

pub(crate) async fn list_page(State(hub): State<Arc<Hub>>) -> Response {
    match experts::list(hub.store.as_ref(), hub.scope.area(), false) {
        Ok(list) => page("专家", "/experts", &render_list(&list)).into_response(),
        Err(e) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/experts",
            &e.to_string(),
        ),
    }
}

pub(crate) async fn new_page() -> Response {
    page("添加专家", "/experts", &render_form(None)).into_response()
}

pub(crate) async fn edit_page(
    State(hub): State<Arc<Hub>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match experts::get(hub.store.as_ref(), hub.scope.area(), &id) {
        Ok(r) if !r.expert.withdrawn => {
            page("编辑专家", "/experts", &render_form(Some(&r))).into_response()
        }
        Ok(_) | Err(ExpertError::NotFound(_)) => error_page(
            StatusCode::NOT_FOUND,
            "/experts",
            &format!("没有编号为“{id}”的专家"),
        ),
        Err(e) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/experts",
            &e.to_string(),
        ),
    }
}
