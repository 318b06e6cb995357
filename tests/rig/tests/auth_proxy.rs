//! The rig's token-auth registry (a real `auth: token` distribution server and a token endpoint
//! run by the test) and its fault-injecting proxy, exercised with the rig client and reqwest.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::{RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use rootfs_cache::Digest;
use skiff_test_rig::image::{Blob, OCI_MANIFEST};
use skiff_test_rig::token::{SERVICE, parse_challenge};
use skiff_test_rig::{
    Compression, Fault, FaultProxy, Format, Registry, RegistryClient, RegistryOptions, TokenAuth,
    busybox,
};

fn token_registry(anonymous_pull: bool) -> Registry {
    Registry::start_with(RegistryOptions {
        token_auth: Some(TokenAuth {
            users: vec![("alice".into(), "s3cret".into())],
            anonymous_pull,
        }),
        ..Default::default()
    })
    .unwrap()
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Deterministic pseudo-random bytes (incompressible enough to look like a layer).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn token_registry_challenges_anonymous_and_token_endpoint_refuses_wrong_password() {
    let registry = token_registry(false);
    let realm = registry.token_realm().unwrap();
    assert!(realm.starts_with("http://127.0.0.1:") && realm.ends_with("/token"));

    let resp = http()
        .get(format!("{}/v2/", registry.url()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let header = resp.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    let challenge = parse_challenge(header).unwrap();
    assert_eq!(challenge.realm, realm, "{header}");
    assert_eq!(challenge.service.as_deref(), Some(SERVICE), "{header}");

    let scope = [
        ("service", SERVICE),
        ("scope", "repository:private/x:pull,push"),
    ];
    let wrong = http()
        .get(&realm)
        .query(&scope)
        .basic_auth("alice", Some("nope"))
        .send()
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown = http()
        .get(&realm)
        .query(&scope)
        .basic_auth("mallory", Some("s3cret"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let granted = http()
        .get(&realm)
        .query(&scope)
        .basic_auth("alice", Some("s3cret"))
        .send()
        .unwrap();
    assert_eq!(granted.status(), StatusCode::OK);
    let body: serde_json::Value = granted.json().unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(body["access_token"].as_str(), Some(token));
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(token.split('.').count(), 3);

    // The registry accepts the token; a tampered signature is refused.
    let ok = http()
        .get(format!("{}/v2/", registry.url()))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "{}", registry.log());
    // Change the signature's first character (its last one carries unused padding bits).
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{signed}.{first}{}", &signature[1..]);
    let refused = http()
        .get(format!("{}/v2/", registry.url()))
        .bearer_auth(&tampered)
        .send()
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // Without anonymous_pull, an anonymous token grants nothing.
    let anonymous = RegistryClient::new(&registry.url(), None, None).unwrap();
    assert_eq!(anonymous.ping().unwrap(), StatusCode::OK);
    let err = anonymous
        .get_manifest("private/x", "latest", &[OCI_MANIFEST])
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err:#}");
    // A wrong password fails at the token endpoint.
    let wrong = RegistryClient::new(&registry.url(), None, Some(("alice", "nope"))).unwrap();
    let err = wrong.ping().unwrap_err();
    assert!(err.to_string().contains("401"), "{err:#}");
}

#[test]
fn token_registry_round_trips_busybox_reusing_tokens() {
    let registry = token_registry(false);
    let tokens = registry.token_server().unwrap();
    let client = registry.client().unwrap();
    let image = busybox::image(Format::Oci, Compression::Gzip).unwrap();
    client
        .push_image("fixtures/busybox", "latest", &image)
        .unwrap();
    let fetched = client
        .get_manifest("fixtures/busybox", "latest", &[OCI_MANIFEST])
        .unwrap();
    assert_eq!(fetched.bytes, image.manifest.bytes);
    assert_eq!(
        client
            .get_blob("fixtures/busybox", &image.config.digest)
            .unwrap(),
        image.config.bytes
    );
    for layer in &image.layers {
        assert_eq!(
            client
                .get_blob("fixtures/busybox", &layer.blob.digest)
                .unwrap(),
            layer.blob.bytes
        );
    }
    // About ten registry requests, but only a pull token and a pull+push token.
    let requests = tokens.requests();
    assert!(
        tokens.token_requests() <= 3,
        "tokens are not reused: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.user.as_deref() == Some("alice") && r.status == 200),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.scopes.len() == 1 && {
            // The registry lists the actions in either order.
            let mut actions: Vec<&str> = r.scopes[0]
                .strip_prefix("repository:fixtures/busybox:")
                .unwrap_or_default()
                .split(',')
                .collect();
            actions.sort_unstable();
            actions == ["pull", "push"]
        }),
        "{requests:?}"
    );
}

#[test]
fn anonymous_pull_allows_pulling_but_not_pushing() {
    let registry = token_registry(true);
    let image = busybox::image(Format::Oci, Compression::Gzip).unwrap();
    registry
        .client()
        .unwrap()
        .push_image("public/busybox", "1", &image)
        .unwrap();

    let anonymous = RegistryClient::new(&registry.url(), None, None).unwrap();
    let fetched = anonymous
        .get_manifest("public/busybox", "1", &[OCI_MANIFEST])
        .unwrap();
    assert_eq!(fetched.bytes, image.manifest.bytes);
    let layer = &image.layers[0].blob;
    assert_eq!(
        anonymous.get_blob("public/busybox", &layer.digest).unwrap(),
        layer.bytes
    );
    let blob = Blob::new(b"anonymous push".to_vec(), "application/octet-stream");
    let err = anonymous.push_blob("public/busybox", &blob).unwrap_err();
    assert!(err.to_string().contains("401"), "{err:#}");
    let requests = registry.token_server().unwrap().requests();
    assert!(requests.iter().any(|r| r.user.is_none()), "{requests:?}");
}

/// A plain registry holding one 200 kB blob in `proxy/blob`.
fn registry_with_blob() -> (Registry, Blob) {
    let registry = Registry::start().unwrap();
    let blob = Blob::new(noise(200_000), "application/octet-stream");
    registry
        .client()
        .unwrap()
        .push_blob("proxy/blob", &blob)
        .unwrap();
    (registry, blob)
}

fn blob_url(proxy: &FaultProxy, blob: &Blob) -> String {
    format!("{}/v2/proxy/blob/blobs/{}", proxy.url(), blob.digest)
}

#[test]
fn drop_after_breaks_a_download_then_passes_through_and_forwards_ranges() {
    let (registry, blob) = registry_with_blob();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::DropAfter {
            path_contains: "/blobs/sha256:".into(),
            bytes: 1000,
            times: 1,
        }],
    )
    .unwrap();
    let url = blob_url(&proxy, &blob);
    let client = http();

    let resp = client.get(&url).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The short body is reported as an error, or at least comes out short.
    if let Ok(body) = resp.bytes() {
        assert!(body.len() < blob.bytes.len(), "{} bytes", body.len());
    }

    // Beyond `times`, requests pass through unchanged.
    let full = client.get(&url).send().unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.bytes().unwrap().as_ref(), blob.bytes.as_slice());

    // A resumed download: the Range header is forwarded and the registry answers 206.
    let resumed = client
        .get(&url)
        .header(RANGE, "bytes=1000-")
        .send()
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resumed.bytes().unwrap().as_ref(), &blob.bytes[1000..]);

    let log = proxy.requests();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0].fault, Some("DropAfter"));
    assert_eq!((log[0].method.as_str(), log[0].status), ("GET", 200));
    assert!(log[0].path.ends_with(&blob.digest.to_string()));
    assert_eq!((log[1].fault, log[1].status), (None, 200));
    assert_eq!(log[2].range.as_deref(), Some("bytes=1000-"));
    assert_eq!(log[2].status, 206);
}

