//! skiff embedded as a library: everything the CLI does, through `skiff::Engine`.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use skiff::progress::ProgressMode;
use skiff::registry::AuthFiles;
use skiff::{Engine, EngineOptions, Reference};
use skiff_test_rig::{Compression, Format, Registry, busybox};

#[test]
fn engine_pulls_lists_inspects_removes_and_collects() {
    let registry = Registry::start().unwrap();
    let image = busybox::image(Format::Oci, Compression::Zstd).unwrap();
    registry.push_image("embed/busybox", "1", &image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(EngineOptions {
        root: Some(dir.path().join("store")),
        config_path: Some(dir.path().join("none.toml")),
        auth_files: Some(AuthFiles::new(vec![dir.path().join("auth.json")])),
        retry: None,
    })
    .unwrap();
    let name = format!("{}/embed/busybox:1", registry.host());
    let reference: Reference = name.parse().unwrap();

    assert!(engine.local_image(&reference).unwrap().is_none());
    let report = engine
        .pull(&reference, &Default::default(), ProgressMode::Quiet)
        .unwrap();
    assert_eq!(report.manifest, image.manifest.digest);
    assert_eq!(report.config, image.config.digest);
    assert_eq!(report.downloaded_layers, 1);
    let local = engine.local_image(&reference).unwrap().unwrap();
    assert_eq!(local.manifest, image.manifest.digest);

    let images = engine.images().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].names, std::slice::from_ref(&name));
    assert_eq!(
        engine
            .find_image(&image.config.digest.short())
            .unwrap()
            .manifest,
        image.manifest.digest
    );
    let inspect = engine.inspect(&name).unwrap();
    assert_eq!(
        inspect["Config"]["config"]["Cmd"],
        serde_json::json!(["sh"])
    );

    let removed = engine.remove_image(&name).unwrap();
    assert!(
        removed.iter().any(|l| l.starts_with("Deleted")),
        "{removed:?}"
    );
    assert!(matches!(
        engine.find_image(&name),
        Err(skiff::EngineError::ImageNotFound(_))
    ));
    let gc = engine.gc(&Default::default()).unwrap();
    assert_eq!(gc.removed_layers, [image.layers[0].diff_id]);
    assert!(engine.verify().unwrap().is_clean());
}
