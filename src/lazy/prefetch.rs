//! What a lazy run fetches before the payload asks for it: the command's executable, the
//! shared libraries it names (ELF `DT_NEEDED`, two levels down), the dynamic loader and C
//! library, and the files every start reads (`/etc/passwd`, `/etc/group`, `/etc/ld.so.cache`).
//! All at once, on threads of the helper, while the layers are mounted and the container is
//! created, instead of one round trip after another as the payload opens them. Best effort: a
//! file that is missing or fails is left to the payload's own read, which reports it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::toc::{Kind, LayerToc};
use super::{LayerReader, lookup, resolve};

/// The search path when the container's environment sets none (docker's default).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Files larger than this are left to the payload (a prefetch must not hold up the link).
const MAX_PREFETCH_BYTES: u64 = 64 << 20;

/// How many levels of `DT_NEEDED` are followed from an executable.
const DEPTH: usize = 2;

/// The files nearly every dynamically linked start reads, for this machine's architecture:
/// the loader and C library where glibc and musl put them, the loader's cache, and what the
/// launch reads for the user's groups.
fn base_set() -> Vec<String> {
    let multiarch = multiarch();
    let (loader, musl) = match std::env::consts::ARCH {
        "aarch64" => ("lib/ld-linux-aarch64.so.1", "lib/ld-musl-aarch64.so.1"),
        _ => ("lib64/ld-linux-x86-64.so.2", "lib/ld-musl-x86_64.so.1"),
    };
    vec![
        loader.to_owned(),
        musl.to_owned(),
        "etc/ld.so.cache".to_owned(),
        format!("lib/{multiarch}/libc.so.6"),
        "lib64/libc.so.6".to_owned(),
        "usr/lib/libc.so.6".to_owned(),
        "etc/passwd".to_owned(),
        "etc/group".to_owned(),
    ]
}

/// Debian's multiarch directory name for this machine's architecture.
fn multiarch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    }
}

/// Where shared libraries are looked for, in order.
fn library_dirs() -> Vec<String> {
    let multiarch = multiarch();
    vec![
        format!("lib/{multiarch}"),
        format!("usr/lib/{multiarch}"),
        "lib64".to_owned(),
        "usr/lib64".to_owned(),
        "lib".to_owned(),
        "usr/lib".to_owned(),
        "usr/local/lib".to_owned(),
    ]
}

/// The commands a run starts: its `argv[0]`, and for `sh -c SCRIPT` (sh, bash, dash, ash) the
/// script's first word, which the shell runs next.
pub(crate) fn commands(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(first) = argv.first() else {
        return out;
    };
    out.push(first.clone());
    let shell = first.rsplit('/').next().unwrap_or_default();
    if matches!(shell, "sh" | "bash" | "dash" | "ash")
        && let Some(i) = argv.iter().position(|a| a == "-c")
        && let Some(script) = argv.get(i + 1)
        && let Some(word) = script.split_whitespace().next()
        && !word.contains(['=', '$', '(', '`', '\'', '"'])
    {
        out.push(word.to_owned());
    }
    out
}

/// The image path `command` runs: itself when it has a `/`, else the first regular file of
/// that name along `path` (symlinks followed inside the image).
fn executable(tables: &[Arc<LayerToc>], command: &str, path: &str) -> Option<String> {
    let candidates: Vec<String> = if command.contains('/') {
        vec![command.trim_start_matches('/').to_owned()]
    } else {
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{command}", d.trim_matches('/')))
            .collect()
    };
    candidates.into_iter().find_map(|c| regular(tables, &c))
}

/// `path` resolved inside the image, if it names a regular file small enough to prefetch.
fn regular(tables: &[Arc<LayerToc>], path: &str) -> Option<String> {
    let resolved = resolve(tables, path)?;
    let (_, entry) = lookup(tables, &resolved)?;
    (entry.kind == Kind::File && entry.size <= MAX_PREFETCH_BYTES).then_some(resolved)
}

/// The libraries an ELF file names (`DT_NEEDED`); none for anything else.
pub(crate) fn needed(data: &[u8]) -> Vec<String> {
    use object::read::elf::{Dyn as _, FileHeader as _, SectionHeader as _};
    let parse = || -> object::read::Result<Vec<String>> {
        let header = object::elf::FileHeader64::<object::Endianness>::parse(data)?;
        let endian = header.endian()?;
        let sections = header.sections(endian, data)?;
        let mut names = Vec::new();
        for section in sections.iter() {
            let Some((entries, link)) = section.dynamic(endian, data)? else {
                continue;
            };
            let strings = sections.strings(endian, data, link)?;
            for entry in entries {
                if entry.tag(endian) == object::elf::DT_NEEDED
                    && let Ok(name) = entry.string(endian, strings)
                {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
        Ok(names)
    };
    parse().unwrap_or_default()
}

/// Starts fetching, on threads of their own, the files the run's `commands` will read first
/// (looked up along `path`), into `reader`'s chunk cache. Returns at once.
pub(crate) fn start(
    reader: &Arc<LayerReader>,
    tables: &[Arc<LayerToc>],
    commands: &[String],
    path: &str,
) {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let tables: Arc<[Arc<LayerToc>]> = tables.into();
    for file in base_set() {
        if let Some(file) = regular(&tables, &file) {
            spawn(reader, &tables, &seen, file, 0);
        }
    }
    for command in commands {
        if let Some(file) = executable(&tables, command, path) {
            spawn(reader, &tables, &seen, file, DEPTH);
        }
    }
}

/// Reads `file` on a thread of its own (once per run), then what it needs `depth` levels down.
fn spawn(
    reader: &Arc<LayerReader>,
    tables: &Arc<[Arc<LayerToc>]>,
    seen: &Arc<Mutex<HashSet<String>>>,
    file: String,
    depth: usize,
) {
    let first = seen
        .lock()
        .map(|mut s| s.insert(file.clone()))
        .unwrap_or(false);
    if !first {
        return;
    }
    let (reader, tables, seen) = (reader.clone(), tables.clone(), seen.clone());
    let _ = std::thread::Builder::new()
        .name("lazy-prefetch".into())
        .spawn(move || {
            let Some((toc, entry)) = lookup(&tables, &file) else {
                return;
            };
            let Ok(data) = reader.read(toc, entry) else {
                return;
            };
            if depth == 0 {
                return;
            }
            for lib in needed(&data) {
                let found = library_dirs()
                    .iter()
                    .find_map(|dir| regular(&tables, &format!("{dir}/{lib}")));
                if let Some(found) = found {
                    spawn(&reader, &tables, &seen, found, depth - 1);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_script_adds_its_first_command() {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            commands(&argv(&["sh", "-c", "python3 -c 'print(42)'"])),
            ["sh", "python3"]
        );
        assert_eq!(
            commands(&argv(&["/bin/bash", "-e", "-c", "  git --version"])),
            ["/bin/bash", "git"]
        );
        assert_eq!(commands(&argv(&["sh", "-c", "X=1 make"])), ["sh"]);
        assert_eq!(commands(&argv(&["terraform", "-c", "plan"])), ["terraform"]);
        assert!(commands(&[]).is_empty());
    }

    #[test]
    fn the_libraries_of_an_executable_are_read_from_its_dynamic_section() {
        // This test binary is a dynamically linked ELF file: it needs the C library.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let libs = needed(&me);
        assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
        assert!(needed(b"#!/bin/sh\necho hi\n").is_empty());
        assert!(needed(&me[..64]).is_empty(), "a cut header is no library");
    }
}
