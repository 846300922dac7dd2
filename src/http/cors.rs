//! CORS: which other origins' pages may call the API and open its streams
//! (`--cors-origin`, repeatable; none by default, so a browser keeps every other origin's
//! page from reading arbor's answers).
//!
//! Each origin is exact (`https://app.example.com`, `http://127.0.0.1:5173`): scheme,
//! host and an optional port, nothing else; `*` is refused (with tokens in play, say who
//! may call). The layer answers preflights itself, before authentication (a preflight
//! carries no token), and allows the methods the API has, `Authorization`,
//! `Content-Type` and `Last-Event-ID`; it exposes `Retry-After` and `WWW-Authenticate`
//! to the page. No cookies are involved (bearer tokens), so credentials are not allowed.
//! EventSource needs nothing more: a stream request is a simple GET that carries
//! `Origin`, and `?access_token=` when auth is on.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Checks one `--cors-origin` value and returns it as browsers send it in `Origin`.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "--cors-origin {s:?}: {why} (give an origin such as https://app.example.com \
             or http://127.0.0.1:5173)"
        ))
    };
    let Some((scheme, rest)) = s.split_once("://") else {
        return bad("no scheme");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() {
        return bad("no host");
    }
    if rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return bad("an origin is a scheme, a host and a port: no path, query, user or wildcard");
    }
    // An IPv6 host is bracketed: the port, if any, follows the bracket.
    let port = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => None,
            Some((_, after)) => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return bad("junk after the IPv6 host"),
            },
            None => return bad("an unclosed IPv6 bracket"),
        },
        None => rest.split_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return bad("the port is not a number");
    }
    if HeaderValue::from_str(s).is_err() {
        return bad("not a valid header value");
    }
    Ok(s.to_ascii_lowercase())
}

/// The layer for `origins` (already checked by [`parse_origin`]); None when there is
/// none, so that no CORS header is ever sent.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_exact_and_anything_else_is_refused() {
        for ok in [
            "https://app.example.com",
            "http://127.0.0.1:5173",
            "http://[::1]:8080",
            "HTTPS://App.Example.com",
        ] {
            assert!(parse_origin(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_origin("HTTPS://App.Example.com").as_deref(),
            Ok("https://app.example.com")
        );
        for bad in [
            "*",
            "app.example.com",
            "ftp://example.com",
            "https://",
            "https://example.com/",
            "https://example.com/app",
            "https://*.example.com",
            "https://user@example.com",
            "https://example.com:port",
            "https://example.com?x",
        ] {
            let err = parse_origin(bad).expect_err(bad);
            assert!(err.contains("--cors-origin"), "{err}");
        }
    }
}
