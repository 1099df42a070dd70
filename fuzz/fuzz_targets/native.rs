#![no_main]
//! `native`: see `uc_fuzz::targets::native`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uc_fuzz::targets::native(data));
