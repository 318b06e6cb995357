#![no_main]
//! Fuzzes skiff's token_reply parser (bytes as received).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff::fuzz::token_reply(data));
