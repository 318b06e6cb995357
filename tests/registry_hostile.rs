//! Registries that misbehave (issue 12, item 3), through the fault proxy in front of a real
//! registry: a Content-Length that lies, endless and trickling bodies and heads (slowloris), a
//! redirect loop, a token endpoint on another host, oversized headers, wrong bytes after a
//! resume. Each ends with exit 125, a message naming what failed, a consistent store, and a
//! bounded run: bounded by `retries` and `stall_timeout_secs`, checked by the requests the
//! proxy logged (never by a wall clock).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::Env;
use skiff_test_rig::{
    Compression, Fault, FaultProxy, Format, Image, Registry, RegistryOptions, TokenAuth, busybox,
};

/// Runs `skiff pull name`, expects exit 125 with every one of `words` in the message, and a
/// consistent, empty store afterwards; returns the message.
fn pull_fails(env: &Env, name: &str, words: &[&str]) -> String {
    let out = env.skiff(&["pull", name]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "{word:?} not in: {stderr}");
    }
    assert_consistent_and_empty(env);
    stderr
}

fn assert_consistent_and_empty(env: &Env) {
    let verify = env.skiff(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(env.ok(&["images", "-q"]).trim(), "");
    assert!(env.store().layers().unwrap().is_empty());
    assert!(
        std::fs::read_dir(env.root().join("tmp"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    );
}

/// The GETs the proxy logged whose path contains `needle`: (Range, status, fault).
fn gets(proxy: &FaultProxy, needle: &str) -> Vec<(Option<String>, u16, Option<&'static str>)> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(needle))
        .map(|r| (r.range, r.status, r.fault))
        .collect()
}

/// A registry holding `big/app:1` (one 1 MiB layer) behind a proxy with `faults`.
fn setup(faults: Vec<Fault>) -> (Registry, Image, FaultProxy, String) {
    let registry = Registry::start().unwrap();
    let image = common::big_image(1 << 20, 42);
    registry.push_image("big/app", "1", &image).unwrap();
    let proxy = FaultProxy::start(registry.addr(), faults).unwrap();
    let name = format!("{}/big/app:1", proxy.host());
    (registry, image, proxy, name)
}

const FAST: &str = "retries = 2\nstall_timeout_secs = 1\n";

#[test]
fn a_content_length_that_lies_is_caught() {
    // A manifest announced longer than sent: the client waits, the stall timeout ends it, once.
    let (_r, _image, proxy, name) = setup(vec![Fault::LyingLength {
        path_contains: "/manifests/".into(),
        delta: 1000,
        times: 100,
    }]);
    let env = Env::with_config(FAST);
    pull_fails(&env, &name, &["reading manifest 1", "no data for 1s"]);
    assert_eq!(gets(&proxy, "/manifests/").len(), 1);

    // Announced shorter: the truncated bytes do not match the registry's digest.
    let (_r, _image, proxy, name) = setup(vec![Fault::LyingLength {
        path_contains: "/manifests/".into(),
        delta: -10,
        times: 100,
    }]);
    let env = Env::with_config(FAST);
    pull_fails(&env, &name, &["manifest big/app@1", "digest mismatch"]);
    assert_eq!(gets(&proxy, "/manifests/").len(), 1);

    // A blob announced shorter on every request: each resume gets less, then skiff gives up.
    let (_r, image, proxy, name) = setup(vec![]);
    let digest = image.layers[0].blob.digest.to_string();
    proxy.add_fault(Fault::LyingLength {
        path_contains: digest.clone(),
        delta: -100_000,
        times: 100,
    });
    let env = Env::with_config("retries = 3\nstall_timeout_secs = 1\n");
    pull_fails(
        &env,
        &name,
        &[&digest, "connection closed", "gave up after 3"],
    );
    let blob = gets(&proxy, &digest);
    assert_eq!(blob.len(), 3, "{blob:?}");
    assert!(
        blob[1..].iter().all(|(range, ..)| range.is_some()),
        "{blob:?}"
    );

    // A blob announced longer than it is: every byte came, the wait for more is cut by the
    // stall timeout and the digest decides; the pull succeeds without another request.
    let (_r, image, proxy, name) = setup(vec![]);
    let digest = image.layers[0].blob.digest.to_string();
    proxy.add_fault(Fault::LyingLength {
        path_contains: digest.clone(),
        delta: 1000,
        times: 100,
    });
    let env = Env::with_config(FAST);
    env.ok(&["pull", "-q", &name]);
    assert!(env.store().has_layer(&image.layers[0].diff_id));
    assert_eq!(gets(&proxy, &digest).len(), 1);
}

#[test]
fn endless_and_trickling_bodies_are_cut() {
    // An endless manifest stops at the 4 MiB limit.
    let (_r, _image, proxy, name) = setup(vec![Fault::Endless {
        path_contains: "/manifests/".into(),
        status: 200,
        times: 100,
    }]);
    let env = Env::with_config(FAST);
    pull_fails(
        &env,
        &name,
        &["manifest 1", "larger than the 4194304 bytes"],
    );
    assert_eq!(gets(&proxy, "/manifests/").len(), 1);

    // An endless error body: only its first 64 KiB are read, for the message.
    let (_r, _image, proxy, name) = setup(vec![Fault::Endless {
        path_contains: "/manifests/".into(),
        status: 500,
        times: 100,
    }]);
    let env = Env::with_config(FAST);
    pull_fails(&env, &name, &["/manifests/1", "registry answered 500"]);
    assert_eq!(gets(&proxy, "/manifests/").len(), 2);

    // An endless blob (zeros: an empty tar, then more) stops at the size its manifest announced.
    let (_r, image, proxy, name) = setup(vec![]);
    let digest = image.layers[0].blob.digest.to_string();
    proxy.add_fault(Fault::Endless {
        path_contains: digest.clone(),
        status: 200,
        times: 100,
    });
    let env = Env::with_config(FAST);
    pull_fails(&env, &name, &[&digest, "more data than the"]);
    assert_eq!(gets(&proxy, &digest).len(), 1);

    // A blob trickled a byte every 200 ms never stalls for 1 s: the minimum speed cuts each
    // attempt after one window, and the retries run out.
    let (_r, image, proxy, name) = setup(vec![]);
    let digest = image.layers[0].blob.digest.to_string();
    proxy.add_fault(Fault::Trickle {
        path_contains: digest.clone(),
        interval: Duration::from_millis(200),
        in_head: false,
        times: 100,
    });
    let env = Env::with_config(FAST);
    pull_fails(
        &env,
        &name,
        &[&digest, "slower than the 1024 bytes/s", "gave up after 2"],
    );
    assert_eq!(gets(&proxy, &digest).len(), 2);

    // The same for a manifest body (not retried: one request).
    let (_r, _image, proxy, name) = setup(vec![Fault::Trickle {
        path_contains: "/manifests/".into(),
        interval: Duration::from_millis(200),
        in_head: false,
        times: 100,
    }]);
    let env = Env::with_config(FAST);
    pull_fails(&env, &name, &["reading manifest 1", "slower than"]);
    assert_eq!(gets(&proxy, "/manifests/").len(), 1);

    // A trickled response head: it must be whole within the stall timeout, each attempt.
    let (_r, _image, proxy, name) = setup(vec![Fault::Trickle {
        path_contains: "/manifests/".into(),
        interval: Duration::from_millis(200),
        in_head: true,
        times: 100,
    }]);
    let env = Env::with_config(FAST);
    pull_fails(
        &env,
        &name,
        &["no complete response head within 1s", "gave up after 2"],
    );
    assert_eq!(gets(&proxy, "/manifests/").len(), 2);
}

#[test]
fn a_redirect_loop_fails_without_retrying() {
    let (_r, _image, proxy, name) = setup(vec![]);
    proxy.add_fault(Fault::Redirect {
        path_contains: "/manifests/".into(),
        location_base: proxy.url(),
        times: 1000,
    });
    let env = Env::with_config("retries = 5\nstall_timeout_secs = 1\n");
    pull_fails(&env, &name, &["/manifests/1", "more than 10 redirects"]);
    // The request and the 10 redirects followed, once: a loop is not retried.
    assert_eq!(gets(&proxy, "/manifests/").len(), 11);

    // A blob's redirect loop too.
    let (_r, image, proxy, name) = setup(vec![]);
    let digest = image.layers[0].blob.digest.to_string();
    proxy.add_fault(Fault::Redirect {
        path_contains: digest.clone(),
        location_base: proxy.url(),
        times: 1000,
    });
    let env = Env::with_config("retries = 5\nstall_timeout_secs = 1\n");
    pull_fails(&env, &name, &[&digest, "more than 10 redirects"]);
    assert_eq!(gets(&proxy, &digest).len(), 11);
}

#[test]
fn credentials_go_to_the_token_realm_on_another_host_and_nowhere_else() {
    // A private registry reached as localhost:PORT whose challenge names a token realm on
    // 127.0.0.1:OTHER, and whose blobs redirect to storage on 127.0.0.1:THIRD.
    let private = Registry::start_with(RegistryOptions {
        token_auth: Some(TokenAuth {
            users: vec![("bob".into(), "pw".into())],
            anonymous_pull: false,
        }),
        ..Default::default()
    })
    .unwrap();
    let image = busybox::image(Format::Oci, Compression::Gzip).unwrap();
    private.push_image("team/app", "1", &image).unwrap();
    let storage = Registry::start().unwrap();
    storage.push_image("team/app", "1", &image).unwrap();
    let blob_host = FaultProxy::start(storage.addr(), vec![]).unwrap();
    let front = FaultProxy::start(
        private.addr(),
        vec![Fault::Redirect {
            path_contains: "/blobs/".into(),
            location_base: blob_host.url(),
            times: 100,
        }],
    )
    .unwrap();
    let host = format!("localhost:{}", front.addr().port());
    let realm = private.token_realm().unwrap();
    assert!(!realm.contains("localhost"), "{realm}");

    // (The rig pushed with bob's credentials: only what comes after counts.)
    let pushed = private.token_server().unwrap().requests().len();
    let env = Env::with_config("retries = 2\nstall_timeout_secs = 5\n");
    // Not logged in: refused, and nothing was sent to the realm but an anonymous request.
    pull_fails(&env, &format!("{host}/team/app:1"), &["skiff login"]);
    let tokens = private.token_server().unwrap().requests().split_off(pushed);
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t.user.is_none()), "{tokens:?}");
    let anonymous = pushed + tokens.len();

    let login = env.login("bob", &host, "pw");
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    env.ok(&["pull", "-q", &format!("{host}/team/app:1")]);
    assert!(env.store().has_layer(&image.layers[0].diff_id));
    // Docker sends the Basic credentials to the realm the registry names, whatever its host.
    let tokens = private
        .token_server()
        .unwrap()
        .requests()
        .split_off(anonymous);
    assert!(
        tokens.iter().any(|t| t.user.as_deref() == Some("bob")),
        "{tokens:?}"
    );
    // The registry itself only ever sees the Bearer token, never the password.
    let schemes: Vec<_> = front
        .requests()
        .into_iter()
        .filter_map(|r| r.auth_scheme)
        .collect();
    assert!(!schemes.is_empty());
    assert!(schemes.iter().all(|s| s == "Bearer"), "{schemes:?}");
    // The blob storage on another host gets neither.
    let served: Vec<_> = blob_host
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .collect();
    assert!(!served.is_empty());
    assert!(served.iter().all(|r| !r.authorization), "{served:?}");

    // Another registry's token endpoint never gets this registry's credentials.
    let other = Registry::start_with(RegistryOptions {
        token_auth: Some(TokenAuth {
            users: vec![("bob".into(), "pw".into())],
            anonymous_pull: true,
        }),
        ..Default::default()
    })
    .unwrap();
    other.push_image("lib/app", "1", &image).unwrap();
    let pushed = other.token_server().unwrap().requests().len();
    env.ok(&["pull", "-q", &format!("{}/lib/app:1", other.host())]);
    let tokens = other.token_server().unwrap().requests().split_off(pushed);
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t.user.is_none()), "{tokens:?}");
}

