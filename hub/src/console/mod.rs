//! The hub operator console: zh-CN pages rendered on the server, usable on a laptop and a phone.
//!
//! This module owns the console's routes, its page layout (one navigation bar: 覆盖情况, 内容库,
//! 专家, 需求, 节点), the one HTML escaping helper [`esc`] that every page uses for everything it
//! renders from data, and the embedded static files (`console.js`, `console.css`, compiled in
//! with `include_str!`). Pages only read; every change is made by `console.js` through the JSON
//! API ([`crate::manage_api`] and the content routes), with one `api()` helper that sends the
//! `x-csrf-token` header from the `cunyun_csrf` cookie on every write. Validation errors come
//! back as the API's 422 field list and are shown next to the fields.
//!
//! - [`coverage`]: `/` — coverage per area, with CSV links.
//! - [`content`]: `/content`, `/content/new`, `/content/{id}/edit` — the library.
//! - [`experts`]: `/experts`, `/experts/new`, `/experts/{id}/edit` — the registry.
//! - [`needs`]: `/needs` — local needs, filterable by area and status, with status buttons.
//! - [`nodes`]: `/nodes` — peers that synced with the hub.

pub mod content;
pub mod coverage;
pub mod experts;
pub mod needs;
pub mod nodes;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::Hub;

/// The console's script (plain JavaScript, no build step).
pub const CONSOLE_JS: &str = include_str!("console.js");
/// The console's style sheet.
pub const CONSOLE_CSS: &str = include_str!("console.css");

/// The console's page routes and static files.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/", get(coverage::handler))
        .route("/content", get(content::list_page))
        .route("/content/new", get(content::new_page))
        .route("/content/{id}/edit", get(content::edit_page))
        .route("/experts", get(experts::list_page))
        .route("/experts/new", get(experts::new_page))
        .route("/experts/{id}/edit", get(experts::edit_page))
        .route("/needs", get(needs::page_handler))
        .route("/nodes", get(nodes::page_handler))
        .route("/console/console.js", get(js))
        .route("/console/console.css", get(css))
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CONSOLE_JS,
    )
        .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CONSOLE_CSS,
    )
        .into_response()
}

/// The one HTML escaping helper (`cunyun_platform::html::esc`); everything a page renders from data
/// (titles, names, ids, error messages) goes through it.
pub use cunyun_platform::html::esc;

/// The navigation entries: path and label.
pub const NAV: [(&str, &str); 5] = [
    ("/", "覆盖情况"),
    ("/content", "内容库"),
    ("/experts", "专家"),
    ("/needs", "需求"),
    ("/nodes", "节点"),
];

/// A whole page: `title` (plain text, escaped here), the nav entry `active` (a path of
/// [`NAV`]) highlighted, and `body` (HTML the caller built with [`esc`]).
pub fn page(title: &str, active: &str, body: &str) -> Html<String> {
    let mut nav = String::new();
    for (href, label) in NAV {
        let current = if href == active {
            " aria-current=\"page\""
        } else {
            ""
        };
        nav.push_str(&format!("<a href=\"{href}\"{current}>{label}</a>"));
    }
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · 村云省级枢纽</title><link rel=\"stylesheet\" href=\"/console/console.css\">\
         <script src=\"/console/console.js\" defer></script></head><body>\
         <header><strong>村云省级枢纽</strong><nav>{nav}</nav></header>\
         <main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
    ))
}

/// A page saying something went wrong (`message` is plain text).
pub fn error_page(status: StatusCode, active: &str, message: &str) -> Response {
    (
        status,
        page(
            "出错了",
            active,
            &format!("<p class=\"bad\">{}</p>", esc(message)),
        ),
    )
        .into_response()
}

/// A one-line text input `name` (id `f-<name>`) holding `value`, at most `max` characters.
pub fn text_input(name: &str, value: &str, max: usize) -> String {
    format!(
        "<input id=\"f-{name}\" name=\"{name}\" value=\"{}\" maxlength=\"{max}\">",
        esc(value)
    )
}

