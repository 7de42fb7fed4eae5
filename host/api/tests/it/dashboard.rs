//! The dashboard's routes: the page at `/` (and the paths its script routes),
//! its assets from the binary, a CSP that allows this origin only, and the
//! API's own responses keeping the policy that allows nothing.

use crate::common::*;

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_self_only_policy() {
    let api = TestApi::sqlite().await;
    for path in ["/", "/apps/0123456789ab", "/runs/0123456789abcdef"] {
        let r = api.client.get(api.url(path)).send().await.expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = r.headers()["content-security-policy"].to_str().expect("text").to_string();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {part} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let html = r.text().await.expect("body");
        assert!(html.contains("<script src=\"/assets/app.js\""), "{html}");
        assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style: {html}");
    }
    for (asset, kind, needle) in [
        ("app.js", "text/javascript", "EventSource"),
        ("app.css", "text/css", "--bg"),
        ("uPlot.iife.min.js", "text/javascript", "uPlot (v1.6.32)"),
        ("uPlot.min.css", "text/css", ".uplot"),
        ("uPlot.LICENSE", "text/plain", "MIT"),
        ("icon.svg", "image/svg+xml", "<svg"),
    ] {
        let r = api.client.get(api.url(&format!("/assets/{asset}"))).send().await.expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{asset}");
        assert!(r.headers()["content-type"].to_str().expect("text").starts_with(kind), "{asset}");
        assert!(r.text().await.expect("body").contains(needle), "{asset}");
    }
    let (s, body) = api.get("/assets/../Cargo.toml", None).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"), "{body}");
    let (s, body) = api.get("/assets/secrets.toml", None).await;
    assert_eq!((s, error_code(&body).as_str()), (404, "not_found"), "{body}");
    // the API's answers keep the policy that allows nothing
    let r = api.client.get(api.url("/api/v1/apps")).bearer_auth(VIEWER).send().await.expect("GET");
    assert_eq!(r.headers()["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
    api.stop().await;
}
