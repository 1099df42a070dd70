#![no_main]
//! `dcp_metadata`: see `uc_fuzz::targets::dcp_metadata`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uc_fuzz::targets::dcp_metadata(data));
