//! skiff embedded as a library: everything the CLI does, through `skiff::Engine`.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use skiff::{AuthFiles, Engine, EngineOptions, Reference};
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
        monitor_program: None,
    })
    .unwrap();
    let name = format!("{}/embed/busybox:1", registry.host());
    let reference: Reference = name.parse().unwrap();

    assert!(engine.local_image(&reference).unwrap().is_none());
    let report = engine.pull(&reference, &Default::default()).unwrap();
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

/// Collects what the engine reports; the library itself prints nothing.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl skiff::Progress for Recorder {
    fn notice(&self, notice: &skiff::Notice) {
        self.0.lock().unwrap().push(notice.to_string());
    }
    fn layer(&self, layer: &skiff::Digest, event: skiff::LayerEvent) {
        if !matches!(event, skiff::LayerEvent::Advanced { .. }) {
            let line = format!("{}: {}", layer.short(), event.status());
            self.0.lock().unwrap().push(line);
        }
    }
}

#[test]
fn notices_and_layer_progress_reach_the_embedders_progress() {
    let registry = Registry::start().unwrap();
    let image = busybox::image(Format::Docker, Compression::Gzip).unwrap();
    registry.push_image("embed/progress", "1", &image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recorder = std::sync::Arc::new(Recorder::default());
    let engine = Engine::new(EngineOptions {
        root: Some(dir.path().join("store")),
        config_path: Some(dir.path().join("none.toml")),
        auth_files: Some(AuthFiles::new(vec![dir.path().join("auth.json")])),
        retry: None,
        monitor_program: None,
    })
    .unwrap()
    .with_progress(recorder.clone());
    let name = format!("{}/embed/progress:1", registry.host());
    let reference: Reference = name.parse().unwrap();
    let layer = image.layers[0].blob.digest.short();

    engine.pull(&reference, &Default::default()).unwrap();
    let first = std::mem::take(&mut *recorder.0.lock().unwrap());
    assert_eq!(
        first,
        [
            format!("Pulling {name}"),
            format!("{layer}: Waiting"),
            format!("{layer}: Downloading"),
            format!("{layer}: Pull complete"),
        ]
    );
    engine.pull(&reference, &Default::default()).unwrap();
    let second = std::mem::take(&mut *recorder.0.lock().unwrap());
    assert_eq!(
        second,
        [
            format!("Pulling {name}"),
            format!("{layer}: Waiting"),
            format!("{layer}: Already exists"),
        ]
    );
}

/// The job container life cycle through `skiff::Engine` alone: examples/job_container.rs, a
/// program that embeds skiff (and serves its own monitor), run as its own process, since a
/// launch must start from a single-threaded process.
fn engine_runs_job_containers() {
    let env = common::run::RunEnv::new().pulled();
    let example = std::env::var_os("SKIFF_TEST_EXAMPLE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(example_path);
    let out = std::process::Command::new(&example)
        .args([env.root().as_os_str(), env.busybox().as_ref()])
        .env("HOME", env.dir.path())
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "created 64\nin test\nexec 3\nrunning 1 Some((\"lib-job\", \"running\"))\n\
         inspect true \"1\"\nstopped 137\nkept\nexec 0\nkilled 137\n\
         logs \"started\\nstarted\\n\"\nleft 0\n"
    );
}

/// examples/job_container, built by `cargo test` (a whole-package test run builds examples).
fn example_path() -> std::path::PathBuf {
    let path = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/job_container");
    assert!(
        path.exists(),
        "{} is not built: run `cargo test` for the whole package (or `cargo build --example \
         job_container`)",
        path.display()
    );
    path
}

/// The rootless child's environment: skiff and the example where the test user can run them.
fn example_env() -> Vec<(String, std::ffi::OsString)> {
    let mut env = common::rootless_env();
    let shared = skiff_test_rig::rootless::share_binary(&example_path());
    env.push(("SKIFF_TEST_EXAMPLE".into(), shared.into_os_string()));
    env
}

#[test]
fn engine_runs_job_containers_as_root() {
    skiff_test_rig::require_root();
    engine_runs_job_containers();
}

skiff_test_rig::rootless_test!(
    engine_runs_job_containers_rootless,
    engine_runs_job_containers,
    env = example_env
);
