//! Articles as HTML: a content item's text rendition (Markdown, HTML or plain text) rendered on
//! the node into a sanitised HTML fragment, so the villager page and the cadre app show headings,
//! lists, quotes, paragraphs, line breaks and links, and a cheap phone does no work.
//!
//! - Markdown goes through `pulldown-cmark` (CommonMark with tables and strikethrough); a single
//!   line break inside a paragraph is kept as a line break (`<br>`), since authors of short
//!   science articles mean the lines they write.
//! - Whatever the source, the HTML then goes through `ammonia` (the content comes from the hub's
//!   library, signed, but is still treated as untrusted): no `<script>`, `<style>`, `<iframe>` or
//!   form elements, no event handlers or `style` attributes, only `http`, `https`, `mailto` and
//!   `tel` (and the like) URLs — never `javascript:`; links get `rel="noopener noreferrer"`.
//! - A relative image or link (`poster.png`) names another rendition of the same signed item and
//!   becomes `/content/{item}/poster.png`; one that names no rendition of the item is dropped, and
//!   so is an image from another site (the village is often offline, and opening an article
//!   should not tell a third party who reads it).
//!
//! [`render`] takes the file's bytes, its mime type and the item's id and rendition names;
//! [`ArticleFormat::of_mime`] says whether a rendition is an article at all.

use std::borrow::Cow;

use ammonia::url::{ParseError, Url};
use pulldown_cmark::{html, Event, Options, Parser};

/// Largest article rendered (bytes of the source file); larger ones are offered as a download.
pub const MAX_ARTICLE_BYTES: u64 = 1024 * 1024;

/// Why a rendition could not be rendered as an article.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The mime type is not one of the article formats (an image, audio, a PDF…).
    #[error("这份资源不是图文文章（{0}），请打开文件查看")]
    NotAnArticle(String),
    /// The file is not UTF-8 text.
    #[error("这篇文章的文字编码无法识别，请打开文件查看")]
    NotUtf8,
    /// The file is over [`MAX_ARTICLE_BYTES`].
    #[error("这篇文章太长（{0} 字节），请打开文件查看")]
    TooLarge(u64),
}

/// The source formats rendered as an article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArticleFormat {
    /// `text/markdown` (and `text/x-markdown`).
    Markdown,
    /// `text/html`.
    Html,
    /// Any other `text/*`: paragraphs at blank lines, line breaks kept.
    Plain,
}

impl ArticleFormat {
    /// The format of a rendition with this mime type (parameters such as `; charset=utf-8` are
    /// ignored), or `None` when it is not text.
    pub fn of_mime(mime: &str) -> Option<Self> {
        let essence = mime
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "text/html" => Some(Self::Html),
            e if e.starts_with("text/") => Some(Self::Plain),
            _ => None,
        }
    }
}

/// Renders a rendition's file (`bytes`, of type `mime`) of content item `item`, whose renditions
/// are named `renditions`, as a sanitised HTML fragment.
pub fn render(
    bytes: &[u8],
    mime: &str,
    item: &str,
    renditions: &[&str],
) -> Result<String, RenderError> {
    let format =
        ArticleFormat::of_mime(mime).ok_or_else(|| RenderError::NotAnArticle(mime.to_string()))?;
    if bytes.len() as u64 > MAX_ARTICLE_BYTES {
        return Err(RenderError::TooLarge(bytes.len() as u64));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| RenderError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let html = match format {
        ArticleFormat::Markdown => markdown_to_html(text),
        ArticleFormat::Html => text.to_string(),
        ArticleFormat::Plain => plain_to_html(text),
    };
    Ok(sanitise(&html, item, renditions))
}

/// Markdown to (unsanitised) HTML; soft line breaks become `<br>`.
fn markdown_to_html(md: &str) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    let parser = Parser::new_ext(md, opts).map(|e| match e {
        Event::SoftBreak => Event::HardBreak,
        e => e,
    });
    let mut out = String::with_capacity(md.len() * 3 / 2);
    html::push_html(&mut out, parser);
    out
}

/// Plain text to HTML: escaped, a paragraph per blank-line-separated block, `<br>` within one.
fn plain_to_html(text: &str) -> String {
    let mut out = String::new();
    let mut para: Vec<String> = Vec::new();
    let flush = |para: &mut Vec<String>, out: &mut String| {
        if !para.is_empty() {
            out.push_str(&format!("<p>{}</p>\n", para.join("<br>\n")));
            para.clear();
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut para, &mut out);
        } else {
            para.push(cunyun_platform::html::esc(line));
        }
    }
    flush(&mut para, &mut out);
    out
}

/// Percent-encodes `s` for one path segment (everything but unreserved characters).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where a URL of the article points.
enum Target<'a> {
    /// A full URL with a scheme (`https://…`; disallowed schemes are ammonia's to drop).
    Absolute,
    /// `//host/…`: another site.
    OtherSite,
    /// `#part` or `/path`: this page or this node.
    Local,
    /// `name`: another rendition of the same item.
    Rendition(&'a str),
    /// A relative path that names no rendition (`../x`, `a/b`).
    Unknown,
}

