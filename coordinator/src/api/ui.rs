//! The dashboard at `/ui`: a page, its script, its style sheet and its icon,
//! built into the binary (`coordinator/ui/`), so every coordinator serves it
//! with nothing to install. The page is public; the data it shows comes from
//! the JSON API with the token the user gives it, so the API's roles apply.
//!
//! Each answer carries a strict Content-Security-Policy (only this origin's
//! script, style and fetches; no inline script or style, no framing), and an
//! `ETag` of its bytes with `Cache-Control: no-cache`: a browser asks again
//! each time and gets a bodiless 304 until the binary changes.

use crate::http::{self, ApiError, Body};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{HeaderMap, Response, StatusCode};
use std::hash::{Hash, Hasher};

/// Name, content type, bytes.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../ui/app.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../../ui/favicon.svg")),
];
const PAGE: &str = include_str!("../../ui/index.html");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ui`.
pub fn page(headers: &HeaderMap) -> Response<Body> {
    serve("text/html; charset=utf-8", PAGE, headers)
}

/// `GET /ui/{name}`.
pub fn asset(name: &str, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => Ok(serve(content_type, body, headers)),
        None => Err(ApiError::not_found(format!("the dashboard has no file {name:?}: open /ui"))),
    }
}

fn serve(content_type: &'static str, body: &'static str, headers: &HeaderMap) -> Response<Body> {
    let tag = etag(body);
    let fresh = headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = Response::new(http::full(if fresh { "" } else { body }));
    if fresh {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(ETAG, HeaderValue::from_str(&tag).expect("hex digits and quotes are header-safe"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// A strong validator of the bytes: the same within a build, and a new
/// build whose bytes differ gets another.
fn etag(body: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{}-{:016x}\"", env!("CARGO_PKG_VERSION"), h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_their_types_a_strict_policy_and_revalidate() {
        let resp = page(&HeaderMap::new());
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        let tag = resp.headers()[ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, tag);
        assert_eq!(page(&headers).status(), StatusCode::NOT_MODIFIED);
        for (name, content_type, _) in ASSETS {
            let resp = asset(name, &HeaderMap::new()).unwrap();
            assert_eq!(resp.headers()[CONTENT_TYPE], *content_type);
            assert_eq!(resp.headers()[CACHE_CONTROL], "no-cache");
            // The page's own tag is not this file's.
            assert_eq!(asset(name, &headers).unwrap().status(), StatusCode::OK);
        }
        assert_eq!(asset("../admin.token", &HeaderMap::new()).unwrap_err().status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The policy would block them: the page would load with errors.
        assert!(PAGE.contains("<script src=\"/ui/app.js\""));
        assert!(!PAGE.contains("<script>") && !PAGE.contains("style=") && !PAGE.contains("<style"));
        let handlers = PAGE.match_indices(" on").filter(|(i, _)| {
            PAGE[i + 3..].chars().take_while(char::is_ascii_alphabetic).count() > 0 && PAGE[i + 3..].trim_start_matches(|c: char| c.is_ascii_alphabetic()).starts_with('=')
        });
        assert_eq!(handlers.count(), 0, "no inline event handlers");
        for (name, _, body) in ASSETS {
            assert!(!body.contains("innerHTML"), "{name}: build nodes, do not parse markup from data");
        }
    }
}
