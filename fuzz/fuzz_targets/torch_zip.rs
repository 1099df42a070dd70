#![no_main]
//! `torch_zip`: see `uc_fuzz::targets::torch_zip`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uc_fuzz::targets::torch_zip(data));
