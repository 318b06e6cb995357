//! The `busybox` fixture: Debian's busybox-static with its applet links, a passwd and a group
//! file with root and one unprivileged user.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::entry::Entry;
use crate::image::{Compression, Format, Image, ImageBuilder};

/// uid and gid of the fixture's unprivileged user `user`.
pub const USER_ID: u64 = 1000;

/// The image's PATH.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The static busybox binary: $SKIFF_TEST_BUSYBOX, else Debian's busybox-static.
pub fn busybox_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SKIFF_TEST_BUSYBOX") {
        return Ok(bin.into());
    }
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = PathBuf::from(candidate);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("busybox not found: run `sudo scripts/setup.sh` (installs Debian's busybox-static)")
}

/// The fixture's root filesystem as tar entries.
pub fn entries() -> Result<Vec<Entry>> {
    let bin = busybox_binary()?;
    let binary = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    let list = Command::new(&bin)
        .arg("--list-full")
        .output()
        .context("running busybox --list-full")?;
    if !list.status.success() {
        bail!(
            "busybox --list-full failed: {}",
            String::from_utf8_lossy(&list.stderr)
        );
    }
    let mut entries: Vec<Entry> = [
        "bin/",
        "dev/",
        "etc/",
        "home/",
        "proc/",
        "sbin/",
        "sys/",
        "usr/",
        "usr/bin/",
        "usr/sbin/",
        "var/",
    ]
    .into_iter()
    .map(Entry::dir)
    .collect();
    entries.push(Entry::dir("root/").mode(0o700));
    entries.push(Entry::dir("tmp/").mode(0o1777));
    entries.push(Entry::dir("home/user/").owner(USER_ID, USER_ID));
    entries.push(Entry::file("bin/busybox", binary).mode(0o755));
    let applets = String::from_utf8(list.stdout).context("busybox applet list")?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "bin/busybox" {
            entries.push(Entry::symlink(applet, "/bin/busybox"));
        }
    }
    entries.push(Entry::file(
        "etc/passwd",
        format!(
            "root:x:0:0:root:/root:/bin/sh\nuser:x:{USER_ID}:{USER_ID}:user:/home/user:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        ),
    ));
    entries.push(Entry::file(
        "etc/group",
        format!("root:x:0:\nuser:x:{USER_ID}:\nnogroup:x:65534:\n"),
    ));
    Ok(entries)
}

/// A builder holding the fixture's layer and PATH, for images made from it (no Cmd yet).
pub fn builder(format: Format, compression: Compression) -> Result<ImageBuilder> {
    Ok(ImageBuilder::new(format)
        .layer(&entries()?, compression)?
        .env(&[PATH]))
}

/// The fixture image: one layer, `Cmd ["sh"]`, a PATH, no entrypoint.
pub fn image(format: Format, compression: Compression) -> Result<Image> {
    builder(format, compression)?.cmd(&["sh"]).build()
}
