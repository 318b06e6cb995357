#![no_main]
//! Fuzzes skiff's image_config parser (bytes as received).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff::fuzz::image_config(data));
