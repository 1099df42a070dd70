#![no_main]
//! `deepspeed_states`: see `uc_fuzz::targets::deepspeed_states`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| uc_fuzz::targets::deepspeed_states(data));
