//! [`ObjectError`]: what went wrong with which object, never with a credential in it.

use std::path::PathBuf;

/// Errors of object storage access. Every variant names the object's URL (`s3://bucket/key`).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The argument looks like a URL but is not one this build can open.
    #[error("`{url}`: {why}")]
    BadUrl { url: String, why: String },
    /// No object (or nothing under the prefix) where one was expected.
    #[error("{url}: no such object (or nothing under this prefix)")]
    NotFound { url: String },
    /// The store refused the credentials or the request (HTTP 401/403).
    #[error("{url}: access refused by the store: {why}")]
    Denied { url: String, why: String },
    /// The store could not be reached, stalled past the timeout, or kept failing after retries.
    #[error("{url}: the store did not answer: {why}")]
    Unreachable { url: String, why: String },
    /// Any other failure the store reported.
    #[error("{url}: {why}")]
    Failed { url: String, why: String },
    /// The output prefix already holds a checkpoint (its completion marker is there).
    #[error("{url}: already holds a finished checkpoint (`{marker}` is there); choose another prefix or delete it first")]
    Exists { url: String, marker: String },
    /// A remote object changed size while it was being read.
    #[error("{url}: the object changed while it was read ({why})")]
    Changed { url: String, why: String },
    /// An environment variable that configures this crate holds a value it cannot use.
    #[error("{var}: {why}")]
    Config { var: String, why: String },
    /// Local file-system trouble (the range cache, a file to upload).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `Result` with [`ObjectError`].
pub type Result<T, E = ObjectError> = std::result::Result<T, E>;

/// A closure mapping an `io::Error` to [`ObjectError::Io`] at `path`.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ObjectError {
    let path = path.into();
    move |source| ObjectError::Io { path, source }
}

impl ObjectError {
    /// Classifies an `object_store` error about `url`.
    pub(crate) fn from_store(url: &str, e: object_store::Error) -> ObjectError {
        use object_store::Error as E;
        let url = url.to_string();
        let why = redact(&one_line(&e));
        match e {
            E::NotFound { .. } => ObjectError::NotFound { url },
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                ObjectError::Denied { url, why }
            }
            ref e => match transport_failure(e) {
                // No answer: refused or dropped connections, timeouts (after the retries).
                Some(true) => ObjectError::Unreachable { url, why },
                Some(false) => ObjectError::Failed { url, why },
                // An answer: object_store types 401/403 on most requests, not all (a listing's).
                None if why.contains(" 403 ")
                    || why.contains(" 401 ")
                    || why.contains("Forbidden") =>
                {
                    ObjectError::Denied { url, why }
                }
                None if looks_unreachable(&why) => ObjectError::Unreachable { url, why },
                None => ObjectError::Failed { url, why },
            },
        }
    }

    /// Wraps the error for an `io::Error`-speaking caller (the lazy file hook) without losing it.
    pub(crate) fn into_io(self) -> std::io::Error {
        let kind = match &self {
            ObjectError::NotFound { .. } => std::io::ErrorKind::NotFound,
            ObjectError::Denied { .. } => std::io::ErrorKind::PermissionDenied,
            ObjectError::Unreachable { .. } => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }
}

/// Finds an [`ObjectError`] inside an `io::Error` made by [`ObjectError::into_io`].
pub fn find_in_io(e: &std::io::Error) -> Option<&ObjectError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ObjectError>())
}

/// Whether the HTTP client failed before any answer came (`Some(true)`: no connection, a timeout,
/// an interrupted request; `Some(false)`: an answer it could not read), found in `e`'s sources;
/// `None` when the failure is not the transport's (a status, or a store without HTTP).
fn transport_failure(e: &object_store::Error) -> Option<bool> {
    use object_store::client::{HttpError, HttpErrorKind as K};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<HttpError>() {
            return Some(matches!(
                h.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            ));
        }
        cur = c.source();
    }
    None
}

/// For failures without a typed transport error: words of a connection that never answered.
fn looks_unreachable(why: &str) -> bool {
    let w = why.to_ascii_lowercase();
    [
        "connect",
        "timed out",
        "timeout",
        "connection",
        "dns",
        "reset",
        "closed",
    ]
    .iter()
    .any(|k| w.contains(k))
}

/// The error and its sources on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s.replace('\n', " ")
}

/// Removes every credential value found in the environment from `s` (defence in depth: the store
/// errors we pass on name URLs and statuses, never keys, but a proxy's message might echo one).
pub(crate) fn redact(s: &str) -> String {
    redact_with(s, std::env::vars())
}

/// Names of environment variables whose values are secrets (or hold one): AWS's secret key and
/// session token, Azure's account key and SAS, Google's service-account key, passwords.
const SECRET_NAMES: &[&str] = &[
    "SECRET",
    "TOKEN",
    "ACCESS_KEY",
    "ACCOUNT_KEY",
    "SERVICE_ACCOUNT",
    "PRIVATE_KEY",
    "PASSWORD",
    "SAS",
    "CREDENTIALS",
];

fn redact_with(s: &str, vars: impl Iterator<Item = (String, String)>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        let secret = SECRET_NAMES.iter().any(|w| k.contains(w));
        if secret && v.len() >= 4 && out.contains(&v) {
            out = out.replace(&v, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ObjectError;
    use object_store::client::{HttpError, HttpErrorKind};

    fn store_error(kind: HttpErrorKind, msg: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(kind, std::io::Error::other(msg.to_string()))),
        }
    }

    #[test]
    fn transport_failures_are_classified_by_kind_not_words() {
        let e = |k, m| ObjectError::from_store("s3://b/k", store_error(k, m));
        assert!(matches!(
            e(HttpErrorKind::Timeout, "x"),
            ObjectError::Unreachable { .. }
        ));
        assert!(matches!(
            e(HttpErrorKind::Connect, "x"),
            ObjectError::Unreachable { .. }
        ));
        // An answer that could not be decoded is no silent store, whatever its text says.
        assert!(matches!(
            e(HttpErrorKind::Decode, "connection header"),
            ObjectError::Failed { .. }
        ));
    }
    #[test]
    fn secret_values_of_every_cloud_are_redacted() {
        let vars = [
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-1"),
            ("AWS_SESSION_TOKEN", "aws-token-2"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "azure-key-3"),
            ("AZURE_STORAGE_SAS_KEY", "azure-sas-4"),
            ("GOOGLE_SERVICE_ACCOUNT_KEY", "{google-key-5}"),
            ("AWS_REGION", "us-east-1"),
        ];
        let msg = "aws-secret-1 aws-token-2 azure-key-3 azure-sas-4 {google-key-5} us-east-1";
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            super::redact_with(msg, vars),
            "<redacted> <redacted> <redacted> <redacted> <redacted> us-east-1"
        );
    }
}
