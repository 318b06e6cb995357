#![no_main]
//! Fuzzes skiff's registry_config parser (text input).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        skiff::fuzz::registry_config(s);
    }
});