#[test]
fn status_fault_answers_429_with_retry_after_then_passes_through() {
    let (registry, blob) = registry_with_blob();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::Status {
            path_contains: "/blobs/".into(),
            status: 429,
            retry_after: Some(7),
            times: 2,
        }],
    )
    .unwrap();
    let url = blob_url(&proxy, &blob);
    let client = http();
    for _ in 0..2 {
        let resp = client.get(&url).send().unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[RETRY_AFTER], "7");
        let body: serde_json::Value = resp.json().unwrap();
        assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    }
    let resp = client.get(&url).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().unwrap().as_ref(), blob.bytes.as_slice());
    // Other paths were never faulted.
    assert_eq!(
        client
            .get(format!("{}/v2/", proxy.url()))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let statuses: Vec<u16> = proxy.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200, 200]);
}

#[test]
fn corrupt_flips_one_byte_once() {
    let (registry, blob) = registry_with_blob();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::Corrupt {
            path_contains: "/blobs/".into(),
            offset: 123_456,
            times: 1,
        }],
    )
    .unwrap();
    let url = blob_url(&proxy, &blob);
    let client = http();
    let tampered = client.get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(tampered.len(), blob.bytes.len());
    assert_ne!(Digest::of(&tampered), blob.digest);
    let differing: Vec<usize> = (0..tampered.len())
        .filter(|&i| tampered[i] != blob.bytes[i])
        .collect();
    assert_eq!(differing, [123_456]);
    assert_eq!(tampered[123_456], !blob.bytes[123_456]);

    let clean = client.get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(Digest::of(&clean), blob.digest);
    let faults: Vec<_> = proxy.requests().iter().map(|r| r.fault).collect();
    assert_eq!(faults, [Some("Corrupt"), None]);
}

