#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn::fuzz_targets::run("key", data));