#[test]
fn oversized_headers_are_refused_at_hypers_limit() {
    // 16 MiB of one header: hyper stops reading at its ~408 KiB buffer; each attempt fails the
    // same way and the retries run out.
    let (_r, _image, proxy, name) = setup(vec![Fault::HugeHeader {
        path_contains: "/manifests/".into(),
        bytes: 16 << 20,
        times: 100,
    }]);
    let env = Env::with_config(FAST);
    pull_fails(&env, &name, &["message head is too large"]);
    assert_eq!(gets(&proxy, "/manifests/").len(), 2);
}

#[test]
fn wrong_bytes_after_a_resume_fail_the_digest_and_commit_nothing() {
    let (_r, image, proxy, name) = setup(vec![]);
    let digest = image.layers[0].blob.digest.to_string();
    proxy.add_fault(Fault::DropAfter {
        path_contains: digest.clone(),
        bytes: 300_000,
        times: 1,
    });
    proxy.add_fault(Fault::CorruptRanged {
        path_contains: digest.clone(),
        offset: 10,
        times: 100,
    });
    let env = Env::with_config("retries = 3\nstall_timeout_secs = 1\n");
    pull_fails(&env, &name, &[&digest, "digest mismatch"]);
    let blob = gets(&proxy, &digest);
    assert_eq!(blob.len(), 2, "{blob:?}");
    assert_eq!(blob[0].2, Some("DropAfter"));
    assert!(
        blob[1]
            .0
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes="))
    );
    assert_eq!(blob[1].2, Some("CorruptRanged"));
}

/// A token endpoint that answers 2 MiB (valid JSON, padded): the reply is cut at the 1 MiB
/// bound, the pull fails naming the token request, at most `retries` replies are read, and the
/// store is left consistent and empty.
#[test]
fn oversized_token_replies_are_cut_at_their_bound() {
    let registry = Registry::start_with(RegistryOptions {
        token_auth: Some(TokenAuth {
            users: vec![("bob".into(), "pw".into())],
            anonymous_pull: true,
        }),
        ..Default::default()
    })
    .unwrap();
    let image = busybox::image(Format::Oci, Compression::Gzip).unwrap();
    registry.push_image("team/app", "1", &image).unwrap();
    let server = registry.token_server().unwrap();
    let name = format!("{}/team/app:1", registry.host());
    // Within the bound, padding is harmless.
    server.pad_replies(64 * 1024);
    let env = Env::with_config(FAST);
    env.ok(&["pull", "-q", &name]);
    // Beyond it, refused.
    server.pad_replies(2 << 20);
    let before = server.token_requests();
    let env = Env::with_config(FAST);
    let stderr = pull_fails(&env, &name, &["token", "1048576"]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let asked = server.token_requests() - before;
    assert!((1..=2).contains(&asked), "{asked} token requests");
}
