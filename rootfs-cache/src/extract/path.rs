//! Tar entry names made safe: relative, no `..`, split into parent directory and base name.

/// Why an entry name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeName {
    /// Starts with `/`.
    Absolute,
    /// Has a `..` component.
    DotDot,
    /// Holds a NUL byte.
    Nul,
    /// Nothing left after removing `.` and empty components.
    Empty,
    /// A component longer than NAME_MAX (255 bytes).
    ComponentTooLong,
    /// Longer than PATH_MAX (4096 bytes).
    TooLong,
}

impl std::fmt::Display for UnsafeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Absolute => "absolute names are not allowed in a layer",
            Self::DotDot => "`..` components are not allowed in a layer",
            Self::Nul => "NUL byte in name",
            Self::Empty => "empty name",
            Self::ComponentTooLong => "a name component is longer than 255 bytes",
            Self::TooLong => "name is longer than 4096 bytes",
        })
    }
}

/// A cleaned entry name: `parent` (maybe empty) and `base` (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanName {
    /// The clean name, components joined by `/`.
    pub full: Vec<u8>,
    /// Byte length of the parent part within `full` (0 when at the root).
    parent_len: usize,
}

impl CleanName {
    /// The parent directory (empty for the layer root).
    pub fn parent(&self) -> &[u8] {
        &self.full[..self.parent_len]
    }

    /// The last component.
    pub fn base(&self) -> &[u8] {
        let start = if self.parent_len == 0 {
            0
        } else {
            self.parent_len + 1
        };
        &self.full[start..]
    }
}

/// Cleans a raw tar name: drops `.`/empty components; refuses absolute, `..`, NUL, overlong.
pub fn clean(raw: &[u8]) -> Result<CleanName, UnsafeName> {
    if raw.starts_with(b"/") {
        return Err(UnsafeName::Absolute);
    }
    if raw.contains(&0) {
        return Err(UnsafeName::Nul);
    }
    if raw.len() > 4096 {
        return Err(UnsafeName::TooLong);
    }
    let mut full = Vec::with_capacity(raw.len());
    let mut parent_len = 0;
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err(UnsafeName::DotDot),
            c if c.len() > 255 => return Err(UnsafeName::ComponentTooLong),
            c => {
                if !full.is_empty() {
                    parent_len = full.len();
                    full.push(b'/');
                }
                full.extend_from_slice(c);
            }
        }
    }
    if full.is_empty() {
        return Err(UnsafeName::Empty);
    }
    Ok(CleanName { full, parent_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names_split_into_parent_and_base() {
        for (raw, full, parent, base) in [
            (&b"a"[..], &b"a"[..], &b""[..], &b"a"[..]),
            (b"./a/b/", b"a/b", b"a", b"b"),
            (b"a//./b/c", b"a/b/c", b"a/b", b"c"),
            (b"./", b"", b"", b""),
        ] {
            match clean(raw) {
                Ok(c) => {
                    assert_eq!(c.full, full);
                    assert_eq!(c.parent(), parent);
                    assert_eq!(c.base(), base);
                }
                Err(e) => assert!(full.is_empty() && e == UnsafeName::Empty, "{raw:?}: {e}"),
            }
        }
    }

    #[test]
    fn unsafe_names_are_refused() {
        assert_eq!(clean(b"/etc/passwd"), Err(UnsafeName::Absolute));
        assert_eq!(clean(b"../x"), Err(UnsafeName::DotDot));
        assert_eq!(clean(b"a/../../x"), Err(UnsafeName::DotDot));
        assert_eq!(clean(b"a/.."), Err(UnsafeName::DotDot));
        assert_eq!(clean(b"a\0b"), Err(UnsafeName::Nul));
        assert_eq!(clean(&[b'x'; 256]), Err(UnsafeName::ComponentTooLong));
        assert_eq!(clean(&b"a/".repeat(2049)), Err(UnsafeName::TooLong));
        // A name that merely contains dots is fine.
        assert!(clean(b"a/..b/c..").is_ok());
    }
}