fn target(value: &str) -> Target<'_> {
    let v = value.trim();
    match Url::parse(v) {
        Ok(_) => Target::Absolute,
        Err(ParseError::RelativeUrlWithoutBase) => {
            if v.starts_with("//") || v.starts_with("\\\\") {
                Target::OtherSite
            } else if v.starts_with('#') || v.starts_with('/') {
                Target::Local
            } else {
                let name = v.strip_prefix("./").unwrap_or(v);
                if name.is_empty()
                    || name == "."
                    || name == ".."
                    || name.contains(['/', '\\', '?', '#'])
                {
                    Target::Unknown
                } else {
                    Target::Rendition(name)
                }
            }
        }
        Err(_) => Target::Unknown,
    }
}

/// The ammonia pass: the default allow-list (no scripts, styles, frames, forms or event
/// handlers; safe URL schemes only) plus the URL policy of the module doc.
fn sanitise(html: &str, item: &str, renditions: &[&str]) -> String {
    let base = format!("/content/{}/", path_segment(item));
    let names: Vec<String> = renditions.iter().map(|n| n.to_string()).collect();
    let mut b = ammonia::Builder::default();
    b.attribute_filter(move |element, attribute, value| {
        let is_url = matches!(
            (element, attribute),
            ("img", "src") | ("a", "href") | ("img", "srcset")
        );
        if !is_url {
            return Some(Cow::Borrowed(value));
        }
        if attribute == "srcset" {
            return None;
        }
        match (element, target(value)) {
            (_, Target::Rendition(name)) if names.iter().any(|n| n == name) => {
                Some(Cow::Owned(format!("{base}{}", path_segment(name))))
            }
            (_, Target::Rendition(_)) => None,
            (_, Target::Unknown) => None,
            ("img", Target::Absolute | Target::OtherSite) => None,
            _ => Some(Cow::Borrowed(value)),
        }
    });
    b.clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(s: &str) -> String {
        render(
            s.as_bytes(),
            "text/markdown",
            "asf-10",
            &["main", "poster.png"],
        )
        .expect("renders")
    }

    #[test]
    fn headings_quote_lists_paragraphs() {
        let h = md("# 非洲猪瘟防控十要点\n\n> 来源：四川省农业农村厅\n\n## 第一步\n\n- 封闭管理\n- 消毒\n\n1. 发现病猪\n2. 立即报告\n\n第一段。\n\n第二段。\n");
        for want in [
            "<h1>非洲猪瘟防控十要点</h1>",
            "<blockquote>\n<p>来源：四川省农业农村厅</p>\n</blockquote>",
            "<h2>第一步</h2>",
            "<ul>\n<li>封闭管理</li>\n<li>消毒</li>\n</ul>",
            "<ol>\n<li>发现病猪</li>\n<li>立即报告</li>\n</ol>",
            "<p>第一段。</p>",
            "<p>第二段。</p>",
        ] {
            assert!(h.contains(want), "{want} not in {h}");
        }
        assert!(!h.contains("# "), "{h}");
        assert!(!h.contains("&gt; "), "{h}");
    }

    #[test]
    fn line_breaks_are_kept() {
        let h = md("早上喂料\n中午清粪\n晚上消毒");
        assert_eq!(h.matches("<br>").count(), 2, "{h}");
        assert!(h.contains("早上喂料<br>"), "{h}");
        let p = render(
            "第一行\n第二行\n\n第二段 <b>".as_bytes(),
            "text/plain",
            "x",
            &["main"],
        )
        .expect("plain");
        assert_eq!(p, "<p>第一行<br>\n第二行</p>\n<p>第二段 &lt;b&gt;</p>\n");
    }

    #[test]
    fn links_are_kept_and_marked() {
        let h = md("[防疫电话](tel:12316) 与 [农业农村厅](https://nynct.sc.gov.cn/)");
        assert!(
            h.contains(r#"<a href="tel:12316" rel="noopener noreferrer">防疫电话</a>"#),
            "{h}"
        );
        assert!(h.contains(r#"href="https://nynct.sc.gov.cn/""#), "{h}");
    }

    #[test]
    fn scripts_handlers_and_javascript_urls_are_removed() {
        let h = md("# 标题\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n\
            [点我](javascript:alert(1))\n\n<a href=\"JaVaScRiPt:alert(1)\" onclick=\"alert(1)\">再点</a>\n\n\
            <p style=\"background:url(javascript:alert(1))\" onmouseover=alert(1)>段落</p>\n\n\
            <iframe src=\"https://evil.example/\"></iframe><form action=/x><input></form>");
        let lower = h.to_lowercase();
        for bad in [
            "<script",
            "alert(1)</",
            "onerror",
            "onclick",
            "onmouseover",
            "javascript:",
            "style=",
            "<iframe",
            "<form",
            "<input",
        ] {
            assert!(!lower.contains(bad), "{bad} in {h}");
        }
        assert!(
            h.contains("<h1>标题</h1>") && h.contains("点我") && h.contains("段落"),
            "{h}"
        );
        let raw = render(
            b"<h2>HTML</h2><img src=x onerror=alert(1)><svg onload=alert(1)></svg><a href='javascript:x'>a</a>",
            "text/html; charset=utf-8",
            "asf-10",
            &["main"],
        )
        .expect("html");
        let lower = raw.to_lowercase();
        assert!(raw.contains("<h2>HTML</h2>"), "{raw}");
        for bad in ["onerror", "onload", "<svg", "javascript:"] {
            assert!(!lower.contains(bad), "{bad} in {raw}");
        }
    }

    #[test]
    fn images_come_from_the_same_item() {
        let h = md("![猪舍](poster.png) ![外站](https://example.com/a.png) ![上级](../x.png) ![协议相对](//example.com/b.png)");
        assert!(
            h.contains(r#"<img src="/content/asf-10/poster.png" alt="猪舍">"#),
            "{h}"
        );
        assert!(!h.contains("example.com") && !h.contains("../x.png"), "{h}");
        // A name the item has no rendition of is dropped; a link to another rendition is kept.
        let h = md("![缺图](missing.png) [PDF版](main)");
        assert!(
            !h.contains("missing.png") && h.contains("<img alt=\"缺图\">"),
            "{h}"
        );
        assert!(h.contains(r#"<a href="/content/asf-10/main""#), "{h}");
        let odd = render(b"![a](./main)", "text/markdown", "id with/slash", &["main"]).expect("md");
        assert!(
            odd.contains(r#"src="/content/id%20with%2Fslash/main""#),
            "{odd}"
        );
    }

    #[test]
    fn what_is_not_an_article_is_refused() {
        assert_eq!(
            render(b"%PDF", "application/pdf", "x", &["main"]),
            Err(RenderError::NotAnArticle("application/pdf".into()))
        );
        assert_eq!(
            render(&[0xff, 0xfe, 0x00], "text/markdown", "x", &["main"]),
            Err(RenderError::NotUtf8)
        );
        let big = vec![b'a'; MAX_ARTICLE_BYTES as usize + 1];
        assert!(matches!(
            render(&big, "text/markdown", "x", &["main"]),
            Err(RenderError::TooLarge(_))
        ));
        assert_eq!(
            ArticleFormat::of_mime("Text/Markdown; charset=UTF-8"),
            Some(ArticleFormat::Markdown)
        );
        assert_eq!(ArticleFormat::of_mime("image/png"), None);
        assert!(RenderError::NotUtf8.to_string().contains("编码"));
    }

    /// Fragments of hostile and ordinary markup, glued together in any order.
    const PIECES: &[&str] = &[
        "<script>",
        "</script>",
        "<img src=x onerror=alert(1)>",
        "<a href=\"javascript:alert(1)\">",
        "[x](javascript:alert(1))",
        "<svg onload=alert(1)>",
        "<iframe src=//e.x>",
        "<style>",
        "<p onclick=alert(1)>",
        "<a href=\"jav&#x09;ascript:alert(1)\">",
        "<object data=x>",
        "# 标题",
        "> 引用",
        "- 列表",
        "\n",
        "\n\n",
        "`代码`",
        "```",
        "<",
        ">",
        "\"",
        "'",
        "=",
        "文字",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<math><mi xlink:href=javascript:alert(1)>",
    ];

    proptest::proptest! {
        #[test]
        fn nothing_hostile_survives(idx in proptest::collection::vec(0..PIECES.len(), 0..24)) {
            let src: String = idx.iter().map(|&i| PIECES[i]).collect();
            for mime in ["text/markdown", "text/html", "text/plain"] {
                let out = render(src.as_bytes(), mime, "asf-10", &["main"]).expect("renders");
                // Text is escaped, so every `<` left opens a real tag: check each tag.
                for tag in out.split('<').skip(1) {
                    let tag = tag.split('>').next().unwrap_or_default().to_lowercase();
                    let name = tag.trim_start_matches('/').split([' ', '\n']).next().unwrap_or_default();
                    proptest::prop_assert!(
                        !["script", "style", "iframe", "svg", "object", "math", "mi"].contains(&name),
                        "<{}> in {} from {:?}", tag, out, src
                    );
                    proptest::prop_assert!(!tag.contains("javascript"), "<{}> in {} from {:?}", tag, out, src);
                    proptest::prop_assert!(
                        !tag.split_whitespace().skip(1).any(|a| a.starts_with("on")),
                        "<{}> in {} from {:?}", tag, out, src
                    );
                }
            }
        }
    }
}
