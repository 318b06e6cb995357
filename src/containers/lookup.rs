//! Container ids and names: new ones, and finding a container by id, id prefix or name.

use rootfs_cache::Store;

use super::error::ContainerError;
use super::record::{ContainerDir, Record};

/// A new container id: 64 hex digits from the kernel's random source.
pub(crate) fn new_id() -> Result<String, ContainerError> {
    let mut bytes = [0u8; 32];
    let path = std::path::Path::new("/dev/urandom");
    let mut f = std::fs::File::open(path).map_err(super::error::io("opening", path))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(super::error::io("reading", path))?;
    // docker avoids ids that are all digits (they read as numbers); so does skiff.
    if bytes.iter().all(|b| (b >> 4) < 10 && (b & 15) < 10) {
        bytes[0] |= 0xa0;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (a leading `/` is dropped).
pub(crate) fn check_name(name: &str) -> Result<String, ContainerError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && bare.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(bare.to_owned())
    } else {
        Err(ContainerError::InvalidName(name.to_owned()))
    }
}

const ADJECTIVES: [&str; 24] = [
    "brave", "calm", "clever", "eager", "fervent", "focused", "gallant", "happy", "jolly", "keen",
    "lucid", "modest", "nifty", "quirky", "relaxed", "serene", "sharp", "stoic", "sweet", "tender",
    "upbeat", "vibrant", "wizardly", "zealous",
];
const NAMES: [&str; 24] = [
    "albattani",
    "babbage",
    "curie",
    "darwin",
    "euclid",
    "fermat",
    "galileo",
    "hopper",
    "johnson",
    "kepler",
    "lovelace",
    "mayer",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "tesla",
    "thompson",
    "turing",
    "volhard",
    "wiles",
    "wozniak",
    "yalow",
    "zhukovsky",
];

/// A free docker-style name (`adjective_scientist`), from the id's bytes.
pub(crate) fn generate_name(id: &str, taken: &[String]) -> String {
    let seed = u64::from_str_radix(&id[..16.min(id.len())], 16).unwrap_or(0);
    for n in 0u64.. {
        let v = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[(v % 24) as usize],
            NAMES[((v / 24) % 24) as usize]
        );
        if n >= 576 {
            name.push_str(&n.to_string());
        }
        if !taken.contains(&name) {
            return name;
        }
    }
    unreachable!("an unbounded search always finds a free name")
}

/// All containers: (directory, record); unreadable ones are skipped with a warning.
pub(crate) fn all(store: &Store) -> Result<Vec<(ContainerDir, Record)>, ContainerError> {
    let mut out = Vec::new();
    for id in store.container_ids()? {
        let dir = ContainerDir::new(store.container_dir(&id));
        match dir.record() {
            Ok(record) => out.push((dir, record)),
            // Being created (no record yet) or removed right now.
            Err(ContainerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(container = %id, err = %crate::error_chain(&err), "skipping")
            }
        }
    }
    Ok(out)
}

/// The container a user means by `key`: a full id, a name (`/name` too), else a unique id
/// prefix (docker's order).
pub(crate) fn resolve(store: &Store, key: &str) -> Result<(ContainerDir, Record), ContainerError> {
    if key.is_empty() {
        return Err(ContainerError::NotFound(key.to_owned()));
    }
    let mut all = all(store)?;
    if let Some(i) = all.iter().position(|(_, r)| r.id == key) {
        return Ok(all.swap_remove(i));
    }
    let name = key.strip_prefix('/').unwrap_or(key);
    if let Some(i) = all.iter().position(|(_, r)| r.name == name) {
        return Ok(all.swap_remove(i));
    }
    let mut matches: Vec<_> = all
        .into_iter()
        .filter(|(_, r)| r.id.starts_with(key))
        .collect();
    match matches.len() {
        0 => Err(ContainerError::NotFound(key.to_owned())),
        1 => Ok(matches.remove(0)),
        _ => Err(ContainerError::Ambiguous(key.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["ab", "job-1", "a.b_c", "/web", "A9"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        assert_eq!(check_name("/web").unwrap(), "web");
        for bad in ["", "a", "-a", "_a", "a b", "a/b", "é1", "/"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_64_hex_and_generated_names_are_free() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let first = generate_name(&id, &[]);
        let second = generate_name(&id, std::slice::from_ref(&first));
        assert_ne!(first, second);
        assert!(check_name(&first).is_ok());
    }
}
