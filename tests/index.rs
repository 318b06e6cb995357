//! Lazy-start indexes end to end: `skiff index push` against the real registry (distribution
//! 2.8: the referrers tag scheme), files read back through the index with Range requests,
//! a tampered index refused; as root and as the unprivileged test user.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;

use common::Env;
use skiff_test_rig::image::Blob;
use skiff_test_rig::{
    Compression, Entry, Format, Image, ImageBuilder, Registry, busybox, rootless_test,
};
use skiff_test_rig::{Fault, FaultProxy};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pseudo-random bytes: they do not compress, so a layer of them spans many checkpoints.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// busybox, a layer of 12 MiB of files (several checkpoints apart), and a top layer that
/// deletes one of them and links to another.
fn image() -> (Image, Vec<(String, Vec<u8>)>) {
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("data/f{i}"), noise(2 << 20, i + 1)))
        .collect();
    let mut entries: Vec<Entry> = files
        .iter()
        .map(|(p, d)| Entry::file(p.clone(), d.clone()))
        .collect();
    entries.push(Entry::file("hid/old", "hidden by the layer above\n"));
    let image = ImageBuilder::new(Format::Oci)
        .layer(&busybox::entries().unwrap(), Compression::Gzip)
        .unwrap()
        .layer(&entries, Compression::GzipDefault)
        .unwrap()
        .layer(
            &[
                Entry::whiteout("data/f0"),
                Entry::symlink("etc/latest", "/data/f5"),
                Entry::file("data/new", "written on top\n"),
                Entry::opaque("hid"),
                Entry::file("hid/fresh", "fresh\n"),
                Entry::file("etc/tagged", "tagged\n").xattr("user.skiff.test", "yes"),
            ],
            Compression::Gzip,
        )
        .unwrap()
        .build()
        .unwrap();
    (image, files)
}

