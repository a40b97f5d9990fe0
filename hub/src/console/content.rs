//! `/content`: the content library — every item with its metadata and status (在用 / 待复审 /
//! 已失效), and the add and edit forms covering [`ContentMeta`] (tags from the taxonomy tree in
//! plain words). The add form uploads the main file with the metadata
//! (`POST /api/v1/content/upload`, size limit stated on the form); the edit form changes the
//! metadata only (`PUT /api/v1/content/{id}`, the manifest is re-signed and the id stays);
//! retiring (expires today, record kept) is `POST /api/v1/content/{id}/retire`; removal is
//! `DELETE /api/v1/content/{id}`.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cunyun_protocol::fields::Date;
use cunyun_protocol::household::Language;
use cunyun_protocol::library::{AgeBand, ContentMeta, Format};

use super::{checkboxes, error_page, esc, field, page, select, tag_picker, text_input};
use crate::library::ContentRecord;
use crate::Hub;

/// Years after its review date an item is due for review again.
pub const REVIEW_EVERY_YEARS: u16 = 1;

/// Where an item stands on `today`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentStatus {
    /// Recommended as usual.
    Live,
    /// Still recommended, but its last review is [`REVIEW_EVERY_YEARS`] or more ago.
    ReviewDue,
    /// Expired: never recommended again.
    Expired,
}

impl ContentStatus {
    /// The status of `meta` on `today`.
    pub fn of(meta: &ContentMeta, today: Date) -> ContentStatus {
        if !meta.is_live(today) {
            ContentStatus::Expired
        } else if meta
            .review_date
            .add_years(REVIEW_EVERY_YEARS)
            .is_some_and(|due| today >= due)
        {
            ContentStatus::ReviewDue
        } else {
            ContentStatus::Live
        }
    }

    /// Chinese label.
    pub const fn zh_name(self) -> &'static str {
        match self {
            ContentStatus::Live => "在用",
            ContentStatus::ReviewDue => "待复审",
            ContentStatus::Expired => "已失效",
        }
    }

    const fn class(self) -> &'static str {
        match self {
            ContentStatus::Live => "ok",
            ContentStatus::ReviewDue => "warn",
            ContentStatus::Expired => "bad",
        }
    }
}

/// The library table.
pub fn render_list(items: &[ContentRecord], today: Date) -> String {
    let mut html = format!(
        "<p><a class=\"button\" href=\"/content/new\">添加资源</a> <a href=\"/api/v1/content.csv\">导出CSV</a>（共{}条）</p>",
        items.len()
    );
    html.push_str("<div class=\"scroll\"><table id=\"content-table\"><tr><th>标题</th><th>状态</th><th>格式</th><th>标签</th><th>适用地区</th><th>月份</th><th>审核日期</th><th>失效日期</th><th>大小</th><th>操作</th></tr>");
    for r in items {
        let m = &r.meta;
        let status = ContentStatus::of(m, today);
        let tags: Vec<&str> = m.tags.iter().map(|t| t.zh_name()).collect();
        let regions: Vec<String> = m.regions.iter().map(|r| r.to_string()).collect();
        let months: Vec<String> = m.months.iter().map(|m| m.to_string()).collect();
        html.push_str(&format!(
            "<tr data-id=\"{id}\"><td class=\"title\">{title}<br><small>{id}</small></td><td class=\"{sc}\">{st}</td><td>{fmt}</td><td>{tags}</td><td>{regions}</td><td>{months}</td><td>{review}</td><td>{expires}</td><td>{size}</td>\
             <td><a href=\"/content/{id}/edit\">编辑</a> {retire}<button type=\"button\" class=\"danger\" data-delete=\"/api/v1/content/{id}\" data-confirm=\"删除资源“{title}”？已推荐给农户的文件仍可下载完。\">删除</button></td></tr>",
            id = esc(&r.id),
            title = esc(&m.title),
            sc = status.class(),
            st = status.zh_name(),
            fmt = esc(m.format.zh_name()),
            tags = esc(&tags.join("、")),
            regions = if regions.is_empty() { "全省".to_string() } else { esc(&regions.join(" ")) },
            months = if months.is_empty() { "全年".to_string() } else { months.join("、") },
            review = m.review_date,
            expires = m.expires.map_or("—".to_string(), |d| d.to_string()),
            size = human_bytes(m.bytes),
            retire = if status == ContentStatus::Expired {
                String::new()
            } else {
                format!(
                    "<button type=\"button\" data-post=\"/api/v1/content/{id}/retire\" data-confirm=\"下架“{title}”？从今天起不再推荐（可通过编辑失效日期恢复）。\">下架</button> ",
                    id = esc(&r.id),
                    title = esc(&m.title)
                )
            },
        ));
    }
    if items.is_empty() {
        html.push_str("<tr><td colspan=\"10\">资源库还是空的。</td></tr>");
    }
    html.push_str("</table></div>");
    html
}

