//! The architecture holds: launch (and its spec builder) and the image module never use the
//! registry client, and the command line lives in the binary, not the library.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out
}

fn uses(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .any(|l| l.contains(needle))
}

#[test]
fn launch_and_image_never_use_the_registry() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for dir in ["launch", "image"] {
        for file in sources(&src.join(dir)) {
            for needle in ["crate::registry", "super::registry", "reqwest"] {
                assert!(!uses(&file, needle), "{} uses {needle}", file.display());
            }
        }
    }
}

#[test]
fn the_command_line_is_the_binarys_alone() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in sources(&src) {
        if file.starts_with(src.join("cli")) || file.ends_with("main.rs") {
            continue;
        }
        for needle in [
            "mod cli;",
            "clap::",
            "anyhow",
            "indicatif",
            "tracing_subscriber",
        ] {
            assert!(!uses(&file, needle), "{} uses {needle}", file.display());
        }
    }
}
