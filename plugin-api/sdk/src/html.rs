//! HTML helpers for plugin authors: parse a page into a [`Document`], select
//! [`Element`]s with CSS (errors name the selector), read text and attributes,
//! select within an element, walk to parents and siblings, turn a table into
//! rows, and resolve links.
//!
//! Built on the `scraper` crate, whose types are deliberately not part of this
//! API (they are wrapped), so a `scraper` release never breaks a plugin.

use scraper::{ElementRef, Html};

use crate::sdk::{Error, Result};

/// A compiled CSS selector. Compile once and reuse it in a loop with
/// [`Document::select_with`] / [`Element::select_with`].
#[derive(Debug, Clone)]
pub struct Selector {
    inner: scraper::Selector,
    css: String,
}

impl Selector {
    /// Parses a CSS selector, naming it in the error.
    pub fn parse(css: &str) -> Result<Selector> {
        let inner =
            scraper::Selector::parse(css).map_err(|e| Error::msg(format!("invalid CSS selector {css:?}: {e}")))?;
        Ok(Selector { inner, css: css.to_string() })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.css
    }
}

/// Parses a CSS selector, naming it in the error.
pub fn selector(css: &str) -> Result<Selector> {
    Selector::parse(css)
}

/// A parsed HTML document (or fragment).
pub struct Document {
    html: Html,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document").finish_non_exhaustive()
    }
}

impl Document {
    /// Parses a whole page (missing `<html>`/`<body>` are added as a browser does).
    pub fn parse(html: &str) -> Document {
        Document { html: Html::parse_document(html) }
    }

    /// Parses a piece of HTML (for example a snippet from a JSON API).
    pub fn parse_fragment(html: &str) -> Document {
        Document { html: Html::parse_fragment(html) }
    }

    /// The root element (`<html>`).
    pub fn root(&self) -> Element<'_> {
        Element(self.html.root_element())
    }

    /// Every element matching `css`, in document order.
    pub fn select(&self, css: &str) -> Result<Vec<Element<'_>>> {
        Ok(self.select_with(&Selector::parse(css)?))
    }

    /// Every element matching a compiled selector.
    pub fn select_with(&self, sel: &Selector) -> Vec<Element<'_>> {
        self.html.select(&sel.inner).map(Element).collect()
    }

    /// The first element matching `css`, if any.
    pub fn first(&self, css: &str) -> Result<Option<Element<'_>>> {
        let sel = Selector::parse(css)?;
        Ok(self.html.select(&sel.inner).next().map(Element))
    }

    /// The text of `<title>`, if the page has one.
    pub fn title(&self) -> Option<String> {
        self.first("title").ok().flatten().map(|e| e.text())
    }
}

/// An element of a [`Document`]; cheap to copy.
#[derive(Clone, Copy)]
pub struct Element<'a>(ElementRef<'a>);

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.name())
    }
}

impl<'a> Element<'a> {
    /// The tag name, lowercase (`a`, `div`).
    pub fn name(&self) -> &'a str {
        self.0.value().name()
    }

    /// The element's text: its text nodes joined as they are (so
    /// `<p>Caf<b>é</b></p>` is `"Café"`), every whitespace run collapsed to one
    /// space and the ends trimmed.
    pub fn text(&self) -> String {
        let raw: String = self.0.text().collect();
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&'a str> {
        self.0.value().attr(name)
    }

    /// The element's HTML, including itself.
    pub fn html(&self) -> String {
        self.0.html()
    }

    /// The HTML inside the element.
    pub fn inner_html(&self) -> String {
        self.0.inner_html()
    }

    /// Descendants of this element matching `css` (the element itself is not
    /// considered), in document order.
    pub fn select(&self, css: &str) -> Result<Vec<Element<'a>>> {
        Ok(self.select_with(&Selector::parse(css)?))
    }

    /// Descendants matching a compiled selector.
    pub fn select_with(&self, sel: &Selector) -> Vec<Element<'a>> {
        self.0.select(&sel.inner).map(Element).collect()
    }

    /// The first descendant matching `css`, if any.
    pub fn first(&self, css: &str) -> Result<Option<Element<'a>>> {
        let sel = Selector::parse(css)?;
        Ok(self.0.select(&sel.inner).next().map(Element))
    }

    /// Text of the first descendant matching `css`.
    pub fn first_text(&self, css: &str) -> Result<Option<String>> {
        Ok(self.first(css)?.map(|e| e.text()))
    }

    /// The parent element (`None` for the root).
    pub fn parent(&self) -> Option<Element<'a>> {
        self.0.parent().and_then(ElementRef::wrap).map(Element)
    }

    /// The child elements, in order (text between them is skipped).
    pub fn children(&self) -> Vec<Element<'a>> {
        self.0.children().filter_map(ElementRef::wrap).map(Element).collect()
    }

    /// The next sibling element, skipping text.
    pub fn next_sibling(&self) -> Option<Element<'a>> {
        self.0.next_siblings().find_map(ElementRef::wrap).map(Element)
    }

    /// The previous sibling element, skipping text.
    pub fn prev_sibling(&self) -> Option<Element<'a>> {
        self.0.prev_siblings().find_map(ElementRef::wrap).map(Element)
    }

    /// The rows of a `<table>` (or of any element holding `<tr>`s) as cell texts:
    /// one entry per `<tr>` in order, one string per `<th>`/`<td>`, header rows
    /// included. Rows of nested tables are not mixed in.
    pub fn table_rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        self.collect_rows(&mut rows);
        rows
    }

    fn collect_rows(&self, rows: &mut Vec<Vec<String>>) {
        for child in self.children() {
            match child.name() {
                "tr" => rows.push(
                    child
                        .children()
                        .into_iter()
                        .filter(|c| matches!(c.name(), "td" | "th"))
                        .map(|c| c.text())
                        .collect(),
                ),
                "thead" | "tbody" | "tfoot" => child.collect_rows(rows),
                _ => {}
            }
        }
    }
}

