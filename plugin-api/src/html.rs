//! HTML helpers for plugin authors, on top of the `scraper` crate (re-exported
//! as [`html::scraper`](scraper)): CSS selection with errors that name the selector.

pub use scraper;
use scraper::{ElementRef, Html, Selector};

use crate::sdk::{Error, Result};

/// Parses a CSS selector, naming it in the error.
pub fn selector(css: &str) -> Result<Selector> {
    Selector::parse(css).map_err(|e| Error::msg(format!("invalid CSS selector {css:?}: {e}")))
}

/// The text of an element: its text nodes joined as they are (so
/// `<p>Caf<b>é</b></p>` is `"Café"`), then every whitespace run collapsed to one
/// space and the ends trimmed.
pub fn text_of(el: ElementRef<'_>) -> String {
    let raw: String = el.text().collect();
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
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

/// Value of attribute `attr` on the first element matching `css`: `None` when
/// nothing matches or when that first element lacks the attribute (later
/// matching elements are not consulted).
pub fn first_attr(doc: &Html, css: &str, attr: &str) -> Result<Option<String>> {
    let sel = selector(css)?;
    Ok(doc.select(&sel).next().and_then(|e| e.value().attr(attr).map(str::to_string)))
}

/// Resolves the link `href` against the absolute URL `base` as a browser does
/// (RFC 3986 via the `url` crate): absolute URLs pass through, and
/// scheme-relative (`//cdn/x`), root-relative (`/x`), query-only (`?page=2`),
/// fragment-only (`#top`) and dot-segment (`../x`) links are resolved. The
/// result is normalized (`http://h` becomes `http://h/`, a default port is
/// dropped).
///
/// An error names both `base` and `href` when `base` is not an absolute URL or
/// `href` cannot be resolved.
pub fn join_url(base: &str, href: &str) -> Result<String> {
    let base_url = url::Url::parse(base).map_err(|e| {
        Error::msg(format!(
            "cannot resolve link {href:?} against base {base:?}: the base is not an absolute URL ({e}); pass one like \"http://host/page.html\""
        ))
    })?;
    let joined = base_url.join(href).map_err(|e| {
        Error::msg(format!("cannot resolve link {href:?} against base {base:?}: {e}; check the link in the page"))
    })?;
    Ok(joined.into())
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
    fn text_joins_inline_nodes_without_separator() {
        let doc = Html::parse_document("<p>Caf<b>\u{e9}</b> au\n\t <i>lait</i>  </p><div>  </div>");
        assert_eq!(first_text(&doc, "p").expect("valid"), Some("Caf\u{e9} au lait".to_string()));
        assert_eq!(first_text(&doc, "div").expect("valid"), Some(String::new()));
    }

    #[test]
    fn first_attr_reads_only_the_first_match() {
        let doc = Html::parse_document(r#"<a>no href</a><a href="second.html">x</a><a href="third.html">y</a>"#);
        assert_eq!(first_attr(&doc, "a", "href").expect("valid"), None);
        assert_eq!(first_attr(&doc, "a[href]", "href").expect("valid").as_deref(), Some("second.html"));
        assert_eq!(first_attr(&doc, "p", "href").expect("valid"), None);
        assert!(first_attr(&doc, "a[", "href").is_err());
    }

    #[test]
    fn joins_urls() {
        let base = "http://h:1/c/page-1.html";
        let cases = [
            ("item-2.html", "http://h:1/c/item-2.html"),
            ("/x.html", "http://h:1/x.html"),
            ("//cdn/x", "http://cdn/x"),
            ("?page=2", "http://h:1/c/page-1.html?page=2"),
            ("#frag", "http://h:1/c/page-1.html#frag"),
            ("../x.html", "http://h:1/x.html"),
            ("./sub/../y.html", "http://h:1/c/y.html"),
            ("item?next=http://other/x", "http://h:1/c/item?next=http://other/x"),
            ("https://o/x", "https://o/x"),
            ("", base),
        ];
        for (href, want) in cases {
            assert_eq!(join_url(base, href).expect("resolves").as_str(), want, "href {href:?}");
        }
        assert_eq!(join_url("http://h:1", "x.html").expect("resolves"), "http://h:1/x.html");
        assert_eq!(join_url("https://h/a/b/", "../../../x").expect("resolves"), "https://h/x");
        assert_eq!(join_url("http://h/", "https://o/x").expect("resolves"), "https://o/x");
    }

    #[test]
    fn join_url_errors_name_base_and_href() {
        let err = join_url("catalogue/page-1.html", "item-2.html").expect_err("relative base");
        assert!(err.message().contains("\"catalogue/page-1.html\""), "{err}");
        assert!(err.message().contains("\"item-2.html\""), "{err}");
        assert!(err.message().contains("not an absolute URL"), "{err}");
        let err = join_url("http://h/", "http://[::1").expect_err("bad href");
        assert!(err.message().contains("\"http://[::1\"") && err.message().contains("\"http://h/\""), "{err}");
    }
}
