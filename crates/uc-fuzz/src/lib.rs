//! The bodies of unicheck's fuzz targets, one function per target, each taking arbitrary bytes and
//! required never to panic, hang or allocate without bound. cargo-fuzz (`fuzz/`) wraps each in
//! `fuzz_target!`; this crate's tests replay the seed corpus and every crash ever found through them.
//!
//! - [`targets`]: the target bodies and [`TARGETS`], their names.
//! - [`corpus`]: seed inputs built from the real fixtures in `../shared/fixtures`.

pub mod corpus;
pub mod targets;

pub use targets::TARGETS;