fn push_and_read_body() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let (image, files) = image();
    client.push_image("tools/data", "1", &image).unwrap();
    let name = format!("{}/tools/data:1", registry.host());
    let env = Env::new();

    // No index yet: a clear error naming the command that makes one.
    let out = env.skiff(&["index", "cat", &name, "/data/f1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("has no lazy index") && stderr.contains("skiff index push"),
        "{stderr}"
    );

    let printed = env.ok(&["index", "push", &name]);
    let tag = format!("sha256-{}", image.manifest.digest.hex());
    assert!(
        printed.contains("indexed 3 layers") && printed.contains(&tag),
        "{printed}"
    );
    // Pushed again: the referrers tag still lists one skiff index.
    let digest = env.ok(&["index", "push", "-q", &name]).trim().to_owned();
    let listed = client.get_manifest("tools/data", &tag, &[INDEX]).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&listed.bytes).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(manifests[0]["digest"], digest.as_str());
    assert_eq!(
        manifests[0]["artifactType"],
        "application/vnd.skiff.lazy.index.v1+json"
    );

    // Through a proxy that logs what is asked for: one file costs a Range request of its
    // part of the layer, not the layer.
    let proxy = FaultProxy::start(registry.addr(), Vec::new()).unwrap();
    let via = format!("{}/tools/data:1", proxy.host());
    let data_layer = &image.layers[1].blob;
    let out = env.skiff(&["index", "cat", &via, "/data/f3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == files[3].1, "data/f3: content differs");
    let ranged: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&data_layer.digest.hex()))
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    let (from, to) = ranged[0]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
        .expect("a Range request");
    let layer_size = data_layer.bytes.len() as u64;
    assert!(
        from > 0 && to - from < layer_size / 2,
        "read {from}-{to} of a {layer_size}-byte layer for one 2 MiB file"
    );

    // Every file reads back byte for byte.
    for (path, data) in &files[1..] {
        let out = env.skiff(&["index", "cat", &via, &format!("/{path}")]);
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == *data, "{path}: content differs");
    }
    let out = env.skiff(&["index", "cat", &name, "/etc/latest"]);
    assert!(out.stdout == files[5].1, "the symlink is followed");
    assert_eq!(
        env.ok(&["index", "cat", &name, "/data/new"]),
        "written on top\n"
    );
    let passwd = env.ok(&["index", "cat", &name, "/etc/passwd"]);
    assert!(passwd.starts_with("root:"), "{passwd}");
    // Deleted by the top layer's whiteout; never there.
    for gone in ["/data/f0", "/no/such/file"] {
        let out = env.skiff(&["index", "cat", &name, gone]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{gone}: {stderr}");
        assert!(stderr.contains("no such file"), "{stderr}");
    }

    // A connection dropped mid-read is retried; one that always drops fails the read clearly.
    let drop_after = |times| Fault::DropAfter {
        path_contains: data_layer.digest.hex(),
        bytes: 1000,
        times,
    };
    proxy.add_fault(drop_after(1));
    let out = env.skiff(&["index", "cat", &via, "/data/f4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == files[4].1,
        "data/f4 after a dropped connection"
    );
    proxy.add_fault(drop_after(100));
    let out = env.skiff(&["index", "cat", &via, "/data/f2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&data_layer.digest.to_string()) && stderr.contains("gave up"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // Nothing was pulled.
    assert!(env.ok(&["images", "-q"]).trim().is_empty());
}
rootless_test!(
    rootless_index_push_and_read,
    push_and_read_body,
    env = common::rootless_env
);

#[test]
fn index_push_and_read() {
    skiff_test_rig::require_root();
    push_and_read_body();
}

/// Tampered tables: a file whose content no longer matches the digest the index gives, and
/// an index that describes another image, are refused with errors that say so.
#[test]
fn a_tampered_index_is_refused() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let (image, _) = image();
    client.push_image("tools/data", "1", &image).unwrap();
    let name = format!("{}/tools/data:1", registry.host());
    let env = Env::new();
    let artifact = env.ok(&["index", "push", "-q", &name]).trim().to_owned();

    // Rewrite the table of the data layer: f2's digest becomes f3's.
    let tampered = tamper_table(&client, "tools/data", &image, &artifact, 1, |entries| {
        let f3 = entries.iter().find(|e| e["path"] == "data/f3").unwrap()["digest"].clone();
        let f2 = entries.iter_mut().find(|e| e["path"] == "data/f2").unwrap();
        f2["digest"] = f3;
    });
    let out = env.skiff(&["index", "cat", &name, "/data/f2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("data/f2") && stderr.contains("the index says"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no byte of a refused file is printed"
    );

    // An index whose subject is another image.
    let fetched = client
        .get_manifest("tools/data", &tampered, &[MANIFEST])
        .unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&fetched.bytes).unwrap();
    manifest["subject"]["digest"] = image.config.digest.to_string().into();
    republish(&client, "tools/data", &image, &manifest);
    let out = env.skiff(&["index", "cat", &name, "/data/f1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("not the image"), "{stderr}");
}

/// A windows blob that is not what the table says (the history each checkpoint resumes from,
/// fetched with the chunk it starts: here cut short): a read that needs it fails, naming the
/// file, and prints no byte of it. (Damaged windows are refused by the file's digest: a unit
/// test of the chunk cache, where the layer's data reaches into its windows.)
#[test]
fn a_windows_blob_that_is_not_the_tables_fails_the_read() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let (image, files) = image();
    client.push_image("tools/win", "1", &image).unwrap();
    let name = format!("{}/tools/win:1", registry.host());
    let env = Env::new();
    let artifact = env.ok(&["index", "push", "-q", &name]).trim().to_owned();
    // The last file of the data layer: its chunk starts from a checkpoint.
    let read = env.skiff(&["index", "cat", &name, "/data/f5"]);
    assert!(read.status.success() && read.stdout == files[5].1);
    tamper_whole_table(&client, "tools/win", &image, &artifact, 1, |table| {
        let short = Blob::new(
            b"too short".to_vec(),
            "application/vnd.skiff.lazy.windows.v1",
        );
        client.push_blob("tools/win", &short).unwrap();
        table["windows"]["digest"] = short.digest.to_string().into();
    });
    let out = env.skiff(&["index", "cat", &name, "/data/f5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("data/f5"), "{stderr}");
    assert!(out.stdout.is_empty(), "no byte of a failed read is printed");
}

/// Only gzip layers have checkpoints: an image with a zstd layer is refused by name.
#[test]
fn only_gzip_layers_are_indexed() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let image = ImageBuilder::new(Format::Oci)
        .layer(&busybox::entries().unwrap(), Compression::Gzip)
        .unwrap()
        .layer(&[Entry::file("app/z", "zstd")], Compression::Zstd)
        .unwrap()
        .build()
        .unwrap();
    client.push_image("tools/z", "1", &image).unwrap();
    let env = Env::new();
    let out = env.skiff(&["index", "push", &format!("{}/tools/z:1", registry.host())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&image.layers[1].blob.digest.to_string())
            && stderr.contains("only gzip layers can be indexed"),
        "{stderr}"
    );
}

/// `skiff index mount`: the image read-only at a directory through its index (one FUSE file
/// system of the merged tree): the tree as a pull would give it, binaries that run, files
/// fetched by Range requests only, a read the registry keeps failing is EIO, and Ctrl-C leaves
/// no mount, even with a file still open in it.
#[test]
fn a_lazy_mount_serves_the_image_and_goes_away() {
    skiff_test_rig::require_root();
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let (image, files) = image();
    client.push_image("tools/data", "1", &image).unwrap();
    let env = Env::new();
    env.ok(&[
        "index",
        "push",
        &format!("{}/tools/data:1", registry.host()),
    ]);
    let proxy = FaultProxy::start(registry.addr(), Vec::new()).unwrap();
    let via = format!("{}/tools/data:1", proxy.host());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();

    let mut child = env
        .cmd(&["index", "mount", &via, &target])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("mounted at"), "{line}");

    let root = dir.path();
    let mut listed: Vec<String> = std::fs::read_dir(root.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["f1", "f2", "f3", "f4", "f5", "new"],
        "f0 is whited out"
    );
    assert!(std::fs::read(root.join("data/f3")).unwrap() == files[3].1);
    // Again: from what the layer kept (or the kernel's cache), the same.
    assert!(std::fs::read(root.join("data/f3")).unwrap() == files[3].1);
    // An opaque directory hides the one below; xattrs come from the index (a layer without
    // any answers none).
    let hid: Vec<String> = std::fs::read_dir(root.join("hid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(hid, ["fresh"]);
    assert_eq!(
        xattr::get(root.join("etc/tagged"), "user.skiff.test").unwrap(),
        Some(b"yes".to_vec())
    );
    assert!(!matches!(
        xattr::get(root.join("data/f3"), "user.skiff.test"),
        Ok(Some(_))
    ));
    assert_eq!(
        std::fs::read_link(root.join("etc/latest")).unwrap(),
        Path::new("/data/f5")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("data/new")).unwrap(),
        "written on top\n"
    );
    // A binary of the image runs from the mount.
    let out = std::process::Command::new("chroot")
        .args([
            &target,
            "/bin/sh",
            "-c",
            "echo hello from a lazy mount; cat /data/new",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a lazy mount\nwritten on top\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only Range requests reached the layers; the data layer was never downloaded whole.
    let data_layer = image.layers[1].blob.digest.hex();
    let layer_requests: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/") && !r.path.contains("uploads"))
        .filter(|r| {
            image
                .layers
                .iter()
                .any(|l| r.path.contains(&l.blob.digest.hex()))
        })
        .collect();
    assert!(!layer_requests.is_empty());
    assert!(
        layer_requests.iter().all(|r| r.range.is_some()),
        "{layer_requests:?}"
    );
    // A registry that keeps dropping the connection: the read fails with EIO.
    proxy.add_fault(Fault::DropAfter {
        path_contains: data_layer,
        bytes: 100,
        times: 100,
    });
    let err = std::fs::read(root.join("data/f2")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");

    // A file still open in the mount at Ctrl-C: the mount goes all the same.
    let held = std::fs::File::open(root.join("data/new")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&target) && !mounts.contains("skiff-lazy"),
        "mounts left:\n{mounts}"
    );
    drop(held);
}

/// `run --lazy`: an uncached image with an index starts from it (files by Range request), is
/// pulled whole meanwhile (in the store afterwards, `verify` clean), and the next run uses the
/// store; an image without an index falls back to a full pull with one line saying why; a
/// lazy run killed with -9 leaves no helper behind.
fn run_lazy_body() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let (image, files) = image();
    client.push_image("tools/data", "1", &image).unwrap();
    client.push_image("tools/plain", "1", &image).unwrap();
    let env = Env::new();
    env.ok(&[
        "index",
        "push",
        &format!("{}/tools/data:1", registry.host()),
    ]);
    let proxy = FaultProxy::start(registry.addr(), Vec::new()).unwrap();
    let via = format!("{}/tools/data:1", proxy.host());

    let out = env.skiff(&[
        "run",
        "--rm",
        "--lazy",
        &via,
        "sh",
        "-c",
        "ls /data; cat /data/f3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let listing = b"f1\nf2\nf3\nf4\nf5\nnew\n";
    assert!(out.stdout.starts_with(listing), "{stderr}");
    assert!(
        out.stdout[listing.len()..] == files[3].1,
        "data/f3 through the lazy mount"
    );
    assert!(stderr.contains("Unable to find image"), "{stderr}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("Not Implemented"),
        "{stderr}"
    );
    // The payload read through Range requests; the background pull fetched the rest of the
    // layers, taking what the reads had fetched from them: the link carried each byte once
    // (give or take two reads racing for one stretch).
    let requests = proxy.requests();
    let data_layer = &image.layers[1].blob;
    let size = data_layer.bytes.len() as u64;
    let to_layer: Vec<_> = requests
        .iter()
        .filter(|r| r.path.contains(&data_layer.digest.hex()))
        .collect();
    assert!(to_layer.iter().any(|r| r.range.is_some()), "{to_layer:?}");
    let asked: u64 = to_layer.iter().map(|r| asked_bytes(r, size)).sum();
    assert!(
        asked >= size && asked <= size + size / 20,
        "{asked} bytes asked of a {size}-byte layer: {to_layer:?}"
    );
    // The image is in the store, whole and verified.
    let images = env.ok(&["images"]);
    assert!(images.contains("tools/data"), "{images}");
    let verify = env.skiff(&["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // The next run uses the store: nothing more is asked of the registry.
    let before = proxy.requests().len();
    let out = env.skiff(&["run", "--rm", "--lazy", &via, "cat", "/data/new"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "written on top\n");
    assert_eq!(
        proxy.requests().len(),
        before,
        "a cached image needs no registry"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("skiff-lazy"), "{mounts}");

    // No index: a full pull, said in one line.
    let plain = format!("{}/tools/plain:1", registry.host());
    let out = env.skiff(&["run", "--rm", "--lazy", &plain, "cat", "/data/new"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "written on top\n",
        "{stderr}"
    );
    assert_eq!(stderr.matches("cannot start lazily").count(), 1, "{stderr}");
    assert!(stderr.contains("has no lazy index"), "{stderr}");

    // Killed with -9 mid-run: the helper goes with it.
    let fresh = Env::new();
    let mut child = Reaped(
        fresh
            .cmd(&[
                "run",
                "--rm",
                "--lazy",
                &via,
                "sh",
                "-c",
                "echo ready; exec sleep 1000",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _out = ready(&mut child);
    // The launcher and its forked helper share the command line; the payload has its own.
    let helpers = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("--lazy") && c.contains(&via) && c.contains("exec sleep 1000")
                    })
                    .unwrap_or(false)
            })
            .count()
    };
    assert!(helpers() >= 2, "launcher and helper run");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while helpers() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(helpers(), 0, "the helper outlived its launcher");
    // The payload of the killed run is swept by the next gc.
    let gc = fresh.skiff(&["gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );

    // Ctrl-C: forwarded to the payload, which still has its files while it handles it.
    let third = Env::new();
    let script = "trap 'cat /data/new; exit 3' INT; echo ready; while :; do sleep 0.1; done";
    let mut child = Reaped(
        third
            .cmd(&["run", "--rm", "--lazy", &via, "sh", "-c", script])
            // Its own process group, which the Ctrl-C below reaches whole, as a terminal's.
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(third.dir.path().join("ctrl-c.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut out = ready(&mut child);
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let code = child.0.wait().unwrap().code();
    let stderr = std::fs::read_to_string(third.dir.path().join("ctrl-c.err")).unwrap_or_default();
    assert_eq!(rest, "written on top\n", "exit {code:?}: {stderr}");
    assert_eq!(code, Some(3), "{stderr}");
}

/// The child's output, once its first line said `ready`.
fn ready(child: &mut Reaped) -> std::io::BufReader<std::process::ChildStdout> {
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    out
}

/// How many bytes of a `size`-byte blob a request asked for.
fn asked_bytes(request: &skiff_test_rig::fault_proxy::RequestLog, size: u64) -> u64 {
    let Some(range) = &request.range else {
        return size;
    };
    let (start, end) = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .unwrap_or_else(|| panic!("a Range header skiff would not send: {range}"));
    let start: u64 = start.parse().unwrap();
    let end: u64 = if end.is_empty() {
        size
    } else {
        end.parse::<u64>().unwrap() + 1
    };
    end.min(size) - start
}

#[test]
fn run_lazy_starts_from_the_index_and_pulls_meanwhile() {
    skiff_test_rig::require_root();
    run_lazy_body();
}

// Rootless: the helper mounts FUSE inside skiff's user namespace (setup.sh opens /dev/fuse).
rootless_test!(
    rootless_run_lazy_starts_from_the_index_and_pulls_meanwhile,
    run_lazy_body,
    env = common::rootless_env
);
rootless_test!(
    rootless_without_a_subuid_range_run_lazy,
    run_lazy_body,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

/// Publishes `manifest` as the index artifact of `image` in `repo` (and the referrers tag
/// listing it alone); returns its digest.
fn republish(
    client: &skiff_test_rig::RegistryClient,
    repo: &str,
    image: &Image,
    manifest: &serde_json::Value,
) -> String {
    let artifact = Blob::new(serde_json::to_vec(&manifest).unwrap(), MANIFEST);
    client
        .push_manifest(repo, &artifact.digest.to_string(), &artifact)
        .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": artifact.digest.to_string(),
            "size": artifact.bytes.len(),
            "artifactType": "application/vnd.skiff.lazy.index.v1+json"
        }]
    });
    let index = Blob::new(serde_json::to_vec(&index).unwrap(), INDEX);
    let tag = format!("sha256-{}", image.manifest.digest.hex());
    client.push_manifest(repo, &tag, &index).unwrap();
    artifact.digest.to_string()
}

/// Rewrites the entries of the table of image layer `layer_index` in the published index
/// with `edit` and republishes the index (artifact and referrers tag) for `image` in `repo`.
fn tamper_table(
    client: &skiff_test_rig::RegistryClient,
    repo: &str,
    image: &Image,
    artifact: &str,
    layer_index: usize,
    edit: impl Fn(&mut Vec<serde_json::Value>),
) -> String {
    tamper_whole_table(client, repo, image, artifact, layer_index, |table| {
        edit(table["entries"].as_array_mut().unwrap());
    })
}

/// As [`tamper_table`], `edit` given the whole table.
fn tamper_whole_table(
    client: &skiff_test_rig::RegistryClient,
    repo: &str,
    image: &Image,
    artifact: &str,
    layer_index: usize,
    edit: impl Fn(&mut serde_json::Value),
) -> String {
    let fetched = client.get_manifest(repo, artifact, &[MANIFEST]).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&fetched.bytes).unwrap();
    let layer = image.layers[layer_index].blob.digest.to_string();
    let slot = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l["annotations"]["dev.skiff.lazy.layer"] == layer.as_str())
        .unwrap();
    let digest = manifest["layers"][slot]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let compressed = client.get_blob(repo, &digest.parse().unwrap()).unwrap();
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut json,
    )
    .unwrap();
    let mut table: serde_json::Value = serde_json::from_slice(&json).unwrap();
    edit(&mut table);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &serde_json::to_vec(&table).unwrap()).unwrap();
    let blob = Blob::new(
        gz.finish().unwrap(),
        "application/vnd.skiff.lazy.toc.v1+json+gzip",
    );
    client.push_blob(repo, &blob).unwrap();
    manifest["layers"][slot]["digest"] = blob.digest.to_string().into();
    manifest["layers"][slot]["size"] = blob.bytes.len().into();
    republish(client, repo, image, &manifest)
}

/// An index whose metadata lies (a symlink's target): the lazy run serves it (only contents
/// are checked on read), but once the image is pulled whole the lie is found, reported, and the
/// index is not used again: the next lazy start of that image pulls it whole, saying why.
#[test]
fn an_index_that_disagrees_with_its_layers_is_not_used_again() {
    skiff_test_rig::require_root();
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let (image, _) = image();
    client.push_image("tools/data", "1", &image).unwrap();
    let name = format!("{}/tools/data:1", registry.host());
    let env = Env::new();
    let artifact = env.ok(&["index", "push", "-q", &name]).trim().to_owned();
    tamper_table(&client, "tools/data", &image, &artifact, 2, |entries| {
        let link = entries
            .iter_mut()
            .find(|e| e["path"] == "etc/latest")
            .unwrap();
        link["link"] = "/data/f1".into();
    });
    let out = env.skiff(&["run", "--rm", "--lazy", &name, "readlink", "/etc/latest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/data/f1\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("disagrees with layer") && stderr.contains("etc/latest"),
        "{stderr}"
    );
    // The store has the real image.
    let out = env.skiff(&["run", "--rm", &name, "readlink", "/etc/latest"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/data/f5\n");
    assert!(env.skiff(&["rmi", &name]).status.success());
    let out = env.skiff(&["run", "--rm", "--lazy", &name, "readlink", "/etc/latest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/data/f5\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot start lazily") && stderr.contains("disagreed"),
        "{stderr}"
    );
}

/// Kills and reaps the child when dropped: a failed assertion leaves no skiff running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// busybox in one gzip layer and `entries` in another.
fn busybox_and(entries: &[Entry]) -> Image {
    ImageBuilder::new(Format::Oci)
        .layer(&busybox::entries().unwrap(), Compression::Gzip)
        .unwrap()
        .layer(entries, Compression::Gzip)
        .unwrap()
        .build()
        .unwrap()
}

/// `skiff run --rm -i --lazy REFERENCE sh -c SCRIPT`, stdio piped, with the lazy helper's
/// debug log on stderr.
fn run_lazy_logged(env: &Env, reference: &str, script: &str) -> Reaped {
    Reaped(
        env.cmd(&["run", "--rm", "-i", "--lazy", reference, "sh", "-c", script])
            .env("RUST_LOG", "skiff::lazy=debug")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits (up to a minute) for the background pull to have put the image in the store.
fn wait_for_the_pull(env: &Env) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.ok(&["images", "-q"]).lines().count() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The rest of the run's output and its stderr, once it exited 0.
fn finish(
    child: &mut Reaped,
    mut out: std::io::BufReader<std::process::ChildStdout>,
) -> (Vec<u8>, String) {
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut out, &mut rest).unwrap();
    let status = child.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    (rest, stderr)
}

/// Once the background pull has committed the image (pushes are from the store), tells the
/// payload to go on; the rest of its output and its stderr.
fn go_once_pulled(
    env: &Env,
    child: &mut Reaped,
    out: std::io::BufReader<std::process::ChildStdout>,
) -> (Vec<u8>, String) {
    wait_for_the_pull(env);
    std::io::Write::write_all(&mut child.0.stdin.take().unwrap(), b"go\n").unwrap();
    finish(child, out)
}

/// The helper's log line for `image`'s second layer, once it says the tree was listed ahead.
fn listed_ahead_and_served<'a>(stderr: &'a str, image: &Image) -> &'a str {
    assert!(
        stderr.contains("listed the image's tree ahead of the payload"),
        "{stderr}"
    );
    let data_layer = image.layers[1].blob.digest.to_string();
    stderr
        .lines()
        .find(|l| l.contains("a lazy layer served") && l.contains(&data_layer))
        .unwrap_or_else(|| panic!("{stderr}"))
}

/// The small files of a directory the payload listed are pushed from the store into the
/// kernel's page cache once the background pull has committed their layer (counted in the
/// helper's debug log), never before (nothing is fetched for it), and read right from there.
fn committed_files_pushed_body() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let small: Vec<Vec<u8>> = (0..3).map(|i| noise(100 << 10, 20 + i)).collect();
    let image = busybox_and(&[
        Entry::file("data/s0", small[0].clone()),
        Entry::file("data/s1", small[1].clone()),
        Entry::file("data/s2", small[2].clone()),
        // Above the size pushed.
        Entry::file("data/big", noise(2 << 20, 30)),
    ]);
    client.push_image("tools/through", "1", &image).unwrap();
    let env = Env::new();
    env.ok(&[
        "index",
        "push",
        "-q",
        &format!("{}/tools/through:1", registry.host()),
    ]);
    // A slow link until the payload listed /data once: the pull cannot have committed it yet.
    let proxy = FaultProxy::start(registry.addr(), Vec::new()).unwrap();
    proxy.set_link(skiff_test_rig::fault_proxy::Link {
        bytes_per_sec: Some(256 << 10),
        round_trip: std::time::Duration::ZERO,
    });
    let via = format!("{}/tools/through:1", proxy.host());
    let script = "ls /data >/dev/null; echo ready; read go; ls /data; sleep 1; \
                  cat /data/s0 /data/s1 /data/s2";
    let mut child = run_lazy_logged(&env, &via, script);
    let mut out = ready(&mut child);
    let mut line = String::new();
    let in_store = || env.ok(&["images", "-q"]).lines().count() == 1;
    assert!(
        !in_store(),
        "the pull finished before the payload listed /data"
    );
    proxy.set_link(skiff_test_rig::fault_proxy::Link::default());
    wait_for_the_pull(&env);
    std::io::Write::write_all(&mut child.0.stdin.take().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "big\n");
    for _ in 0..3 {
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    }
    assert_eq!(line, "big\ns0\ns1\ns2\n");
    let (rest, stderr) = finish(&mut child, out);
    assert!(rest == small.concat(), "{stderr}");
    // One line per layer as its file system is unmounted.
    let data_layer = image.layers[1].blob.digest.to_string();
    let served: Vec<(bool, u64, u64)> = stderr
        .lines()
        .filter(|l| l.contains("a lazy layer served"))
        .map(|l| {
            let count = |key: &str| -> u64 {
                let at = l.find(key).unwrap_or_else(|| panic!("{key} in {l}")) + key.len();
                l[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (l.contains(&data_layer), count("reads="), count("pushed="))
        })
        .collect();
    assert_eq!(served.len(), 2, "{stderr}");
    // s0, s1 and s2 once each, never big; nothing of busybox's layer (no listing there).
    let pushed = |data: bool| served.iter().find(|s| s.0 == data).map(|s| s.2);
    assert_eq!(pushed(true), Some(3), "{stderr}");
    assert_eq!(pushed(false), Some(0), "{stderr}");
}

#[test]
fn files_of_committed_layers_are_pushed_into_the_page_cache() {
    skiff_test_rig::require_root();
    committed_files_pushed_body();
}

rootless_test!(
    rootless_files_of_committed_layers_are_pushed_into_the_page_cache,
    committed_files_pushed_body,
    env = common::rootless_env
);
rootless_test!(
    rootless_without_a_subuid_range_files_are_pushed_into_the_page_cache,
    committed_files_pushed_body,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

/// A payload that walks the image (here: lists 40 directories) has the rest of the tree
/// listed ahead of it by the helper: the small files of /other, a directory the payload never
/// lists, are pushed into the page cache from the store all the same (counted in the helper's
/// debug log), and read right.
fn listed_ahead_body() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    let mut entries: Vec<Entry> = (0..40)
        .map(|i| Entry::file(format!("tree/d{i:02}/f"), noise(1 << 10, 100 + i)))
        .collect();
    let other: Vec<Vec<u8>> = (0..3).map(|i| noise(50 << 10, 200 + i)).collect();
    for (i, content) in other.iter().enumerate() {
        entries.push(Entry::file(format!("other/o{i}"), content.clone()));
    }
    let image = busybox_and(&entries);
    client.push_image("tools/walked", "1", &image).unwrap();
    let env = Env::new();
    let reference = format!("{}/tools/walked:1", registry.host());
    env.ok(&["index", "push", "-q", &reference]);
    let script = "for d in /tree/*; do ls $d >/dev/null; done; echo ready; read go; \
                  sleep 1; cat /other/o0 /other/o1 /other/o2";
    let mut child = run_lazy_logged(&env, &reference, script);
    let out = ready(&mut child);
    let (rest, stderr) = go_once_pulled(&env, &mut child, out);
    assert!(rest == other.concat(), "{stderr}");
    let line = listed_ahead_and_served(&stderr, &image);
    // The 40 files of the directories the payload listed, and the 3 of /other.
    assert!(line.contains("pushed=43"), "{stderr}");
}

#[test]
fn a_walking_payload_has_the_tree_listed_ahead_of_it() {
    skiff_test_rig::require_root();
    listed_ahead_body();
}

rootless_test!(
    rootless_a_walking_payload_has_the_tree_listed_ahead_of_it,
    listed_ahead_body,
    env = common::rootless_env
);

rootless_test!(
    rootless_without_a_subuid_range_a_walking_payload_has_the_tree_listed_ahead_of_it,
    listed_ahead_body,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

/// A payload that reads a directory's files in listing order (a walk, `tar` of it) has the
/// rest of them pushed into the page cache however big, once their layer is committed, and
/// read right from there; a big file outside the walk's directory is not pushed, nor a file
/// the payload read already (counted in the helper's debug log).
fn walked_files_pushed_body() {
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    // Each above the size pushed for any listing.
    let walked: Vec<Vec<u8>> = (0..40).map(|i| noise(300 << 10, 400 + i)).collect();
    let mut entries: Vec<Entry> = walked
        .iter()
        .enumerate()
        .map(|(i, content)| Entry::file(format!("walked/a{i:02}"), content.clone()))
        .collect();
    entries.push(Entry::file("other/big", noise(300 << 10, 480)));
    let image = busybox_and(&entries);
    client.push_image("tools/pushed", "1", &image).unwrap();
    let env = Env::new();
    let reference = format!("{}/tools/pushed:1", registry.host());
    env.ok(&["index", "push", "-q", &reference]);
    let names = |range: std::ops::Range<usize>| -> String {
        range.map(|i| format!("/walked/a{i:02} ")).collect()
    };
    // Named, not globbed: the payload lists no directory, the walk is seen in its reads.
    let script = format!(
        "cat {} >/dev/null; echo ready; read go; sleep 1; cat {}; cat /other/big | wc -c",
        names(0..32),
        names(32..40)
    );
    let mut child = run_lazy_logged(&env, &reference, &script);
    let out = ready(&mut child);
    let (rest, stderr) = go_once_pulled(&env, &mut child, out);
    let mut expected = walked[32..].concat();
    expected.extend_from_slice(format!("{}\n", 300 << 10).as_bytes());
    assert!(rest == expected, "{stderr}");
    let line = listed_ahead_and_served(&stderr, &image);
    // walked/a32 to a39: not the 32 read before, not other/big.
    assert!(line.contains("pushed=8"), "{stderr}");
}

#[test]
fn a_walk_has_the_files_it_will_read_pushed_whatever_their_size() {
    skiff_test_rig::require_root();
    walked_files_pushed_body();
}

rootless_test!(
    rootless_a_walk_has_the_files_it_will_read_pushed_whatever_their_size,
    walked_files_pushed_body,
    env = common::rootless_env
);

rootless_test!(
    rootless_without_a_subuid_range_a_walk_has_the_files_it_will_read_pushed,
    walked_files_pushed_body,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

/// A payload that reads a directory's files one after another in listing order (a `tar` or
/// `cp -r` of it) is taken for a walk of the image, and the background pull stops giving way to
/// its reads (the helper's debug log says so); one that reads a few of them out of order is not.
#[test]
fn a_payload_reading_a_directorys_files_in_order_is_a_walk() {
    skiff_test_rig::require_root();
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    // Files too big for the page-cache push: each is read through the file system.
    let entries: Vec<Entry> = (0..40)
        .map(|i| Entry::file(format!("swept/f{i:02}"), noise(300 << 10, 300 + i)))
        .collect();
    let image = busybox_and(&entries);
    client.push_image("tools/swept", "1", &image).unwrap();
    let reference = format!("{}/tools/swept:1", registry.host());
    Env::new().ok(&["index", "push", "-q", &reference]);
    let walk_line = "reads a directory's files in listing order";
    for (script, walks) in [
        (
            "cat /swept/f09 /swept/f03 /swept/f07 /swept/f01 | wc -c",
            false,
        ),
        ("cat /swept/* | wc -c", true),
    ] {
        let out = Env::new()
            .cmd(&["run", "--rm", "--lazy", &reference, "sh", "-c", script])
            .env("RUST_LOG", "skiff::lazy=debug")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let files = if walks { 40 } else { 4 };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            (files * (300 << 10)).to_string()
        );
        assert_eq!(stderr.contains(walk_line), walks, "{script}: {stderr}");
    }
}
