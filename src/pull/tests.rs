//! The pipeline against an in-memory registry and a store in a temp dir: no network, no
//! registry process. Layers are gzip tars built here.

use std::io::Write;
use std::sync::Arc;

use rootfs_cache::{Store, StoreError};

use super::{PullError, PullOptions, PullReport, pull_from};
use crate::Digest;
use crate::progress::{Progress, Silent};
use crate::reference::Reference;
use crate::registry::RegistryError;
use crate::registry::memory::MemoryRegistry;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const REGISTRY: &str = "registry.test";
const REPOSITORY: &str = "app";

/// A layer: its gzip bytes and its diff_id (the digest of the tar).
struct Layer {
    gz: Vec<u8>,
    diff_id: Digest,
}

impl Layer {
    fn digest(&self) -> Digest {
        Digest::of(&self.gz)
    }
}

/// A gzip tar of `files` (path, content).
fn layer(files: &[(&str, &[u8])]) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *content).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    Layer {
        gz: gz.finish().unwrap(),
        diff_id: Digest::of(&tar),
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// An image manifest for `arch` with these layers, its config and layers stored as blobs;
/// returns the manifest's bytes.
fn image_manifest(registry: &MemoryRegistry, arch: &str, layers: &[&Layer]) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
    });
    let config = serde_json::to_vec(&config).unwrap();
    registry.put_blob(&config);
    for l in layers {
        registry.put_blob(&l.gz);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER_GZIP, &l.gz)).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&manifest).unwrap()
}

/// Pushes a single-platform image for this host as `app:tag`; returns its manifest digest.
fn push_image(registry: &MemoryRegistry, tag: &str, layers: &[&Layer]) -> Digest {
    let manifest = image_manifest(registry, crate::host::oci_architecture(), layers);
    registry.put_manifest(REPOSITORY, Some(tag), &manifest, OCI_MANIFEST)
}

