//! The test rig against a real registry: images built in Rust are pushed through the registry
//! API and read back, over plain HTTP, with htpasswd basic auth and over TLS.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Read;

use reqwest::StatusCode;
use skiff_test_rig::image::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use skiff_test_rig::{
    Compression, Entry, Format, Image, ImageBuilder, Index, Registry, RegistryClient,
    RegistryOptions, busybox,
};

const ACCEPT_ALL: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

fn decompress(bytes: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::Gzip | Compression::GzipDefault => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Compression::Zstd => zstd::decode_all(bytes).unwrap(),
        Compression::None => bytes.to_vec(),
    }
}

/// Reads an image back by tag and checks manifest, config and every layer byte for byte.
fn assert_round_trip(client: &RegistryClient, repo: &str, tag: &str, image: &Image) {
    let fetched = client.get_manifest(repo, tag, ACCEPT_ALL).unwrap();
    assert_eq!(fetched.bytes, image.manifest.bytes);
    assert_eq!(fetched.media_type, image.manifest.media_type);
    assert_eq!(
        fetched.digest_header.as_deref(),
        Some(image.manifest.digest.to_string().as_str())
    );
    let config = client.get_blob(repo, &image.config.digest).unwrap();
    assert_eq!(config, image.config.bytes);
    for layer in &image.layers {
        assert_eq!(
            client.get_blob(repo, &layer.blob.digest).unwrap(),
            layer.blob.bytes
        );
    }
}

fn layer_file(tar: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == name.as_bytes() {
            let mut out = Vec::new();
            entry.read_to_end(&mut out).unwrap();
            return Some(out);
        }
    }
    None
}

#[test]
fn busybox_fixture_round_trips_over_plain_http() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    assert_eq!(client.ping().unwrap(), StatusCode::OK);
    let image = busybox::image(Format::Oci, Compression::Gzip).unwrap();
    client
        .push_image("fixtures/busybox", "latest", &image)
        .unwrap();
    assert_round_trip(&client, "fixtures/busybox", "latest", &image);

    // The layer is a real busybox root: the binary, its applet links, passwd with a user.
    let blob = client
        .get_blob("fixtures/busybox", &image.layers[0].blob.digest)
        .unwrap();
    let tar = decompress(&blob, Compression::Gzip);
    assert_eq!(rootfs_cache::Digest::of(&tar), image.layers[0].diff_id);
    let binary = layer_file(&tar, "bin/busybox").expect("bin/busybox in the layer");
    assert_eq!(&binary[..4], b"\x7fELF");
    let passwd = String::from_utf8(layer_file(&tar, "etc/passwd").unwrap()).unwrap();
    assert!(passwd.contains("\nuser:x:1000:1000:"), "{passwd}");
    let mut archive = tar::Archive::new(tar.as_slice());
    let sh = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path_bytes().as_ref() == b"bin/sh")
        .expect("bin/sh applet link");
    assert_eq!(sh.link_name_bytes().unwrap().as_ref(), b"/bin/busybox");
}

#[test]
fn basic_auth_registry_refuses_anonymous_and_wrong_password() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    })
    .unwrap();
    let anonymous = RegistryClient::new(&registry.url(), None, None).unwrap();
    assert_eq!(anonymous.ping().unwrap(), StatusCode::UNAUTHORIZED);
    let wrong = RegistryClient::new(&registry.url(), None, Some(("alice", "nope"))).unwrap();
    assert_eq!(wrong.ping().unwrap(), StatusCode::UNAUTHORIZED);

    let client = registry.client().unwrap();
    assert_eq!(client.ping().unwrap(), StatusCode::OK);
    let image = busybox::image(Format::Docker, Compression::Gzip).unwrap();
    client.push_image("private/busybox", "1", &image).unwrap();
    assert_round_trip(&client, "private/busybox", "1", &image);
    let err = anonymous
        .get_manifest("private/busybox", "1", ACCEPT_ALL)
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err:#}");
}

