//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not part of the API): each
//! feeds untrusted bytes to one of skiff's parsers the way skiff itself does. A parser may
//! refuse its input; it must never panic, hang or run away with memory.

use std::path::Path;

use crate::image;
use crate::launch::seccomp::profile::{Host, Profile};
use crate::reference::Reference;
use crate::registry::{auth, config, credentials, session};

/// An image reference as typed on the command line; a parsed one prints and re-parses to
/// the same reference.
pub fn reference(s: &str) {
    if let Ok(r) = Reference::parse(s) {
        let _ = (r.api_registry(), r.api_reference(), r.familiar());
        let again = Reference::parse(&r.to_string());
        assert!(again.is_ok(), "{r} does not re-parse: {again:?}");
    }
}

/// A manifest or index body with its Content-Type; an index then goes through the platform
/// choice and a manifest's descriptors through the digest checks.
pub fn manifest(bytes: &[u8], content_type: Option<&str>) {
    match image::parse(bytes, content_type) {
        Ok(image::Fetched::Index(index)) => {
            for want in [
                "linux/amd64",
                "linux/arm64/v8",
                "linux/arm/v7",
                "windows/amd64",
            ] {
                if let Some(platform) = image::parse_platform(want) {
                    if let Ok(d) = image::select_platform(&index, &platform) {
                        let _ = image::digest_of(d, "manifest");
                    }
                }
            }
        }
        Ok(image::Fetched::Manifest(m)) => {
            let _ = image::digest_of(m.config(), "config");
            for layer in m.layers() {
                let _ = image::digest_of(layer, "layer");
            }
        }
        Err(_) => {}
    }
}

/// An image config blob, and the run settings taken from it.
pub fn image_config(bytes: &[u8]) {
    if let Ok(config) = image::ImageConfig::parse(bytes) {
        let _ = config.run_config();
    }
}

/// A `WWW-Authenticate` header value.
pub fn challenge(header: &str) {
    let _ = auth::parse_challenge(header);
}

/// A token endpoint's reply body.
pub fn token_reply(body: &[u8]) {
    let _ = session::parse_token_reply(body);
}

/// A docker auth file (`config.json`), looked up for a few registries as `lookup` does (without
/// running the helpers it names).
pub fn credentials_file(bytes: &[u8]) {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    for registry in ["docker.io", "localhost:5000", "registry.example", ""] {
        let _ = doc
            .get("credHelpers")
            .and_then(|h| credentials::find_key(h, registry));
        if let Some(entry) = doc
            .get("auths")
            .and_then(|a| credentials::find_key(a, registry))
        {
            let _ = credentials::parse_entry(entry, Path::new("config.json"));
        }
    }
}

/// A credential helper's `get` output.
pub fn helper_reply(stdout: &str) {
    let _ = credentials::parse_helper_reply(stdout);
}

/// skiff's `config.toml`, and the lookups a pull makes in it.
pub fn registry_config(text: &str) {
    if let Ok(c) = config::Config::parse(text) {
        for (registry, repository) in [("docker.io", "library/busybox"), ("localhost:5000", "a/b")]
        {
            let _ = c.entry_for(registry, repository);
            let _ = c.allows_http(registry);
        }
    }
}

/// A seccomp profile in docker's format, resolved for two bounding sets on this host.
pub fn seccomp_profile(bytes: &[u8]) {
    let Ok(profile) = serde_json::from_slice::<Profile>(bytes) else {
        return;
    };
    let host = Host::current();
    let _ = profile.resolve(&[], &host);
    let _ = profile.resolve(&["CAP_SYS_ADMIN".into(), "sys_ptrace".into()], &host);
}

/// A `--format` template and a value: the bytes before the first NUL are the template, the
/// rest a JSON value (a sample container when there is no NUL or no valid JSON). The template
/// is parsed both as `ps`/`images` and as `inspect` read it, and rendered alone and as a table.
#[cfg(feature = "cli")]
pub fn format_template(data: &[u8]) {
    use crate::template::Template;

    let (text, json) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let value = serde_json::from_slice(json).unwrap_or_else(|_| {
        serde_json::json!({
            "ID": "4f1c", "Names": "web", "Args": ["-c", "x"], "Size": 1.5,
            "State": {"Running": true, "ExitCode": 0, "Health": null},
            "Labels": {"a": "1", "com.example": "\t\n"}, "Mounts": [{"Source": "/a"}],
        })
    });
    for template in [Template::parse(text), Template::parse_raw(text)]
        .into_iter()
        .flatten()
    {
        let one = template.render(&value);
        let all = template.render_all(std::slice::from_ref(&value), &[("ID", "CONTAINER ID")]);
        if !template.is_table() {
            // Without `table`, rendering all is each rendering and a newline.
            if let (Ok(one), Ok(all)) = (&one, &all) {
                assert_eq!(format!("{one}\n"), *all);
            }
        }
    }
}

/// What a lazy read takes from a registry: the first byte picks a parser; the rest is a layer
/// table (then every file is read from a blob of zeros, as a tampered table would be used, and
/// the image's tree is built of it as two layers), an
/// index artifact and a referrers list (checked against a fixed subject), or a gzip stream
/// inflated from its start and from a checkpoint the rest of the input describes.
pub fn lazy_index(data: &[u8]) {
    use crate::lazy::{artifact, inflate, toc};
    use std::io::Read as _;

    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => {
            if let Ok(table) = toc::LayerToc::parse(rest) {
                let blob = vec![0u8; 1 << 16];
                let fetch = |r: &[(crate::Digest, u64, u64)]| {
                    Ok(r.iter()
                        .map(|(_, a, b)| {
                            let (a, b) = ((*a).min(1 << 16) as usize, (*b).min(1 << 16) as usize);
                            blob[a..b.max(a)].to_vec()
                        })
                        .collect())
                };
                let chunks = crate::lazy::chunks::Chunks::new(1 << 20);
                for entry in table.entries.iter().take(64) {
                    let _ = chunks.read(&table, entry, &fetch);
                }
                let _ = table.longest_span();
                // The image's tree, the table as two layers, one over the other.
                let table = std::sync::Arc::new(table);
                let layer = || crate::lazy::fs::Layer {
                    toc: table.clone(),
                    fetch: Box::new(|_, _, _| {
                        Err(crate::lazy::LazyError::Mount {
                            reason: "fuzzing".into(),
                        })
                    }),
                    push: None,
                };
                let _ = crate::lazy::fs::ImageFs::new(vec![layer(), layer()]);
            }
        }
        1 => {
            let subject = crate::Digest::of(b"subject");
            let _ = artifact::tables(rest, &subject);
            let _ = artifact::find_ours(rest);
            let _ = artifact::add_referrer(Some(rest), &subject, 1);
        }
        _ => {
            let limit = 1 << 22;
            let _ = inflate::Inflater::new(rest)
                .recording(1 << 12)
                .take(limit)
                .read_to_end(&mut Vec::new());
            let (head, stream) = rest.split_at(rest.len().min(4));
            let mut bytes = [0u8; 4];
            bytes[..head.len()].copy_from_slice(head);
            let point = inflate::Checkpoint {
                input: 0,
                output: u64::from(bytes[0]) << 8,
                bits: bytes[1] % 8,
                bit_buf: bytes[2],
                window: vec![bytes[3]; usize::from(bytes[3]) * 128],
                window_at: None,
            };
            if let Ok(resumed) = inflate::Inflater::resume(stream, &point) {
                let _ = resumed.take(limit).read_to_end(&mut Vec::new());
            }
        }
    }
}