/// Pushes an index as `app:tag` over one image per architecture; returns the index's digest
/// and the manifests' digests, in `arches` order.
fn push_index(registry: &MemoryRegistry, tag: &str, arches: &[&str]) -> (Digest, Vec<Digest>) {
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for arch in arches {
        let l = layer(&[(&format!("etc/{arch}"), arch.as_bytes())]);
        let manifest = image_manifest(registry, arch, &[&l]);
        digests.push(registry.put_manifest(REPOSITORY, None, &manifest, OCI_MANIFEST));
        let mut entry = descriptor(OCI_MANIFEST, &manifest);
        entry["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        entries.push(entry);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    let index = serde_json::to_vec(&index).unwrap();
    (
        registry.put_manifest(REPOSITORY, Some(tag), &index, OCI_INDEX),
        digests,
    )
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

async fn pull(
    registry: &MemoryRegistry,
    store: &Store,
    tag: &str,
) -> Result<PullReport, PullError> {
    let reference = Reference::parse(&format!("{REGISTRY}/{REPOSITORY}:{tag}")).unwrap();
    let progress: Arc<dyn Progress> = Arc::new(Silent);
    pull_from(
        registry,
        store,
        &reference,
        &PullOptions::default(),
        &progress,
    )
    .await
}

/// Nothing of a failed pull is in the store: no image, no tag, no layer.
fn assert_nothing_recorded(store: &Store, layer: &Layer) {
    assert!(store.images().unwrap().is_empty());
    assert!(store.refs().unwrap().is_empty());
    assert!(!store.has_layer(&layer.diff_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_layer_image_is_pulled_and_recorded() {
    let registry = MemoryRegistry::default();
    let l = layer(&[("etc/hello", b"hello\n"), ("bin/tool", b"#!/bin/sh\n")]);
    let manifest = push_image(&registry, "1", &[&l]);
    let (_dir, store) = store();

    let report = pull(&registry, &store, "1").await.unwrap();

    assert_eq!(report.manifest, manifest);
    assert_eq!(report.index, None);
    assert_eq!((report.downloaded_layers, report.cached_layers), (1, 0));
    assert_eq!(report.downloaded_bytes, l.gz.len() as u64);
    let record = store.image(&manifest).unwrap().expect("image record");
    assert_eq!(record.config, report.config);
    assert_eq!(record.layers.len(), 1);
    assert_eq!(record.layers[0].digest, l.digest());
    assert_eq!(record.layers[0].diff_id, l.diff_id);
    assert_eq!(record.layers[0].media_type, OCI_LAYER_GZIP);
    let tag = store
        .get_ref(REGISTRY, REPOSITORY, "1")
        .unwrap()
        .expect("tag");
    assert_eq!((tag.manifest, tag.index), (manifest, None));
    assert!(store.blob(&manifest).unwrap().is_some());
    assert!(store.blob(&report.config).unwrap().is_some());
    assert!(store.has_layer(&l.diff_id));
    assert_eq!(registry.streamed(), vec![l.digest()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pull_downloads_nothing() {
    let registry = MemoryRegistry::default();
    let (a, b) = (layer(&[("a", b"a")]), layer(&[("b", b"b")]));
    push_image(&registry, "1", &[&a, &b]);
    let (_dir, store) = store();

    let first = pull(&registry, &store, "1").await.unwrap();
    let second = pull(&registry, &store, "1").await.unwrap();

    assert_eq!((first.downloaded_layers, first.cached_layers), (2, 0));
    assert_eq!((second.downloaded_layers, second.cached_layers), (0, 2));
    assert_eq!(second.downloaded_bytes, 0);
    assert_eq!(second.manifest, first.manifest);
    assert_eq!(registry.streamed().len(), 2, "each layer downloaded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_gives_the_host_platform() {
    let registry = MemoryRegistry::default();
    let host = crate::host::oci_architecture();
    let other = if host == "amd64" { "s390x" } else { "amd64" };
    let (index, manifests) = push_index(&registry, "multi", &[other, host]);
    let (_dir, store) = store();

    let report = pull(&registry, &store, "multi").await.unwrap();

    assert_eq!(report.index, Some(index));
    assert_eq!(report.manifest, manifests[1]);
    assert_eq!(report.downloaded_layers, 1, "only the host's layer");
    let tag = store
        .get_ref(REGISTRY, REPOSITORY, "multi")
        .unwrap()
        .unwrap();
    assert_eq!((tag.manifest, tag.index), (manifests[1], Some(index)));
    assert!(store.blob(&index).unwrap().is_some());
    assert!(store.image(&manifests[0]).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_without_the_host_platform_says_what_it_has() {
    let registry = MemoryRegistry::default();
    let host = crate::host::oci_architecture();
    let others: Vec<&str> = ["riscv64", "s390x", "ppc64le"]
        .into_iter()
        .filter(|a| *a != host)
        .take(2)
        .collect();
    push_index(&registry, "multi", &others);
    let (_dir, store) = store();

    let err = pull(&registry, &store, "multi").await.unwrap_err();

    match &err {
        PullError::NoPlatform {
            platform,
            available,
            ..
        } => {
            assert!(platform.starts_with(&format!("linux/{host}")), "{err}");
            assert_eq!(
                *available,
                format!("linux/{}, linux/{}", others[0], others[1])
            );
        }
        other => panic!("expected NoPlatform, got {other:?}"),
    }
    assert!(store.images().unwrap().is_empty());
    assert!(registry.streamed().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_with_wrong_bytes_fails_and_leaves_nothing() {
    let registry = MemoryRegistry::default();
    let l = layer(&[("etc/hello", b"hello\n")]);
    push_image(&registry, "1", &[&l]);
    // Served for the layer's digest: a valid gzip tar, of something else.
    registry.put_blob_as(l.digest(), &layer(&[("etc/evil", b"evil\n")]).gz);
    let (_dir, store) = store();

    let err = pull(&registry, &store, "1").await.unwrap_err();

    let PullError::Store { source, .. } = &err else {
        panic!("expected a store error, got {err:?}");
    };
    match source.as_ref() {
        StoreError::DigestMismatch {
            layer, expected, ..
        } => assert_eq!((*layer, *expected), (l.digest(), l.digest()), "{err}"),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_nothing_recorded(&store, &l);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_blob_fails_the_pull_with_the_registry_error() {
    let registry = MemoryRegistry::default();
    let (good, bad) = (layer(&[("good", b"1")]), layer(&[("bad", b"2")]));
    push_image(&registry, "1", &[&good, &bad]);
    registry.fail_blob(bad.digest(), "connection reset (test)");
    let (_dir, store) = store();

    let err = pull(&registry, &store, "1").await.unwrap_err();

    match &err {
        PullError::Registry {
            source: RegistryError::Download { digest, reason, .. },
            ..
        } => {
            assert_eq!(*digest, bad.digest());
            assert_eq!(reason, "connection reset (test)");
        }
        other => panic!("expected the registry's error, got {other:?}"),
    }
    assert_nothing_recorded(&store, &bad);
}
