//! `skiff pull` through a fault-injecting proxy in front of a real registry (broken and
//! stalled downloads, 429s, tampered bytes), with token auth, and two pulls at once.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::Env;
use skiff_test_rig::{
    Compression, Fault, FaultProxy, Format, Image, ImageBuilder, Registry, RegistryOptions,
    TokenAuth, busybox,
};
use std::process::{Output, Stdio};

fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn blob_gets(proxy: &FaultProxy, image: &Image, layer: usize) -> Vec<Option<String>> {
    let digest = image.layers[layer].blob.digest.to_string();
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&digest))
        .map(|r| r.range)
        .collect()
}

#[test]
fn a_download_broken_mid_blob_resumes_with_a_range_request() {
    let registry = Registry::start().unwrap();
    let image = common::big_image(3 << 20, 1);
    registry.push_image("big/app", "1", &image).unwrap();
    let digest = image.layers[0].blob.digest.to_string();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::DropAfter {
            path_contains: digest.clone(),
            bytes: 1_000_000,
            times: 1,
        }],
    )
    .unwrap();
    let env = Env::with_config("retries = 3\n");
    assert_ok(&env.skiff(&["pull", "-q", &format!("{}/big/app:1", proxy.host())]));
    let gets = blob_gets(&proxy, &image, 0);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0], None);
    let range = gets[1]
        .clone()
        .expect("the second request resumes with Range");
    let from: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 1_000_000, "{range}");
    // Verified over the whole blob: the layer is committed with the right diff_id.
    assert!(env.store().has_layer(&image.layers[0].diff_id));
}

#[test]
fn a_stalled_download_times_out_and_resumes() {
    let registry = Registry::start().unwrap();
    let image = common::big_image(1 << 20, 2);
    registry.push_image("big/app", "1", &image).unwrap();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::Stall {
            path_contains: image.layers[0].blob.digest.to_string(),
            bytes: 200_000,
            stall: Duration::from_secs(20),
            times: 1,
        }],
    )
    .unwrap();
    let env = Env::with_config("retries = 3\nstall_timeout_secs = 1\n");
    let stderr = assert_ok(&env.skiff(&["pull", &format!("{}/big/app:1", proxy.host())]));
    let gets = blob_gets(&proxy, &image, 0);
    assert_eq!(gets.len(), 2, "{gets:?}\n{stderr}");
    assert!(
        gets[1].as_deref().is_some_and(|r| r.starts_with("bytes=")),
        "{gets:?}"
    );
    assert!(env.store().has_layer(&image.layers[0].diff_id));
}

#[test]
fn rate_limits_are_retried_after_the_delay_the_registry_asks() {
    let registry = Registry::start().unwrap();
    let image = busybox::image(Format::Oci, Compression::Gzip).unwrap();
    registry.push_image("lib/busybox", "1", &image).unwrap();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![
            Fault::Status {
                path_contains: "/manifests/".into(),
                status: 429,
                retry_after: Some(1),
                times: 2,
            },
            Fault::Status {
                path_contains: "/blobs/".into(),
                status: 503,
                retry_after: None,
                times: 1,
            },
        ],
    )
    .unwrap();
    let env = Env::with_config("retries = 4\n");
    assert_ok(&env.skiff(&["pull", "-q", &format!("{}/lib/busybox:1", proxy.host())]));
    let statuses: Vec<u16> = proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .map(|r| r.status)
        .collect();
    assert_eq!(&statuses[..3], [429, 429, 200], "{statuses:?}");
    assert!(proxy.requests().iter().any(|r| r.status == 503));
    assert!(env.store().has_layer(&image.layers[0].diff_id));

    // When the registry never recovers, the error says so and names the image.
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::Status {
            path_contains: "/manifests/".into(),
            status: 503,
            retry_after: None,
            times: 100,
        }],
    )
    .unwrap();
    let env = Env::with_config("retries = 2\n");
    let out = env.skiff(&["pull", &format!("{}/lib/busybox:1", proxy.host())]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("503") && stderr.contains("lib/busybox"),
        "{stderr}"
    );
}

