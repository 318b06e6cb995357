#![no_main]
//! Fuzzes skiff's seccomp_profile parser (bytes as received).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff::fuzz::seccomp_profile(data));
