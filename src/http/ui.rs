//! The web UI of DESIGN §12: a page and its ES modules, embedded in the binary.
//!
//! `GET /` is `index.html`; `GET /ui/{file}` are its scripts, style sheet and icon, all
//! from `src/http/ui/` through `include_bytes!` — no Node toolchain builds or serves them,
//! and the page loads nothing from anywhere else (its Content-Security-Policy says
//! `default-src 'self'`, so a stray CDN link would fail in every browser, and in the
//! tests). Each file is sent with an `ETag` (its BLAKE3 hash) and `Cache-Control:
//! no-cache`: a browser revalidates, gets `304` until the binary changes, and never runs
//! the scripts of an older arbor against a newer API.
//!
//! The page is public, like `/healthz`: it holds no data. What it shows comes from the
//! API with the token the user enters (kept in `sessionStorage`), so auth guards the data
//! exactly as it guards any other client.
//!
//! How the page is built (`src/http/ui/`):
//! - `app.js`: start-up, routing (`#/w/{workflow}/n/{node}`), the workflow list, the
//!   token dialog, the node panel and the toolbar.
//! - `api.js`: fetch with the bearer token, problem+json errors, and the live stream
//!   (EventSource with `?after=`, resumed with `Last-Event-ID` by the browser, reopened
//!   by the page when the server was gone, deduplicated by seq).
//! - `model.js`: a workflow's tree built from its events, in log order, so that any
//!   earlier state (the seq slider) is "the events up to seq N".
//! - `outline.js`: the tree laid out as an outline — a straight chain stays in one
//!   column and each fork indents its children — flattened to rows and drawn
//!   virtually (only the rows on screen exist in the DOM), so 100 000 nodes cost what
//!   fifty do; keyboard navigation follows the WAI-ARIA tree pattern.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// The page's Content-Security-Policy: nothing but arbor itself (`data:` for no image
/// either: the icon is a file). `connect-src 'self'` covers fetch and EventSource.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $ty:literal),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $ty,
            body: include_bytes!(concat!("ui/", $name)),
        }),*]
    };
}

/// Every file of the page.
static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "model.js" => "text/javascript; charset=utf-8",
    "outline.js" => "text/javascript; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
};

/// `GET /`: the page.
#[utoipa::path(get, path = "/", tag = "ui",
    responses(
        (status = 200, description = "The web UI's page (public: it holds no data)",
            body = String, content_type = "text/html"),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match"),
    ))]
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{file}`: one of the page's files; 404 for any other name.
#[utoipa::path(get, path = "/ui/{file}", tag = "ui",
    params(("file" = String, Path, description = "A file of the page: app.js, api.js, \
        model.js, outline.js, style.css or icon.svg")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match"),
        (status = 404, description = "No such file"),
    ))]
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    if name == "index.html" {
        // One address for the page, so that relative links have one base.
        return Problem::not_found("no such file").into_response();
    }
    serve(&name, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Problem::not_found("no such file").into_response();
    };
    let etag = etag_of(asset.body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A strong ETag: the first 16 bytes of the file's BLAKE3 hash, in hex.
fn etag_of(body: &[u8]) -> String {
    let hash = blake3::hash(body);
    format!("\"{}\"", &hash.to_hex()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // A module imported but not listed would 404 in the browser and blank the page.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap_or_default();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split("from '").nth(1) else {
                    continue;
                };
                let file = from.trim_end_matches("';").trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|b| b.name == file),
                    "{} imports {file}, which is not embedded",
                    a.name
                );
            }
        }
    }

    #[test]
    fn the_page_names_nothing_outside_arbor() {
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.body);
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(scheme) && !l.contains("www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{} names {scheme}: {hits:?}", a.name);
            }
        }
    }
}
