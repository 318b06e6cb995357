//! `skiff pull` end to end: the real binary against real registries built by the test rig.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::Env;
use skiff_test_rig::{
    Compression, Entry, Format, Image, ImageBuilder, Index, Platform, Registry, RegistryOptions,
    busybox,
};

fn pull_q(env: &Env, name: &str) -> String {
    env.ok(&["pull", "-q", name]).trim().to_owned()
}

fn image_with(format: Format, layers: &[&[Entry]]) -> Image {
    let mut b = ImageBuilder::new(format).env(&[busybox::PATH]).cmd(&["sh"]);
    for l in layers {
        b = b.layer(l, Compression::Gzip).unwrap();
    }
    b.build().unwrap()
}

#[test]
fn pulls_oci_and_docker_images_and_shares_layers() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let base = busybox::entries().unwrap();
    let oci = ImageBuilder::new(Format::Oci)
        .layer(&base, Compression::Gzip)
        .unwrap()
        .layer(&[Entry::file("app/oci", "1")], Compression::Zstd)
        .unwrap()
        .build()
        .unwrap();
    let docker = ImageBuilder::new(Format::Docker)
        .layer(&base, Compression::Gzip)
        .unwrap()
        .layer(&[Entry::file("app/docker", "2")], Compression::None)
        .unwrap()
        .build()
        .unwrap();
    client.push_image("apps/oci", "1.0", &oci).unwrap();
    client.push_image("apps/docker", "1.0", &docker).unwrap();

    let env = Env::new();
    let host = registry.host();
    let digest = pull_q(&env, &format!("{host}/apps/oci:1.0"));
    assert_eq!(digest, oci.manifest.digest.to_string());
    // The second image shares the busybox base layer: only its own layer is downloaded.
    let out = env
        .cmd(&["pull", &format!("{host}/apps/docker:1.0")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("layers: 1 downloaded") && stderr.contains("1 already present"),
        "{stderr}"
    );
    assert!(stderr.contains("Already exists"), "{stderr}");

    let store = env.store();
    for layer in oci.layers.iter().chain(&docker.layers) {
        assert!(store.has_layer(&layer.diff_id));
    }
    assert_eq!(store.layers().unwrap().len(), 3);
    let fs = store.layer_dir(&docker.layers[1].diff_id);
    assert_eq!(std::fs::read(fs.join("app/docker")).unwrap(), b"2");

    let images: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    let names: Vec<String> = images
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
        })
        .collect();
    assert!(names.contains(&format!("{host}/apps/oci:1.0")), "{names:?}");
    assert!(
        names.contains(&format!("{host}/apps/docker:1.0")),
        "{names:?}"
    );
    let table = env.ok(&["images"]);
    assert!(
        table.contains("apps/docker") && table.contains(&docker.config.digest.short()),
        "{table}"
    );

    // By digest too; the config survives for inspect.
    let by_digest = format!("{host}/apps/oci@{}", oci.manifest.digest);
    assert_eq!(pull_q(&env, &by_digest), oci.manifest.digest.to_string());
    // An array, as docker's inspect prints (containers and images alike).
    let inspected: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", &format!("{host}/apps/oci:1.0")])).unwrap();
    assert_eq!(inspected.as_array().map(Vec::len), Some(1), "{inspected}");
    let inspect = &inspected[0];
    assert_eq!(inspect["Id"], oci.config.digest.to_string());
    assert_eq!(inspect["Config"]["config"]["Cmd"], serde_json::json!(null));
    assert_eq!(
        inspect["Config"]["rootfs"]["diff_ids"][0],
        oci.layers[0].diff_id.to_string()
    );

    // rmi untags; the last tag takes the image; gc then removes the unshared layer.
    let out = env.ok(&["rmi", &format!("{host}/apps/oci:1.0")]);
    assert!(out.contains("Untagged") && out.contains("Deleted"), "{out}");
    env.ok(&["gc"]);
    let store = env.store();
    assert!(
        !store.has_layer(&oci.layers[1].diff_id),
        "oci's own layer is unused after rmi + gc"
    );
    assert!(
        store.has_layer(&oci.layers[0].diff_id),
        "the shared base is still used by apps/docker"
    );
    let verify = env.ok(&["verify"]);
    assert!(verify.contains("consistent"), "{verify}");
}

