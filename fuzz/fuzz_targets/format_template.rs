#![no_main]
//! Fuzzes skiff's `--format` templates: template text, a NUL, then a JSON value.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    skiff::fuzz::format_template(data);
});
