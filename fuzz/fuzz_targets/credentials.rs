#![no_main]
//! Fuzzes credentials: the first byte picks an auth file (even) or a helper's reply (odd).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        skiff::fuzz::credentials_file(body);
    } else if let Ok(s) = std::str::from_utf8(body) {
        skiff::fuzz::helper_reply(s);
    }
});
