//! Where a checkpoint lives in object storage: a URL turned into a store client and a key prefix,
//! configured from the environment the way the cloud tools are (`AWS_*`, `GOOGLE_*`, `AZURE_*`).

use crate::error::{ObjectError, Result};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The URL schemes unicheck opens as object storage.
pub const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file"];

/// Whether a command-line argument names object storage (`s3://…`, `gs://…`, `az://…`, `file://…`).
pub fn is_url(arg: &str) -> bool {
    arg.split_once("://")
        .is_some_and(|(s, _)| SCHEMES.contains(&s.to_ascii_lowercase().as_str()))
}

/// A prefix in an object store.
#[derive(Clone)]
pub struct Location {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The same client's part-by-part uploads, where the store has them (not `file://`).
    parts: Option<Arc<dyn MultipartStore>>,
    prefix: Key,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location").field("url", &self.url).finish()
    }
}

/// The one runtime every store request runs on (callers block on it from their own threads).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("uc-object")
            .enable_all()
            .build()
            .expect("a tokio runtime (threads and a timer) can start")
    })
}

/// Seconds from environment variable `var`, else `default`.
fn secs(var: &str, default: u64) -> Duration {
    Duration::from_secs_f64(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(default as f64),
    )
}

/// Retries with exponential backoff for transient errors, bounded by `UC_OBJECT_RETRY_TIMEOUT`.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 5,
        retry_timeout: secs("UC_OBJECT_RETRY_TIMEOUT", 120),
    }
}

impl Location {
    /// Parses `s3://bucket/prefix` (or `gs://`, `az://`, `file://`) and builds its client.
    pub fn parse(arg: &str) -> Result<Location> {
        let bad = |why: &str| ObjectError::BadUrl {
            url: arg.to_string(),
            why: why.to_string(),
        };
        let url = url::Url::parse(arg).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ObjectError::BadUrl {
                url: format!("{}://…", url.scheme()),
                why: "credentials in the URL are not accepted; set them in the environment \
                      (AWS_ACCESS_KEY_ID, …)"
                    .into(),
            });
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "a query or fragment is not part of a checkpoint location",
            ));
        }
        let (scheme, _) = ObjectStoreScheme::parse(&url).map_err(|e| bad(&e.to_string()))?;
        let timeout = secs("UC_OBJECT_TIMEOUT", 30);
        let t = format!("{}ms", timeout.as_millis());
        // The cloud clients: from the environment, the URL, retries and the request timeout.
        macro_rules! cloud {
            ($builder:expr, $key:expr) => {{
                let store = $builder
                    .with_url(arg)
                    .with_retry(retry())
                    .with_config($key(ClientConfigKey::Timeout), &t)
                    .build()
                    .map_err(|e| bad(&crate::error::redact(&e.to_string())))?;
                let store = Arc::new(store);
                (
                    store.clone() as Arc<dyn ObjectStore>,
                    Some(store as Arc<dyn MultipartStore>),
                )
            }};
        }
        let (store, parts) = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                // A custom endpoint (MinIO, Ceph, a local server) serves path-style requests.
                let custom = std::env::var_os("AWS_ENDPOINT_URL").is_some()
                    || std::env::var_os("AWS_ENDPOINT").is_some();
                let b = AmazonS3Builder::from_env();
                let b = if custom {
                    b.with_virtual_hosted_style_request(false)
                } else {
                    b
                };
                cloud!(b, AmazonS3ConfigKey::Client)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                cloud!(
                    GoogleCloudStorageBuilder::from_env(),
                    GoogleConfigKey::Client
                )
            }
            ObjectStoreScheme::MicrosoftAzure => {
                cloud!(MicrosoftAzureBuilder::from_env(), AzureConfigKey::Client)
            }
            ObjectStoreScheme::Local => (
                Arc::new(LocalFileSystem::new()) as Arc<dyn ObjectStore>,
                None,
            ),
            _ => {
                return Err(bad(
                    "unsupported scheme (use s3://, gs://, az:// or file://)",
                ))
            }
        };
        let path = url.path();
        let prefix = Key::parse(path.trim_matches('/')).map_err(|e| bad(&e.to_string()))?;
        let base = arg.trim_end_matches('/').to_string();
        Ok(Location {
            url: base,
            store,
            parts,
            prefix,
        })
    }

    /// The location as the user wrote it (no trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of object `rel` under the prefix.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// The store key of `rel` under the prefix.
    pub(crate) fn key(&self, rel: &str) -> Key {
        let mut k = self.prefix.clone();
        for part in rel.split('/') {
            k = k.join(part);
        }
        k
    }

    /// The store client.
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The client's part-by-part upload interface (`None` for `file://`).
    pub(crate) fn parts(&self) -> Option<&Arc<dyn MultipartStore>> {
        self.parts.as_ref()
    }

    /// Every object under the prefix: path relative to it, size, and a version tag (ETag or
    /// modification time) that changes when the object is rewritten.
    pub fn list(&self) -> Result<Vec<Listed>> {
        use futures::TryStreamExt;
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let items: Vec<object_store::ObjectMeta> = runtime()
            .block_on(self.store.list(prefix).try_collect())
            .map_err(|e| ObjectError::from_store(&self.url, e))?;
        let mut out = Vec::with_capacity(items.len());
        for m in items {
            let full = m.location.as_ref();
            let rel = match self.prefix.as_ref() {
                "" => full,
                p => full
                    .strip_prefix(p)
                    .and_then(|r| r.strip_prefix('/'))
                    .unwrap_or(full),
            };
            out.push(Listed {
                rel: rel.to_string(),
                size: m.size,
                version: m
                    .e_tag
                    .clone()
                    .unwrap_or_else(|| m.last_modified.to_rfc3339()),
                e_tag: m.e_tag.clone(),
            });
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }
}

/// One object found by [`Location::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the prefix (`global_step1/mp_rank_00_model_states.pt`).
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag or modification time.
    pub version: String,
    /// The ETag, when the store gave one (reads then require it: a rewritten object is an error).
    pub e_tag: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_credentials_refused() {
        assert!(is_url("s3://b/p") && is_url("GS://b") && is_url("file:///tmp/x"));
        assert!(!is_url("/tmp/s3://x") && !is_url("ckpt") && !is_url("http://x/y"));
        let e = Location::parse("s3://AKIA:secret@bucket/p").unwrap_err();
        assert!(matches!(e, ObjectError::BadUrl { .. }));
        assert!(!e.to_string().contains("secret"));
        assert!(matches!(
            Location::parse("s3://bucket/p?x=1").unwrap_err(),
            ObjectError::BadUrl { .. }
        ));
    }

    #[test]
    fn keys_join_under_the_prefix() {
        let l = Location::parse("file:///tmp/a/b/").unwrap();
        assert_eq!(l.url(), "file:///tmp/a/b");
        assert_eq!(l.key("x/y.pt").as_ref(), "tmp/a/b/x/y.pt");
        assert_eq!(l.url_of("x"), "file:///tmp/a/b/x");
    }
}