/// `1.5 MB`-style size.
pub fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MB", b as f64 / f64::from(1 << 20))
    } else if b >= 1 << 10 {
        format!("{:.1} KB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// The add form (`existing` = `None`, with the file input and the size limit) or the edit form
/// of an item.
pub fn render_form(existing: Option<&ContentRecord>, max_upload_bytes: u64) -> String {
    let m = existing.map(|r| &r.meta);
    let (api, method, kind) = match existing {
        None => (
            "/api/v1/content/upload".to_string(),
            "POST",
            "content-upload",
        ),
        Some(r) => (format!("/api/v1/content/{}", r.id), "PUT", "content-edit"),
    };
    let mut html = format!(
        "<form id=\"content-form\" class=\"form\" data-api=\"{}\" data-method=\"{method}\" data-kind=\"{kind}\" data-done=\"/content\" data-max-bytes=\"{max_upload_bytes}\" novalidate>",
        esc(&api)
    );
    html.push_str(&field(
        "title",
        "标题（必填）",
        &text_input("title", m.map_or("", |m| &m.title), 60),
        "一行，最多60字",
    ));
    html.push_str(&field(
        "summary",
        "简介",
        &format!(
            "<textarea id=\"f-summary\" name=\"summary\" rows=\"3\" maxlength=\"300\">{}</textarea>",
            esc(m.map_or("", |m| &m.summary))
        ),
        "最多300字",
    ));
    let has_tag = |id: &str| m.is_some_and(|m| m.tags.iter().any(|t| t.id() == id));
    html.push_str(&field(
        "tags",
        "标签（必填，1–8个）",
        &tag_picker("tags", &has_tag),
        "点开类别后勾选",
    ));
    let regions: Vec<String> = m.map_or(Vec::new(), |m| {
        m.regions.iter().map(|r| r.to_string()).collect()
    });
    html.push_str(&field(
        "regions",
        "适用地区",
        &text_input("regions", &regions.join(" "), 700),
        "区划代码前缀，空格分隔，如 5114 511424；留空为全省",
    ));
    let has_month = |v: &str| m.is_some_and(|m| m.months.iter().any(|x| x.to_string() == v));
    let month_names: Vec<(String, String)> = (1..=12)
        .map(|i| (i.to_string(), format!("{i}月")))
        .collect();
    html.push_str(&field(
        "months",
        "适用月份",
        &checkboxes(
            "months",
            month_names.iter().map(|(a, b)| (a.as_str(), b.as_str())),
            &has_month,
        ),
        "不选为全年",
    ));
    let has_band = |v: &str| m.is_some_and(|m| m.audience.iter().any(|b| b.id() == v));
    html.push_str(&field(
        "audience",
        "适用人群",
        &checkboxes(
            "audience",
            AgeBand::ALL.iter().map(|b| (b.id(), b.zh_name())),
            &has_band,
        ),
        "不选为所有人",
    ));
    html.push_str(&field(
        "language",
        "语言",
        &select(
            "language",
            Language::ALL.iter().map(|l| (l.id(), l.zh_name())),
            m.map_or(Language::Mandarin.id(), |m| m.language.id()),
        ),
        "",
    ));
    match m {
        None => html.push_str(&field(
            "format",
            "格式（必填）",
            &select(
                "format",
                std::iter::once(("", "请选择"))
                    .chain(Format::ALL.iter().map(|f| (f.id(), f.zh_name()))),
                "",
            ),
            "",
        )),
        Some(m) => html.push_str(&format!(
            "<p>格式：{}，主文件 {}（文件和格式不能在这里修改；换文件请删除后重新添加）</p>",
            esc(m.format.zh_name()),
            human_bytes(m.bytes)
        )),
    }
    html.push_str(&field(
        "source",
        "来源",
        &text_input("source", m.map_or("", |m| &m.source), 60),
        "如 四川省农技推广总站",
    ));
    html.push_str(&field(
        "review_date",
        "审核日期（必填）",
        &format!(
            "<input id=\"f-review_date\" name=\"review_date\" type=\"date\" value=\"{}\">",
            m.map_or(String::new(), |m| m.review_date.to_string())
        ),
        "",
    ));
    html.push_str(&field(
        "expires",
        "失效日期",
        &format!(
            "<input id=\"f-expires\" name=\"expires\" type=\"date\" value=\"{}\">",
            m.and_then(|m| m.expires)
                .map_or(String::new(), |d| d.to_string())
        ),
        "从这天起不再推荐；留空为长期有效",
    ));
    if existing.is_none() {
        html.push_str(&field(
            "file",
            "文件（必填）",
            "<input id=\"f-file\" name=\"file\" type=\"file\">",
            &format!(
                "图文（Markdown/HTML）、图片、音频、视频或PDF，最大 {}；更大的文件请在枢纽上用 cunyun-hub content add 添加",
                human_bytes(max_upload_bytes)
            ),
        ));
    }
    html.push_str(&format!(
        "<p class=\"form-msg\" role=\"status\"></p><button type=\"submit\">{}</button> <a href=\"/content\">取消</a></form>",
        if existing.is_none() { "添加" } else { "保存修改" }
    ));
    html
}

pub(crate) async fn list_page(State(hub): State<Arc<Hub>>) -> Response {
    page(
        "内容库",
        "/content",
        &render_list(&hub.library.list(), hub.today()),
    )
    .into_response()
}

pub(crate) async fn new_page(State(hub): State<Arc<Hub>>) -> Response {
    page(
        "添加资源",
        "/content",
        &render_form(None, hub.max_upload_bytes),
    )
    .into_response()
}

pub(crate) async fn edit_page(
    State(hub): State<Arc<Hub>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match hub.library.get(&id) {
        Some(r) => page(
            "编辑资源",
            "/content",
            &render_form(Some(&r), hub.max_upload_bytes),
        )
        .into_response(),
        None => error_page(
            StatusCode::NOT_FOUND,
            "/content",
            &format!("没有编号为“{id}”的资源"),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_live_review_due_expired() {
        let m = ContentMeta::from_json(&json!({"title": "x", "tags": ["liv.asf"], "format": "pdf",
            "bytes": 1, "review_date": "2025-03-01", "expires": "2027-01-01"}))
        .unwrap();
        let d = |s| Date::parse(s).unwrap();
        assert_eq!(ContentStatus::of(&m, d("2026-02-28")), ContentStatus::Live);
        assert_eq!(
            ContentStatus::of(&m, d("2026-03-01")),
            ContentStatus::ReviewDue
        );
        assert_eq!(
            ContentStatus::of(&m, d("2027-01-01")),
            ContentStatus::Expired
        );
    }
}
