//! unicheck's object storage: checkpoints under `s3://`, `gs://`, `az://` or `file://` prefixes,
//! read by ranged GETs of exactly the bytes a conversion touches and written with the files that
//! mark a checkpoint complete last. Built on the `object_store` crate; configured from the
//! environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`); no credential ever appears in an error.
//!
//! - [`location`]: a URL → a store client and a key prefix ([`Location`], [`is_url`]).
//! - [`mirror`]: a remote checkpoint as a local folder of lazily filled stand-ins ([`Mirror`]).
//! - [`upload`]: the completion markers ([`MARKERS`]) and the check that a prefix holds none.
//! - [`shared_upload`]: a finished local folder sent to a prefix by one or several cooperating
//!   processes, markers last ([`upload_shared`]).
//! - [`error`]: [`ObjectError`], naming the object's URL.
//! - `ranges`: byte-range sets and request coalescing.

// Byte-range lists (`&[start..end]`) are what the lazy-file hooks take; one range is a list too.
#![allow(clippy::single_range_in_vec_init)]

pub mod error;
pub mod location;
pub mod mirror;
mod ranges;
pub mod shared_upload;
#[cfg(feature = "test-server")]
pub mod test_server;
pub mod upload;

pub use error::{find_in_io, ObjectError, Result};
pub use location::{is_url, Listed, Location};
pub use mirror::{cache_budget, cache_dir, FetchStats, Mirror};
pub use shared_upload::{discard_upload, upload_shared, UploadEnd};
pub use upload::{check_free, UploadStats, MARKERS};