#[test]
fn multi_platform_images_select_the_host_or_the_requested_platform() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    for format in [Format::Oci, Format::Docker] {
        let index = Index::amd64_and_arm64(format, str::to_owned).unwrap();
        let tag = format!("{format:?}").to_lowercase();
        client.push_index("multi/arch", &tag, &index).unwrap();
        let name = format!("{}/multi/arch:{tag}", registry.host());

        let env = Env::new();
        let host_arch = Platform::host().architecture;
        let host_image = index
            .images
            .iter()
            .find(|i| i.platform.architecture == host_arch)
            .unwrap_or_else(|| {
                panic!("the index has images for amd64 and arm64 only, not this host's {host_arch}")
            });
        assert_eq!(pull_q(&env, &name), host_image.manifest.digest.to_string());
        let arm = env.ok(&["pull", "-q", "--platform", "linux/arm64", &name]);
        assert_eq!(arm.trim(), index.images[1].manifest.digest.to_string());
        let fs = env.store().layer_dir(&index.images[1].layers[0].diff_id);
        assert_eq!(std::fs::read_to_string(fs.join("arch")).unwrap(), "arm64");

        let err = env.fails(&["pull", "--platform", "linux/s390x", &name]);
        assert!(err.contains("no image for platform linux/s390x"), "{err}");
        assert!(
            err.contains("linux/amd64") && err.contains("linux/arm64/v8"),
            "{err}"
        );
        let err = env.fails(&["pull", "--platform", "linux", &name]);
        assert!(err.contains("invalid --platform"), "{err}");
    }
}

#[test]
fn basic_auth_needs_login_and_login_checks_the_password() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    })
    .unwrap();
    let image = image_with(Format::Oci, &[&[Entry::file("secret", "x")]]);
    registry.push_image("private/app", "v1", &image).unwrap();
    let host = registry.host();
    let name = format!("{host}/private/app:v1");

    let env = Env::new();
    let err = env.fails(&["pull", &name]);
    assert!(
        err.contains("authentication required") && err.contains(&format!("skiff login {host}")),
        "{err}"
    );

    let login = |password: &str| env.login("alice", &host, password);
    let bad = login("wrong");
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        !env.auth_file().exists(),
        "a refused login must not be saved"
    );
    let good = login("s3cret");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("Login Succeeded"));
    let saved = std::fs::read_to_string(env.auth_file()).unwrap();
    assert!(saved.contains(&host), "{saved}");

    assert_eq!(pull_q(&env, &name), image.manifest.digest.to_string());
    assert!(
        env.ok(&["logout", &host])
            .contains("Removing login credentials")
    );
    env.ok(&["rmi", &name]);
    let err = env.fails(&["pull", &name]);
    assert!(err.contains("authentication required"), "{err}");
}

