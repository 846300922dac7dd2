//! Request guards that run before any handler: a body must be JSON, sent as such.
//!
//! Browsers send "simple" cross-origin requests (`text/plain`, form encodings) without a
//! CORS preflight, so a server that parses any body as JSON lets every web page write to
//! it. arbor takes a request body only with `Content-Type: application/json` (415
//! otherwise) and only uncompressed (any `Content-Encoding` but `identity` is 415):
//! one rule for every route, so no route can forget it.

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// Refuses a request whose body is not declared as uncompressed JSON (415).
pub async fn json_bodies(req: Request, next: Next) -> Response {
    match check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(p) => p.into_response(),
    }
}

/// Whether the request carries a body at all (a length above zero, or chunked).
fn has_body(h: &HeaderMap) -> bool {
    if h.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match h.get(header::CONTENT_LENGTH) {
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) != Some(0),
        None => false,
    }
}

fn unsupported(detail: String) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        detail,
    )
}

fn check(h: &HeaderMap) -> Result<(), Problem> {
    if let Some(enc) = h.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("(not text)").trim();
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(unsupported(format!(
                "Content-Encoding {enc:?} is not supported: send the body uncompressed"
            )));
        }
    }
    if !has_body(h) {
        return Ok(());
    }
    let Some(ct) = h.get(header::CONTENT_TYPE) else {
        return Err(unsupported(
            "a request body needs Content-Type: application/json".to_owned(),
        ));
    };
    let ct = ct.to_str().unwrap_or("(not text)");
    if is_json(ct) {
        Ok(())
    } else {
        Err(unsupported(format!(
            "Content-Type {ct:?} is not accepted: send the body as application/json"
        )))
    }
}

/// `application/json`, optionally with `charset=utf-8` (any case, any spacing).
fn is_json(ct: &str) -> bool {
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        let Some((k, v)) = p.split_once('=') else {
            return p.trim().is_empty();
        };
        let v = v.trim().trim_matches('"');
        !k.trim().eq_ignore_ascii_case("charset") || v.eq_ignore_ascii_case("utf-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// Request headers, and the status the guard answers (None: it lets the request on).
    type Case = (&'static [(&'static str, &'static str)], Option<u16>);

    #[test]
    fn json_bodies_pass_and_everything_else_is_415() {
        let cases: &[Case] = &[
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "application/json"),
                ],
                None,
            ),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "Application/JSON; charset=UTF-8"),
                ],
                None,
            ),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "application/json;charset=\"utf-8\""),
                ],
                None,
            ),
            (
                &[("content-length", "2"), ("content-type", "text/plain")],
                Some(415),
            ),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "text/plain;charset=UTF-8"),
                ],
                Some(415),
            ),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                Some(415),
            ),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "multipart/form-data; boundary=x"),
                ],
                Some(415),
            ),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "application/json; charset=latin1"),
                ],
                Some(415),
            ),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "application/jsonx"),
                ],
                Some(415),
            ),
            (&[("content-length", "2")], Some(415)),
            (&[("transfer-encoding", "chunked")], Some(415)),
            (&[("content-length", "0")], None),
            (&[], None),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                ],
                Some(415),
            ),
            (&[("content-encoding", "br")], Some(415)),
            (
                &[
                    ("content-length", "2"),
                    ("content-type", "application/json"),
                    ("content-encoding", "identity"),
                ],
                None,
            ),
        ];
        for (pairs, want) in cases {
            let got = check(&headers(pairs)).err().map(|p| p.status.as_u16());
            assert_eq!(got, *want, "{pairs:?}");
        }
    }
}