#[test]
fn tampered_bytes_and_endless_drops_commit_nothing() {
    let registry = Registry::start().unwrap();
    let image = common::big_image(1 << 20, 3);
    registry.push_image("big/app", "1", &image).unwrap();
    let digest = image.layers[0].blob.digest.to_string();

    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::Corrupt {
            path_contains: digest.clone(),
            offset: 4096,
            times: 100,
        }],
    )
    .unwrap();
    let env = Env::with_config("retries = 2\n");
    let out = env.skiff(&["pull", &format!("{}/big/app:1", proxy.host())]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("digest mismatch") && stderr.contains(&digest),
        "{stderr}"
    );
    assert!(env.store().layers().unwrap().is_empty());
    assert!(env.store().images().unwrap().is_empty());

    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::DropAfter {
            path_contains: digest.clone(),
            bytes: 10_000,
            times: 100,
        }],
    )
    .unwrap();
    let env = Env::with_config("retries = 2\n");
    let out = env.skiff(&["pull", &format!("{}/big/app:1", proxy.host())]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&digest) && stderr.contains("gave up"),
        "{stderr}"
    );
    assert!(env.store().layers().unwrap().is_empty());
    assert!(
        std::fs::read_dir(env.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn token_auth_registries_work_anonymously_and_after_login() {
    let public = Registry::start_with(RegistryOptions {
        token_auth: Some(TokenAuth {
            users: vec![("bob".into(), "pw".into())],
            anonymous_pull: true,
        }),
        ..Default::default()
    })
    .unwrap();
    let image = busybox::image(Format::Docker, Compression::Gzip).unwrap();
    public.push_image("lib/busybox", "1", &image).unwrap();
    let env = Env::with_config("retries = 2\n");
    assert_ok(&env.skiff(&["pull", "-q", &format!("{}/lib/busybox:1", public.host())]));
    let token_requests = public.token_server().unwrap().token_requests();
    assert!(
        token_requests <= 4,
        "tokens are cached per repository: {token_requests} requests"
    );

    let private = Registry::start_with(RegistryOptions {
        token_auth: Some(TokenAuth {
            users: vec![("bob".into(), "pw".into())],
            anonymous_pull: false,
        }),
        ..Default::default()
    })
    .unwrap();
    private.push_image("team/busybox", "1", &image).unwrap();
    let name = format!("{}/team/busybox:1", private.host());
    let env = Env::with_config("retries = 2\n");
    let out = env.skiff(&["pull", &name]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skiff login"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let login = |pw: &str| env.login("bob", &private.host(), pw);
    assert_eq!(login("wrong").status.code(), Some(125));
    assert_ok(&login("pw"));
    assert_ok(&env.skiff(&["pull", "-q", &name]));
    assert!(env.store().has_layer(&image.layers[0].diff_id));
}

#[test]
fn two_pulls_of_one_image_at_once_download_each_layer_once() {
    let registry = Registry::start().unwrap();
    let mut builder = ImageBuilder::new(Format::Oci);
    for seed in 0..3u64 {
        // An uncompressed layer's blob is its tar: reuse it, gzip-compressed this time.
        let tar = common::big_image(2 << 20, seed + 10).layers[0]
            .blob
            .bytes
            .clone();
        builder = builder.layer_tar(&tar, Compression::Gzip).unwrap();
    }
    let image = builder.build().unwrap();
    registry.push_image("shared/app", "1", &image).unwrap();
    let proxy = FaultProxy::start(registry.addr(), vec![]).unwrap();
    let env = Env::with_config("retries = 2\n");
    let name = format!("{}/shared/app:1", proxy.host());
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&["pull", "-q", &name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        assert_ok(&child.wait_with_output().unwrap());
    }
    for i in 0..3 {
        assert_eq!(
            blob_gets(&proxy, &image, i).len(),
            1,
            "layer {i} downloaded once"
        );
        assert!(env.store().has_layer(&image.layers[i].diff_id));
    }
}

#[test]
fn blob_redirects_to_another_host_drop_the_authorization_header() {
    // The registry needs credentials; its blobs are "in object storage": another host that
    // serves them without auth (a second registry holding the same blobs).
    let private = Registry::start_with(RegistryOptions {
        basic_auth: Some(("alice".into(), "pw".into())),
        ..Default::default()
    })
    .unwrap();
    let storage = Registry::start().unwrap();
    let image = common::big_image(1 << 20, 7);
    private.push_image("app/x", "1", &image).unwrap();
    storage.push_image("app/x", "1", &image).unwrap();
    let blob_host = FaultProxy::start(storage.addr(), vec![]).unwrap();
    let front = FaultProxy::start(
        private.addr(),
        vec![Fault::Redirect {
            path_contains: "/blobs/".into(),
            location_base: format!("http://localhost:{}", blob_host.addr().port()),
            times: 100,
        }],
    )
    .unwrap();

    let env = Env::with_config("retries = 2\n");
    std::fs::write(
        env.dir.path().join("auth.json"),
        serde_json::json!({"auths": {front.host(): {"auth": "YWxpY2U6cHc="}}}).to_string(),
    )
    .unwrap();
    assert_ok(&env.skiff(&["pull", "-q", &format!("{}/app/x:1", front.host())]));
    assert!(env.store().has_layer(&image.layers[0].diff_id));

    let redirected: Vec<_> = front
        .requests()
        .into_iter()
        .filter(|r| r.status == 307)
        .collect();
    assert!(!redirected.is_empty());
    assert!(
        redirected.iter().all(|r| r.authorization),
        "the registry itself gets the credentials"
    );
    let served: Vec<_> = blob_host
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .collect();
    assert!(!served.is_empty());
    assert!(
        served.iter().all(|r| !r.authorization),
        "credentials must not follow a redirect to another host: {served:?}"
    );
}