#[test]
fn tls_registry_needs_its_ca_in_certs_d_or_the_config() {
    let registry = Registry::start_with(RegistryOptions {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let image = image_with(Format::Oci, &[&[Entry::file("over-tls", "yes")]]);
    registry.push_image("secure/app", "1", &image).unwrap();
    let host = registry.host();
    let name = format!("{host}/secure/app:1");

    let env = Env::new();
    let certs = env.dir.path().join("certs.d");
    env.config(&format!(
        "retries = 2\ncerts_dirs = [{:?}]\n",
        certs.display().to_string()
    ));
    let err = env.fails(&["pull", &name]);
    assert!(
        err.contains("not trusted") && err.contains("certs.d"),
        "{err}"
    );

    std::fs::create_dir_all(certs.join(&host)).unwrap();
    std::fs::copy(
        registry.ca_file().unwrap(),
        certs.join(&host).join("ca.crt"),
    )
    .unwrap();
    assert_eq!(pull_q(&env, &name), image.manifest.digest.to_string());

    let env2 = Env::new();
    env2.config(&format!(
        "certs_dirs = []\n[[registry]]\nprefix = {host:?}\nca_file = {:?}\n",
        registry.ca_file().unwrap().display().to_string()
    ));
    assert_eq!(pull_q(&env2, &name), image.manifest.digest.to_string());
}

#[test]
fn missing_images_and_unreachable_registries_are_named_in_the_error() {
    let registry = Registry::start().unwrap();
    registry
        .push_image(
            "there/app",
            "1",
            &image_with(Format::Oci, &[&[Entry::file("a", "b")]]),
        )
        .unwrap();
    let host = registry.host();
    let env = Env::new();

    let err = env.fails(&["pull", &format!("{host}/there/app:2")]);
    assert!(
        err.contains("not found")
            && err.contains("there/app")
            && err.contains("check the image name and tag"),
        "{err}"
    );
    let err = env.fails(&["pull", &format!("{host}/nowhere/app:1")]);
    assert!(
        err.contains("not found") && err.contains("nowhere/app"),
        "{err}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = env.fails(&["pull", &format!("{closed}/x/y:1")]);
    assert!(
        err.contains("cannot reach registry") && err.contains(&closed.to_string()),
        "{err}"
    );

    let err = env.fails(&["pull", "UPPER/case"]);
    assert!(err.contains("lowercase"), "{err}");
    assert!(env.store().layers().unwrap().is_empty());
}

#[test]
fn tampered_and_hostile_images_are_refused_and_nothing_is_committed() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let host = registry.host();

    // A config whose diff_id does not match the layer.
    let good = image_with(Format::Oci, &[&[Entry::file("a", "good")]]);
    let other = image_with(Format::Oci, &[&[Entry::file("a", "other")]]);
    let mut config: serde_json::Value = serde_json::from_slice(&good.config.bytes).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::json!(other.layers[0].diff_id.to_string());
    let forged_config = skiff_test_rig::image::Blob::new(
        serde_json::to_vec(&config).unwrap(),
        good.config.media_type.clone(),
    );
    let mut manifest: serde_json::Value = serde_json::from_slice(&good.manifest.bytes).unwrap();
    manifest["config"] = forged_config.descriptor();
    let forged = Image {
        manifest: skiff_test_rig::image::Blob::new(
            serde_json::to_vec(&manifest).unwrap(),
            good.manifest.media_type.clone(),
        ),
        config: forged_config,
        ..good.clone()
    };
    client.push_image("bad/diffid", "1", &forged).unwrap();

    // A layer with a name that climbs out.
    let hostile = image_with(Format::Oci, &[&[Entry::file("../../escape", "x")]]);
    client.push_image("bad/hostile", "1", &hostile).unwrap();

    // An artifact, not an image.
    let mut art: serde_json::Value = serde_json::from_slice(&good.manifest.bytes).unwrap();
    art["config"]["mediaType"] = serde_json::json!("application/vnd.cncf.helm.config.v1+json");
    let art_blob = skiff_test_rig::image::Blob::new(
        serde_json::to_vec(&art).unwrap(),
        good.manifest.media_type.clone(),
    );
    client.push_blob("bad/artifact", &good.config).unwrap();
    client
        .push_blob("bad/artifact", &good.layers[0].blob)
        .unwrap();
    client
        .push_manifest("bad/artifact", "1", &art_blob)
        .unwrap();

    let env = Env::new();
    let err = env.fails(&["pull", &format!("{host}/bad/diffid:1")]);
    assert!(
        err.contains("diff_id") && err.contains(&good.layers[0].blob.digest.to_string()),
        "{err}"
    );
    assert!(
        err.contains(&other.layers[0].diff_id.to_string())
            && err.contains(&good.layers[0].diff_id.to_string()),
        "{err}"
    );

    let err = env.fails(&["pull", &format!("{host}/bad/hostile:1")]);
    assert!(
        err.contains("bad/hostile") && err.contains(&hostile.layers[0].blob.digest.to_string()),
        "{err}"
    );
    assert!(err.contains("../../escape"), "{err}");

    let err = env.fails(&["pull", &format!("{host}/bad/artifact:1")]);
    assert!(err.contains("not an image config"), "{err}");

    let store = env.store();
    assert!(store.layers().unwrap().is_empty());
    assert!(store.images().unwrap().is_empty());
    assert!(
        std::fs::read_dir(env.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(!env.dir.path().join("escape").exists());
}

#[test]
fn mirrors_are_tried_first_and_fall_back_to_the_registry() {
    let upstream = Registry::start().unwrap();
    let mirror = Registry::start().unwrap();
    let image = image_with(Format::Oci, &[&[Entry::file("m", "1")]]);
    upstream.push_image("lib/app", "1", &image).unwrap();
    let only_on_mirror = image_with(Format::Oci, &[&[Entry::file("m", "2")]]);
    mirror.push_image("lib/app", "2", &only_on_mirror).unwrap();

    let env = Env::new();
    env.config(&format!(
        "retries = 2\n[[registry]]\nprefix = {:?}\nmirrors = [{:?}]\n",
        upstream.host(),
        mirror.host()
    ));
    // Not on the mirror: falls back to the registry itself.
    assert_eq!(
        pull_q(&env, &format!("{}/lib/app:1", upstream.host())),
        image.manifest.digest.to_string()
    );
    // Only on the mirror: served from it even though the registry lacks it.
    assert_eq!(
        pull_q(&env, &format!("{}/lib/app:2", upstream.host())),
        only_on_mirror.manifest.digest.to_string()
    );
}

#[test]
fn bad_config_file_is_a_clear_error() {
    let env = Env::new();
    env.config("max_concurrent_downloads = \"many\"\n");
    let err = env.fails(&["images"]);
    assert!(
        err.contains("config.toml") && err.contains("invalid"),
        "{err}"
    );
}

#[test]
fn credential_helpers_from_docker_config_are_used() {
    let registry = Registry::start_with(RegistryOptions {
        basic_auth: Some(("helper-user".into(), "helper-pw".into())),
        ..Default::default()
    })
    .unwrap();
    let image = image_with(Format::Oci, &[&[Entry::file("h", "1")]]);
    registry.push_image("via/helper", "1", &image).unwrap();
    let host = registry.host();

    let env = Env::new();
    // A credential helper, as docker runs it: `docker-credential-NAME get`, server on stdin.
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-skifftest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = {host} ] || exit 1\n\
             echo '{{\"ServerURL\":\"{host}\",\"Username\":\"helper-user\",\"Secret\":\"helper-pw\"}}'\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        env.auth_file(),
        format!(r#"{{"credHelpers": {{"{host}": "skifftest"}}}}"#),
    )
    .unwrap();

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = env
        .cmd(&["pull", "-q", &format!("{host}/via/helper:1")])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image.manifest.digest.to_string()
    );
}

#[test]
fn oversized_configs_are_refused_before_anything_is_stored() {
    let registry = Registry::start().unwrap();
    // 33 MiB of labels: over the 32 MiB limit on image configs.
    let image = ImageBuilder::new(Format::Oci)
        .layer(&[Entry::file("a", "b")], Compression::Gzip)
        .unwrap()
        .config_field(
            "Labels",
            serde_json::json!({ "padding": "x".repeat(33 << 20) }),
        )
        .build()
        .unwrap();
    registry.push_image("huge/config", "1", &image).unwrap();
    let env = Env::new();
    let err = env.fails(&["pull", &format!("{}/huge/config:1", registry.host())]);
    assert!(
        err.contains("larger than") && err.contains("huge/config"),
        "{err}"
    );
    assert!(env.store().layers().unwrap().is_empty());
    assert!(env.store().blobs().unwrap().is_empty());
}