/// The text of an element (see [`Element::text`]).
pub fn text_of(el: Element<'_>) -> String {
    el.text()
}

/// Text of the first element matching `css`, or `None`.
pub fn first_text(doc: &Document, css: &str) -> Result<Option<String>> {
    Ok(doc.first(css)?.map(|e| e.text()))
}

/// Text of the first element matching `css`, or an error naming the selector.
pub fn require_text(doc: &Document, css: &str) -> Result<String> {
    first_text(doc, css)?.ok_or_else(|| Error::msg(format!("no element matches {css:?}")))
}

/// Texts of all elements matching `css`.
pub fn all_text(doc: &Document, css: &str) -> Result<Vec<String>> {
    Ok(doc.select(css)?.iter().map(Element::text).collect())
}

/// Values of attribute `attr` on all elements matching `css`.
pub fn all_attr(doc: &Document, css: &str, attr: &str) -> Result<Vec<String>> {
    Ok(doc.select(css)?.iter().filter_map(|e| e.attr(attr).map(str::to_string)).collect())
}

/// Value of attribute `attr` on the first element matching `css`: `None` when
/// nothing matches or when that first element lacks the attribute (later
/// matching elements are not consulted).
pub fn first_attr(doc: &Document, css: &str, attr: &str) -> Result<Option<String>> {
    Ok(doc.first(css)?.and_then(|e| e.attr(attr).map(str::to_string)))
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
        let doc = Document::parse(
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
        let doc = Document::parse("<p>Caf<b>\u{e9}</b> au\n\t <i>lait</i>  </p><div>  </div>");
        assert_eq!(first_text(&doc, "p").expect("valid"), Some("Caf\u{e9} au lait".to_string()));
        assert_eq!(first_text(&doc, "div").expect("valid"), Some(String::new()));
    }

    #[test]
    fn first_attr_reads_only_the_first_match() {
        let doc = Document::parse(r#"<a>no href</a><a href="second.html">x</a><a href="third.html">y</a>"#);
        assert_eq!(first_attr(&doc, "a", "href").expect("valid"), None);
        assert_eq!(first_attr(&doc, "a[href]", "href").expect("valid").as_deref(), Some("second.html"));
        assert_eq!(first_attr(&doc, "p", "href").expect("valid"), None);
        assert!(first_attr(&doc, "a[", "href").is_err());
    }

    #[test]
    fn selects_within_an_element_and_walks_siblings() {
        let doc = Document::parse(
            r#"<div class="card"><h3>A</h3><p class="price">1</p></div>
               <div class="card"><h3>B</h3><span>x</span><p class="price">2</p></div>"#,
        );
        let cards = doc.select("div.card").expect("valid");
        let pairs: Vec<(String, String)> = cards
            .iter()
            .map(|c| {
                let name = c.first_text("h3").expect("valid").unwrap_or_default();
                let price = c.first_text(".price").expect("valid").unwrap_or_default();
                (name, price)
            })
            .collect();
        assert_eq!(pairs, vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        let h3 = cards[1].first("h3").expect("valid").expect("present");
        assert_eq!(h3.next_sibling().map(|e| e.name()), Some("span"));
        assert_eq!(h3.prev_sibling().map(|e| e.name()), None);
        assert_eq!(h3.parent().and_then(|p| p.attr("class")), Some("card"));
        assert_eq!(cards[0].select("span").expect("valid").len(), 0, "scoped to the element");
        assert!(cards[0].select("a[").is_err());
    }

    #[test]
    fn tables_become_rows() {
        let doc = Document::parse(
            "<table><thead><tr><th>Name</th><th>Qty</th></tr></thead><tbody><tr><td> Bolt </td><td>3</td></tr>\
             <tr><td>Nut <table><tr><td>inner</td></tr></table></td><td>5</td></tr></tbody></table>",
        );
        let table = doc.first("table").expect("valid").expect("present");
        assert_eq!(
            table.table_rows(),
            vec![vec!["Name", "Qty"], vec!["Bolt", "3"], vec!["Nut inner", "5"]],
            "header row first, nested table rows not mixed in"
        );
        assert_eq!(doc.title(), None);
        assert_eq!(Document::parse("<title> T </title>").title().as_deref(), Some("T"));
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
