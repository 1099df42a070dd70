#![no_main]
//! `deepspeed_metadata`: see `uc_fuzz::targets::deepspeed_metadata`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uc_fuzz::targets::deepspeed_metadata(data));