#[test]
fn stall_holds_the_body_then_closes() {
    let (registry, blob) = registry_with_blob();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::Stall {
            path_contains: "/blobs/".into(),
            bytes: 100,
            stall: Duration::from_millis(500),
            times: 1,
        }],
    )
    .unwrap();
    let started = Instant::now();
    let resp = http().get(blob_url(&proxy, &blob)).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes();
    assert!(body.map_or(true, |b| b.len() == 100));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(proxy.requests()[0].fault, Some("Stall"));
}

#[test]
fn rig_client_pushes_and_pulls_through_the_proxy() {
    let registry = Registry::start().unwrap();
    let proxy = FaultProxy::start(registry.addr(), Vec::new()).unwrap();
    // One keep-alive client for every request, uploads included (POST, PUT with bodies).
    let client = RegistryClient::new(&proxy.url(), None, None).unwrap();
    let image = busybox::image(Format::Oci, Compression::Gzip).unwrap();
    client
        .push_image("proxied/busybox", "latest", &image)
        .unwrap();
    let fetched = client
        .get_manifest("proxied/busybox", "latest", &[OCI_MANIFEST])
        .unwrap();
    assert_eq!(fetched.bytes, image.manifest.bytes);
    let layer = &image.layers[0].blob;
    assert_eq!(
        client.get_blob("proxied/busybox", &layer.digest).unwrap(),
        layer.bytes
    );
    let log = proxy.requests();
    for method in ["HEAD", "POST", "PUT", "GET"] {
        assert!(log.iter().any(|r| r.method == method), "{log:?}");
    }
    assert!(
        log.iter().all(|r| r.status < 300 || r.status == 404),
        "{log:?}"
    );
    let addr = proxy.addr();
    drop(proxy);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the proxy still listens"
    );
}

/// The worker-like link: a bandwidth shared by all connections, and a round trip per request.
/// Only lower bounds are checked (the link can only slow things down), with the bytes intact.
#[test]
fn link_limits_bandwidth_across_connections_and_delays_each_request() {
    let (registry, blob) = registry_with_blob();
    let proxy = FaultProxy::start(registry.addr(), vec![]).unwrap();
    let url = blob_url(&proxy, &blob);
    let client = http();
    // 400 kB/s shared: two parallel 200 kB downloads need a second together.
    proxy.set_link(skiff_test_rig::Link {
        bytes_per_sec: Some(400_000),
        round_trip: Duration::ZERO,
    });
    let started = Instant::now();
    let bodies: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| client.get(&url).send().unwrap().bytes().unwrap().to_vec()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let both = started.elapsed();
    for body in &bodies {
        assert!(body == &blob.bytes, "a body changed on the way");
    }
    assert!(both >= Duration::from_millis(950), "{both:?}");
    // A 100 ms round trip: a fresh connection and its request cost two.
    proxy.set_link(skiff_test_rig::Link {
        bytes_per_sec: None,
        round_trip: Duration::from_millis(100),
    });
    let started = Instant::now();
    let status = http()
        .get(format!("{}/v2/", proxy.url()))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}