/// A form field: a labelled control with the place its error message goes
/// (`<p class="err">`, filled by `console.js` from the API's field list).
pub fn field(name: &str, label: &str, control: &str, hint: &str) -> String {
    let hint = if hint.is_empty() {
        String::new()
    } else {
        format!("<small>{}</small>", esc(hint))
    };
    format!(
        "<div class=\"field\" data-field=\"{n}\"><label for=\"f-{n}\">{l}</label>{control}{hint}<p class=\"err\"></p></div>",
        n = esc(name),
        l = esc(label),
    )
}

/// A group of checkboxes named `name`, one per `(value, label)`, the `checked` ones ticked.
pub fn checkboxes<'a>(
    name: &str,
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
    checked: &dyn Fn(&str) -> bool,
) -> String {
    let mut out = String::from("<span class=\"checks\">");
    for (value, label) in options {
        out.push_str(&format!(
            "<label class=\"check\"><input type=\"checkbox\" name=\"{}\" value=\"{}\"{}> {}</label>",
            esc(name),
            esc(value),
            if checked(value) { " checked" } else { "" },
            esc(label)
        ));
    }
    out.push_str("</span>");
    out
}

/// A `<select>` named `name` with `(value, label)` options, `selected` chosen.
pub fn select<'a>(
    name: &str,
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
    selected: &str,
) -> String {
    let mut out = format!("<select id=\"f-{n}\" name=\"{n}\">", n = esc(name));
    for (value, label) in options {
        out.push_str(&format!(
            "<option value=\"{}\"{}>{}</option>",
            esc(value),
            if value == selected { " selected" } else { "" },
            esc(label)
        ));
    }
    out.push_str("</select>");
    out
}

/// The tag tree as checkbox groups in plain words, one collapsible group per L1 group.
pub fn tag_picker(name: &str, checked: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::from("<div class=\"tags\">");
    for g in cunyun_protocol::taxonomy::Group::ALL {
        let tags: Vec<_> = g.tags().collect();
        let n = tags.iter().filter(|t| checked(t.id())).count();
        out.push_str(&format!(
            "<details{}><summary>{}{}</summary>",
            if n > 0 { " open" } else { "" },
            esc(g.zh_name()),
            if n > 0 {
                format!("（已选{n}）")
            } else {
                String::new()
            }
        ));
        out.push_str(&checkboxes(
            name,
            tags.iter().map(|t| (t.id(), t.zh_name())),
            checked,
        ));
        out.push_str("</details>");
    }
    out.push_str("</div>");
    out
}

/// An area code as a page shows it: the gazetteer's place label (`双流区 › 彭镇 › 岷江村`),
/// with the code under it as small secondary text for the operator; a code the gazetteer does
/// not know reads `<code>（未知地区）`. Escaped HTML.
pub fn place(code: &str) -> String {
    let label = cunyun_protocol::gazetteer::sichuan().code_label(code);
    if label.contains(code) {
        return format!("<span class=\"place\">{}</span>", esc(&label));
    }
    format!(
        "<span class=\"place\">{}</span><br><small class=\"code\">{}</small>",
        esc(&label),
        esc(code)
    )
}

/// Milliseconds since the Unix epoch.
pub(crate) use cunyun_platform::clock::now_ms;

/// "3分钟前"-style age of a timestamp.
pub fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}秒前"),
        60..=3599 => format!("{}分钟前", s / 60),
        3600..=86_399 => format!("{}小时前", s / 3600),
        _ => format!("{}天前", s / 86_400),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn places_are_named_with_the_code_as_small_text() {
        let p = place("510116108203");
        assert!(p.contains("双流区 › 彭镇 › 岷江村"), "{p}");
        assert!(
            p.contains("<small class=\"code\">510116108203</small>"),
            "{p}"
        );
        assert_eq!(
            place("511424102999"),
            "<span class=\"place\">511424102999（未知地区）</span>"
        );
        assert!(place("<x>").contains("&lt;x&gt;（未知地区）"));
    }

    #[test]
    fn page_escapes_its_title_and_marks_the_current_entry() {
        let Html(h) = page("<script>x</script>", "/experts", "");
        assert!(!h.contains("<script>x"));
        assert!(h.contains("<a href=\"/experts\" aria-current=\"page\">专家</a>"));
        for (_, label) in NAV {
            assert!(h.contains(label));
        }
    }
}
