#![no_main]
//! Fuzzes what a lazy read takes from a registry: layer tables, index artifacts, referrers
//! lists, and gzip streams inflated from their start or from a checkpoint.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    skiff::fuzz::lazy_index(data);
});
