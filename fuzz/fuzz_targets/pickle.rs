#![no_main]
//! `pickle`: see `uc_fuzz::targets::pickle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uc_fuzz::targets::pickle(data));
