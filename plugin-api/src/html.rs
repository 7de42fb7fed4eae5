//! HTML helpers for plugin authors, on top of the `scraper` crate (re-exported
//! as [`html::scraper`](scraper)): CSS selection with errors that name the selector.

pub use scraper;
use scraper::{ElementRef, Html, Selector};

use crate::sdk::{Error, Result};

/// Parses a CSS selector, naming it in the error.
pub fn selector(css: &str) -> Result<Selector> {
    Selector::parse(css).map_err(|e| Error::msg(format!("invalid CSS selector {css:?}: {e}")))
}

/// The whitespace-normalized text of an element.
pub fn text_of(el: ElementRef<'_>) -> String {
    el.text().collect::<Vec<_>>().join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text of the first element matching `css`, or `None`.
pub fn first_text(doc: &Html, css: &str) -> Result<Option<String>> {
    let sel = selector(css)?;
    Ok(doc.select(&sel).next().map(text_of))
}

/// Text of the first element matching `css`, or an error naming the selector.
pub fn require_text(doc: &Html, css: &str) -> Result<String> {
    first_text(doc, css)?.ok_or_else(|| Error::msg(format!("no element matches {css:?}")))
}

/// Texts of all elements matching `css`.
pub fn all_text(doc: &Html, css: &str) -> Result<Vec<String>> {
    let sel = selector(css)?;
    Ok(doc.select(&sel).map(text_of).collect())
}

/// Values of attribute `attr` on all elements matching `css`.
pub fn all_attr(doc: &Html, css: &str, attr: &str) -> Result<Vec<String>> {
    let sel = selector(css)?;
    Ok(doc.select(&sel).filter_map(|e| e.value().attr(attr).map(str::to_string)).collect())
}

/// Value of attribute `attr` on the first element matching `css`.
pub fn first_attr(doc: &Html, css: &str, attr: &str) -> Result<Option<String>> {
    Ok(all_attr(doc, css, attr)?.into_iter().next())
}

/// Resolves `href` against `base` (absolute URLs pass through).
pub fn join_url(base: &str, href: &str) -> String {
    if href.contains("://") {
        return href.to_string();
    }
    let origin_end = base.find("://").map(|i| i + 3).and_then(|s| base[s..].find('/').map(|j| s + j));
    if let Some(rest) = href.strip_prefix('/') {
        let origin = origin_end.map(|e| &base[..e]).unwrap_or(base.trim_end_matches('/'));
        return format!("{origin}/{rest}");
    }
    let dir = match base.rfind('/') {
        Some(i) if origin_end.is_some_and(|e| i >= e) => &base[..=i],
        _ => return format!("{}/{href}", base.trim_end_matches('/')),
    };
    format!("{dir}{href}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_text_and_attributes() {
        let doc = Html::parse_document(
            r#"<ul><li class="i"><a href="a.html"> One
            item</a></li><li class="i"><a href="b.html">Two</a></li></ul>"#,
        );
        assert_eq!(all_text(&doc, "li.i").expect("valid"), vec!["One item", "Two"]);
        assert_eq!(all_attr(&doc, "a", "href").expect("valid"), vec!["a.html", "b.html"]);
        assert_eq!(first_text(&doc, "p").expect("valid"), None);
        let err = require_text(&doc, "p.price").expect_err("missing");
        assert!(err.message().contains("p.price"));
        assert!(selector("a[").expect_err("bad").message().contains("invalid CSS selector"));
    }

    #[test]
    fn joins_urls() {
        assert_eq!(join_url("http://h:1/c/page-1.html", "item-2.html"), "http://h:1/c/item-2.html");
        assert_eq!(join_url("http://h:1/c/page-1.html", "/x.html"), "http://h:1/x.html");
        assert_eq!(join_url("http://h:1", "x.html"), "http://h:1/x.html");
        assert_eq!(join_url("http://h:1/", "https://o/x"), "https://o/x");
    }
}
