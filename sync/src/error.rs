//! Error types of the sync crate.
//!
//! - [`SinkError`]: what a sink's write or setup returns. It carries an
//!   [`ErrorClass`]: *retriable* errors (the service is slow, out of resources,
//!   misconfigured) are retried with backoff forever; *lost* errors (the connection or
//!   the destination's schema is gone) make the driver run the sink's `setup` again and
//!   reload its cursor before the next write; *permanent* errors (the service rejected
//!   this data: a constraint, a type, a value too large) make the driver bisect the
//!   batch down to the poison event and dead-letter it.
//! - [`SyncError`]: what the public functions ([`crate::start`], [`crate::reset`], …)
//!   return.
//!
//! Every message is passed through a [`Redactor`] before it is stored: URLs lose the
//! password of their user-info part and configured secrets are masked, so neither logs,
//! `/v1/health` nor the dead-letter tree ever show a credential.

use std::fmt;

/// Whether retrying the same write can succeed, and what must happen first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The service is overloaded or answers with an error that may pass, or the sink is
    /// misconfigured: retry the same call later.
    Retriable,
    /// The connection or what `setup` created (a schema, tables) is gone: run `setup`
    /// again, reload the cursor, then retry.
    Lost,
    /// The service rejects this data: retrying the same batch cannot succeed.
    Permanent,
}

/// An error of one sink operation, with credentials already stripped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Retriable or permanent.
    pub class: ErrorClass,
    /// Redacted description.
    pub message: String,
}

impl SinkError {
    /// A retriable error (message redacted of URL passwords).
    pub fn retriable(message: impl fmt::Display) -> SinkError {
        SinkError {
            class: ErrorClass::Retriable,
            message: redact_urls(&message.to_string()),
        }
    }

    /// A lost connection or schema (message redacted of URL passwords).
    pub fn lost(message: impl fmt::Display) -> SinkError {
        SinkError {
            class: ErrorClass::Lost,
            message: redact_urls(&message.to_string()),
        }
    }

    /// A permanent error (message redacted of URL passwords).
    pub fn permanent(message: impl fmt::Display) -> SinkError {
        SinkError {
            class: ErrorClass::Permanent,
            message: redact_urls(&message.to_string()),
        }
    }

    /// Whether the service refused the data (no retry can succeed).
    pub fn is_permanent(&self) -> bool {
        self.class == ErrorClass::Permanent
    }

    /// Whether the connection or the destination's schema is gone (`setup` must run again).
    pub fn is_lost(&self) -> bool {
        self.class == ErrorClass::Lost
    }

    /// The same error as retriable (for calls whose failure is never the data's fault).
    pub fn into_retriable(self) -> SinkError {
        SinkError {
            class: ErrorClass::Retriable,
            ..self
        }
    }

    /// The same error with `redactor` applied (for secrets that are not in URLs).
    pub fn redacted(mut self, redactor: &Redactor) -> SinkError {
        self.message = redactor.apply(&self.message);
        self
    }
}

/// Errors of the public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The local store failed.
    #[error("storage: {0}")]
    Storage(#[from] arbor_storage::StorageError),
    /// A sink could not do what was asked.
    #[error("sink {sink}: {source}")]
    Sink {
        /// Sink name.
        sink: String,
        /// What went wrong (redacted).
        source: SinkError,
    },
    /// No sink of that name is configured.
    #[error("unknown or unconfigured sink {name:?} (configured: {configured})")]
    UnknownSink {
        /// The name asked for.
        name: String,
        /// The configured sinks, comma-separated.
        configured: String,
    },
    /// The configuration is invalid.
    #[error("invalid sync configuration: {0}")]
    Config(String),
    /// A reset position beyond the log head.
    #[error("cannot reset {sink} to {seq}: the log head is {head}")]
    BeyondHead {
        /// Sink name.
        sink: String,
        /// Requested position.
        seq: u64,
        /// Current head.
        head: u64,
    },
    /// A background task failed to run.
    #[error("task: {0}")]
    Task(String),
    /// No unresolved dead letter of that sink at that seq.
    #[error("sink {sink} has no unresolved dead letter at seq {seq}")]
    NoDeadLetter {
        /// Sink name.
        sink: String,
        /// The seq asked for.
        seq: u64,
    },
}

impl SyncError {
    pub(crate) fn sink(sink: &str, source: SinkError) -> SyncError {
        SyncError::Sink {
            sink: sink.to_owned(),
            source,
        }
    }
}

/// Masks credentials in text: the password of every `scheme://user:password@host` URL,
/// and each configured secret wherever it appears.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor that also masks each of `secrets` (empty strings are ignored).
    pub fn new<I, S>(secrets: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// `text` with URL passwords and the configured secrets masked as `***`.
    pub fn apply(&self, text: &str) -> String {
        let mut out = redact_urls(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// The password of a `scheme://user:password@host…` URL, as written.
pub fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let pw = &userinfo[userinfo.find(':')? + 1..];
    (!pw.is_empty()).then(|| pw.to_owned())
}

/// Replaces the password of every `scheme://user:password@…` in `text` with `***`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, quote or end of text.
        let end = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\''
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        let t = "connect to postgres://arbor:s3cr%3Et@db.example:5432/x failed; \
                 also redis://:hunter2@127.0.0.1:6379/0 and bolt://neo4j@h:7687";
        let r = redact_urls(t);
        assert!(!r.contains("s3cr"), "{r}");
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("postgres://arbor:***@db.example:5432/x"), "{r}");
        assert!(r.contains("redis://:***@127.0.0.1:6379/0"), "{r}");
        assert!(r.contains("bolt://neo4j@h:7687"), "{r}");
    }

    #[test]
    fn configured_secrets_are_masked_everywhere() {
        let red = Redactor::new(["pa55word", ""]);
        let r = red.apply("authentication failed for neo4j/pa55word (pa55word)");
        assert_eq!(r, "authentication failed for neo4j/*** (***)");
    }

    #[test]
    fn sink_errors_never_carry_a_url_password() {
        let e = SinkError::retriable("io error talking to redis://u:topsecret@localhost/");
        assert!(!e.to_string().contains("topsecret"));
        let e = SinkError::permanent("bad").redacted(&Redactor::new(["bad"]));
        assert_eq!(e.message, "***");
        let top = SyncError::sink("redis", SinkError::retriable("redis://x:pw@h/ down"));
        assert!(!top.to_string().contains("pw@"), "{top}");
    }

    #[test]
    fn url_password_is_found() {
        assert_eq!(
            url_password("postgres://a:b%40c@h/db").as_deref(),
            Some("b%40c")
        );
        assert_eq!(url_password("redis://h:1/"), None);
        assert_eq!(url_password("redis://:pw@h:1/").as_deref(), Some("pw"));
    }

    #[test]
    fn text_without_urls_is_untouched() {
        assert_eq!(redact_urls("plain: a:b@c"), "plain: a:b@c");
        assert_eq!(redact_urls("x://"), "x://");
    }
}