#[test]
fn tls_registry_is_trusted_only_with_the_test_ca() {
    let registry = Registry::start_with(RegistryOptions {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    assert!(registry.url().starts_with("https://"));
    let untrusted = RegistryClient::new(&registry.url(), None, None).unwrap();
    assert!(
        untrusted.ping().is_err(),
        "a certificate from an unknown CA must be refused"
    );

    let client = registry.client().unwrap();
    assert_eq!(client.ping().unwrap(), StatusCode::OK);
    let image = ImageBuilder::new(Format::Oci)
        .layer(&[Entry::file("hello.txt", "over TLS")], Compression::Zstd)
        .unwrap()
        .build()
        .unwrap();
    client.push_image("tls/hello", "v1", &image).unwrap();
    assert_round_trip(&client, "tls/hello", "v1", &image);
    assert!(
        std::fs::read_to_string(registry.ca_file().unwrap())
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
}

#[test]
fn every_compression_and_config_field_survives_the_registry() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    for (format, compression) in [
        (Format::Oci, Compression::Gzip),
        (Format::Oci, Compression::Zstd),
        (Format::Oci, Compression::None),
        (Format::Docker, Compression::Gzip),
        (Format::Docker, Compression::None),
    ] {
        let image = ImageBuilder::new(format)
            .layer(
                &[Entry::dir("app/"), Entry::file("app/a", "first")],
                compression,
            )
            .unwrap()
            .layer(
                &[Entry::file("app/b", "second"), Entry::whiteout("app/a")],
                compression,
            )
            .unwrap()
            .entrypoint(&["/bin/sh", "-c"])
            .cmd(&["echo hi"])
            .env(&["A=1", "B=two"])
            .working_dir("/app")
            .user("1000:1000")
            .build()
            .unwrap();
        let tag = format!("{format:?}-{compression:?}").to_lowercase();
        client.push_image("matrix/app", &tag, &image).unwrap();
        assert_round_trip(&client, "matrix/app", &tag, &image);

        let manifest: serde_json::Value = serde_json::from_slice(
            &client
                .get_manifest("matrix/app", &tag, ACCEPT_ALL)
                .unwrap()
                .bytes,
        )
        .unwrap();
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            compression.media_type(format)
        );
        for layer in &image.layers {
            let blob = client.get_blob("matrix/app", &layer.blob.digest).unwrap();
            assert_eq!(
                rootfs_cache::Digest::of(&decompress(&blob, compression)),
                layer.diff_id
            );
        }
        let config: serde_json::Value =
            serde_json::from_slice(&client.get_blob("matrix/app", &image.config.digest).unwrap())
                .unwrap();
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c"])
        );
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["echo hi"]));
        assert_eq!(config["config"]["Env"], serde_json::json!(["A=1", "B=two"]));
        assert_eq!(config["config"]["WorkingDir"], "/app");
        assert_eq!(config["config"]["User"], "1000:1000");
        assert_eq!(
            config["rootfs"]["diff_ids"][1],
            image.layers[1].diff_id.to_string()
        );
    }
}

#[test]
fn multi_platform_index_and_manifest_list_resolve_to_each_platform() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    for format in [Format::Oci, Format::Docker] {
        let index = Index::amd64_and_arm64(format, |arch| format!("built for {arch}")).unwrap();
        let tag = format!("{format:?}").to_lowercase();
        client.push_index("multi/arch", &tag, &index).unwrap();

        let fetched = client.get_manifest("multi/arch", &tag, ACCEPT_ALL).unwrap();
        assert_eq!(fetched.bytes, index.manifest.bytes);
        assert_eq!(fetched.media_type, index.manifest.media_type);
        let listed: serde_json::Value = serde_json::from_slice(&fetched.bytes).unwrap();
        assert_eq!(listed["manifests"][1]["platform"]["variant"], "v8");
        for image in &index.images {
            assert_round_trip(
                &client,
                "multi/arch",
                &image.manifest.digest.to_string(),
                image,
            );
        }
    }
}

#[test]
fn hostile_entries_reach_the_registry_unchanged() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let hostile = [
        Entry::symlink("evil", "/etc"),
        Entry::file("evil/passwd", "owned"),
        Entry::file("../outside", "x"),
        Entry::hardlink("hl", "/etc/shadow"),
    ];
    let image = ImageBuilder::new(Format::Oci)
        .layer(&hostile, Compression::None)
        .unwrap()
        .build()
        .unwrap();
    client.push_image("hostile/layer", "1", &image).unwrap();
    let tar = client
        .get_blob("hostile/layer", &image.layers[0].blob.digest)
        .unwrap();
    assert_eq!(layer_file(&tar, "../outside").as_deref(), Some(&b"x"[..]));
    assert_eq!(
        layer_file(&tar, "evil/passwd").as_deref(),
        Some(&b"owned"[..])
    );
}
