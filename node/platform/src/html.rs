//! HTML escaping: the one helper every server-rendered page of the node and the hub uses for
//! text taken from data (names, titles, ids, error messages).

/// Escapes text for HTML element content and quoted attribute values (`&`, `<`, `>`, `"` and
/// `'`).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_both_quotes() {
        assert_eq!(
            esc("<img src=x onerror=\"a\" title='b'>&"),
            "&lt;img src=x onerror=&quot;a&quot; title=&#39;b&#39;&gt;&amp;"
        );
        assert_eq!(esc("防非洲猪瘟"), "防非洲猪瘟");
    }
}
