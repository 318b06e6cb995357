//! Image references (`[registry/]repository[:tag][@digest]`), parsed and normalised with the
//! rules of docker's `ParseNormalizedNamed`, so that `busybox` and
//! `docker.io/library/busybox:latest` name the same image and cache the same way.
//!
//! The grammar is distribution/reference's, hand-written so no regex engine is pulled in.

use std::fmt;
use std::str::FromStr;

use rootfs_cache::Digest;

/// Registry that unqualified names resolve to, in the spelling users see.
const DOCKER_HUB: &str = "docker.io";
/// Legacy spelling of Docker Hub that docker rewrites, so both share one cache entry.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// `docker.io` itself does not serve the registry API; this host does.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Hub namespace of official images, implied by single-component names.
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// distribution/reference's NameTotalLengthMax, counted on the normalised `registry/repository`.
const NAME_MAX_LEN: usize = 255;
const TAG_MAX_LEN: usize = 128;

/// Why a string is not a valid image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// The input is the empty string.
    #[error(
        "invalid reference format: empty string (expected [registry/]repository[:tag][@digest])"
    )]
    Empty,
    /// The input contains non-ASCII characters, which no part of a reference allows.
    #[error("invalid reference {0:?}: only ASCII characters are allowed")]
    NonAscii(String),
    /// Malformed in a way no more specific variant describes (e.g. a URL scheme).
    #[error("invalid reference format {input:?}: {reason}")]
    InvalidFormat { input: String, reason: &'static str },
    /// A bare 64-hex string, which docker refuses because it is an image id, not a name.
    #[error(
        "invalid repository name {0:?}: cannot be a 64-character hexadecimal string \
         (that looks like an image id)"
    )]
    HexIdentifier(String),
    /// Nothing precedes the tag or digest.
    #[error("invalid reference {0:?}: the repository name is missing")]
    MissingName(String),
    /// `registry/repository` is longer than docker allows.
    #[error(
        "invalid reference {input:?}: the full name is {len} characters including the registry; \
         the limit is 255"
    )]
    NameTooLong { input: String, len: usize },
    /// The repository path contains uppercase letters (only the registry host may).
    #[error(
        "invalid reference {input:?}: repository name {repository:?} must be lowercase \
         (only a registry host may contain uppercase letters)"
    )]
    Uppercase { input: String, repository: String },
    /// A leading, trailing or doubled '/' in the repository path.
    #[error(
        "invalid reference {0:?}: the repository path has an empty component \
         (leading, trailing or doubled '/')"
    )]
    EmptyPathComponent(String),
    /// A repository path component outside the distribution grammar.
    #[error(
        "invalid reference {input:?}: repository path component {component:?} is invalid; \
         components are lowercase letters and digits, joined by '.', '_', '__' or runs of '-'"
    )]
    InvalidPathComponent { input: String, component: String },
    /// The registry host is not a domain name, IPv4 address or bracketed IPv6 address.
    #[error(
        "invalid reference {input:?}: registry {domain:?} is not a valid host; expected a \
         domain name, an IPv4 address or a bracketed IPv6 address like [::1], then an optional :port"
    )]
    InvalidDomain { input: String, domain: String },
    /// The registry port is empty or not decimal digits.
    #[error(
        "invalid reference {input:?}: registry port {port:?} must be one or more decimal digits"
    )]
    InvalidPort { input: String, port: String },
    /// The tag is outside `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error(
        "invalid reference {input:?}: tag {tag:?} is invalid; a tag is 1 to 128 characters of \
         [A-Za-z0-9_.-] and must not start with '.' or '-'"
    )]
    InvalidTag { input: String, tag: String },
    /// The digest is malformed; `reason` carries the digest parser's explanation.
    #[error("invalid reference {input:?}: bad digest: {reason}")]
    InvalidDigest { input: String, reason: String },
    /// A well-formed digest whose algorithm the content store cannot verify.
    #[error(
        "invalid reference {input:?}: digest algorithm {algorithm:?} is unsupported \
         (only sha256 is supported)"
    )]
    UnsupportedDigestAlgorithm { input: String, algorithm: String },
}

/// A normalised image reference: registry, repository, and a tag and/or digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference the way `docker pull` interprets it.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // Everything below may then treat bytes as characters without slicing mid-codepoint.
        if !s.is_ascii() {
            return Err(ReferenceError::NonAscii(s.to_owned()));
        }
        let err_input = || s.to_owned();
        if s.contains("://") {
            return Err(ReferenceError::InvalidFormat {
                input: err_input(),
                reason: "a reference has no URL scheme; drop the \"scheme://\" prefix",
            });
        }
        if s.len() == 64 && s.bytes().all(is_lower_hex) {
            return Err(ReferenceError::HexIdentifier(err_input()));
        }

        // Neither name nor tag may contain '@', so the first one starts the digest.
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (s, None),
        };
        // A ':' before the last '/' belongs to the registry port, not to a tag.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::MissingName(err_input()));
        }

        let (domain, path) = split_domain(name);
        // Checked before the grammar so "Foo" says what is wrong instead of "invalid format".
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                input: err_input(),
                repository: path.to_owned(),
            });
        }
        if let Some(domain) = domain {
            check_domain(s, domain)?;
        }
        for component in path.split('/') {
            if component.is_empty() {
                return Err(ReferenceError::EmptyPathComponent(err_input()));
            }
            if !is_path_component(component) {
                return Err(ReferenceError::InvalidPathComponent {
                    input: err_input(),
                    component: component.to_owned(),
                });
            }
        }

        let registry = match domain {
            None | Some(DOCKER_HUB_LEGACY) => DOCKER_HUB,
            Some(domain) => domain,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        let len = registry.len() + 1 + repository.len();
        if len > NAME_MAX_LEN {
            return Err(ReferenceError::NameTooLong {
                input: err_input(),
                len,
            });
        }

        if let Some(tag) = tag {
            if !is_tag(tag) {
                return Err(ReferenceError::InvalidTag {
                    input: err_input(),
                    tag: tag.to_owned(),
                });
            }
        }
        let digest = digest.map(|d| parse_digest(s, d)).transpose()?;
        // A digest alone pins the image; inventing "latest" next to it would be misleading.
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// Normalised registry, e.g. "docker.io" or "localhost:5000".
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path within the registry, e.g. "library/busybox".
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, or None when only a digest was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The host[:port] that serves the registry API for this reference.
    pub fn api_registry(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to put in `/v2/<repository>/manifests/<reference>`: the digest wins over the tag.
    pub fn api_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            // parse() never builds this, but a default beats a panic.
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same reference pinned to `digest` (the tag is kept for display, as docker does).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Docker's short display form, e.g. "busybox:latest" or "localhost:5000/a/b:tag".
    pub fn familiar(&self) -> String {
        let mut out = if self.registry == DOCKER_HUB {
            let short = match self.repository.strip_prefix(OFFICIAL_PREFIX) {
                Some(name) if !name.contains('/') => name,
                _ => self.repository.as_str(),
            };
            // "docker.io/foo.bar/baz" must keep its registry, or it would re-parse as host foo.bar.
            if split_domain(short).0.is_some() {
                format!("{}/{}", self.registry, self.repository)
            } else {
                short.to_owned()
            }
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        self.push_tag_and_digest(&mut out);
        out
    }

    fn push_tag_and_digest(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("{}/{}", self.registry, self.repository);
        self.push_tag_and_digest(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// docker's splitDockerDomain: a first component is a host only if it cannot be a hub path.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_domain(input: &str, domain: &str) -> Result<(), ReferenceError> {
    let bad_domain = || ReferenceError::InvalidDomain {
        input: input.to_owned(),
        domain: domain.to_owned(),
    };
    let port = if let Some(bracketed) = domain.strip_prefix('[') {
        let (addr, tail) = bracketed.split_once(']').ok_or_else(bad_domain)?;
        // The charset check rejects IPv4-embedded forms, which the distribution grammar refuses.
        let valid = !addr.is_empty()
            && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
            && addr.parse::<std::net::Ipv6Addr>().is_ok();
        if !valid {
            return Err(bad_domain());
        }
        match tail {
            "" => None,
            tail => Some(tail.strip_prefix(':').ok_or_else(bad_domain)?),
        }
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        // IPv4 addresses are covered too: the grammar accepts all-digit labels.
        if !host.split('.').all(is_domain_label) {
            return Err(bad_domain());
        }
        port
    };
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => {
            Err(ReferenceError::InvalidPort {
                input: input.to_owned(),
                port: port.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let is_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut bytes = component.bytes().peekable();
    loop {
        let mut run = 0;
        while bytes.next_if(is_alnum).is_some() {
            run += 1;
        }
        if run == 0 {
            return false;
        }
        match bytes.next() {
            None => return true,
            Some(b'.') => {}
            Some(b'_') => {
                bytes.next_if_eq(&b'_');
            }
            Some(b'-') => while bytes.next_if_eq(&b'-').is_some() {},
            Some(_) => return false,
        }
    }
}

/// `[\w][\w.-]{0,127}`
fn is_tag(tag: &str) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut bytes = tag.bytes();
    tag.len() <= TAG_MAX_LEN
        && bytes.next().is_some_and(is_word)
        && bytes.all(|b| is_word(b) || b == b'.' || b == b'-')
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*`
fn is_digest_algorithm(algorithm: &str) -> bool {
    algorithm.split(['-', '_', '+', '.']).all(|part| {
        let mut bytes = part.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric())
    })
}

fn parse_digest(input: &str, digest: &str) -> Result<Digest, ReferenceError> {
    let invalid = |reason: String| ReferenceError::InvalidDigest {
        input: input.to_owned(),
        reason,
    };
    let grammar = || {
        invalid(format!(
            "{digest:?} is not <algorithm>:<at least 32 hex digits>; expected sha256:<64 hex digits>"
        ))
    };
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(grammar)?;
    if algorithm == "sha256" {
        return Digest::parse(digest).map_err(|e| invalid(e.to_string()));
    }
    let well_formed = is_digest_algorithm(algorithm)
        && encoded.len() >= 32
        && encoded.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(grammar());
    }
    Err(ReferenceError::UnsupportedDigestAlgorithm {
        input: input.to_owned(),
        algorithm: algorithm.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Expands placeholders so the tables can hold long or repetitive strings as literals.
    fn expand(s: &str) -> String {
        s.replace("<d>", &format!("sha256:{HEX}"))
            .replace("<hex>", HEX)
            .replace("<T128>", &format!("w{}", "x".repeat(127)))
            .replace("<T129>", &format!("w{}", "x".repeat(128)))
            .replace("<H128>", &"a".repeat(128))
            .replace("<A237>", &"a".repeat(237))
            .replace("<A238>", &"a".repeat(238))
    }

    /// (input, registry, repository, tag, has digest, Display)
    type ValidCase = (S, S, S, Option<S>, bool, S);
    type S = &'static str;

    #[rustfmt::skip]
    const VALID: &[ValidCase] = &[
        ("busybox", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest"),
        ("library/busybox", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io", "library/busybox", Some("latest"), false, "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:1.36", "docker.io", "library/busybox", Some("1.36"), false, "docker.io/library/busybox:1.36"),
        ("user/app:v1.2.3", "docker.io", "user/app", Some("v1.2.3"), false, "docker.io/user/app:v1.2.3"),
        ("localhost/foo", "localhost", "foo", Some("latest"), false, "localhost/foo:latest"),
        ("localhost:5000/a/b:tag", "localhost:5000", "a/b", Some("tag"), false, "localhost:5000/a/b:tag"),
        ("localhost:5000", "docker.io", "library/localhost", Some("5000"), false, "docker.io/library/localhost:5000"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", Some("latest"), false, "127.0.0.1:5000/x:latest"),
        ("[::1]:5000/x", "[::1]:5000", "x", Some("latest"), false, "[::1]:5000/x:latest"),
        ("[2001:db8::1]/x:y", "[2001:db8::1]", "x", Some("y"), false, "[2001:db8::1]/x:y"),
        ("host.example.com/a/b/c", "host.example.com", "a/b/c", Some("latest"), false, "host.example.com/a/b/c:latest"),
        ("Example.COM/foo", "Example.COM", "foo", Some("latest"), false, "Example.COM/foo:latest"),
        ("foo_bar/baz", "docker.io", "foo_bar/baz", Some("latest"), false, "docker.io/foo_bar/baz:latest"),
        ("a__b", "docker.io", "library/a__b", Some("latest"), false, "docker.io/library/a__b:latest"),
        ("a-b--c", "docker.io", "library/a-b--c", Some("latest"), false, "docker.io/library/a-b--c:latest"),
        ("a.b", "docker.io", "library/a.b", Some("latest"), false, "docker.io/library/a.b:latest"),
        ("0/1", "docker.io", "0/1", Some("latest"), false, "docker.io/0/1:latest"),
        ("ghcr.io/acme/worker-tools:6.1.0", "ghcr.io", "acme/worker-tools", Some("6.1.0"), false, "ghcr.io/acme/worker-tools:6.1.0"),
        ("host/a@<d>", "docker.io", "host/a", None, true, "docker.io/host/a@<d>"),
        ("a:tag@<d>", "docker.io", "library/a", Some("tag"), true, "docker.io/library/a:tag@<d>"),
        ("reg.example.com:443/team/app@<d>", "reg.example.com:443", "team/app", None, true, "reg.example.com:443/team/app@<d>"),
        ("a:Upper_Case.tag-1", "docker.io", "library/a", Some("Upper_Case.tag-1"), false, "docker.io/library/a:Upper_Case.tag-1"),
        ("a:<T128>", "docker.io", "library/a", Some("<T128>"), false, "docker.io/library/a:<T128>"),
        ("<A237>", "docker.io", "library/<A237>", Some("latest"), false, "docker.io/library/<A237>:latest"),
    ];

    #[rustfmt::skip]
    const INVALID: &[(&str, &str)] = &[
        ("", "Empty"),
        (":", "MissingName"), ("@<d>", "MissingName"),
        ("/", "EmptyPathComponent"), ("a/", "EmptyPathComponent"), ("/a", "EmptyPathComponent"),
        ("a//b", "EmptyPathComponent"),
        ("Foo", "Uppercase"), ("Foo/bar", "Uppercase"), ("foo/Bar", "Uppercase"),
        ("a:", "InvalidTag"), ("a:-tag", "InvalidTag"), ("a:.tag", "InvalidTag"),
        ("a:tag with space", "InvalidTag"), ("a:<T129>", "InvalidTag"),
        ("a@", "InvalidDigest"), ("a@sha256:abc", "InvalidDigest"), ("a@md5:x", "InvalidDigest"),
        ("a@b@c", "InvalidDigest"),
        ("a@sha512:<H128>", "UnsupportedDigestAlgorithm"),
        ("-a", "InvalidPathComponent"), ("a-", "InvalidPathComponent"),
        ("a..b", "InvalidPathComponent"), ("a___b", "InvalidPathComponent"),
        ("a b", "InvalidPathComponent"), ("a:b:c", "InvalidPathComponent"),
        ("localhost:abc/a", "InvalidPort"), ("localhost:/a", "InvalidPort"),
        ("[::1/x", "InvalidDomain"), ("[::g]/x", "InvalidDomain"), ("[::1]x/y", "InvalidDomain"),
        ("-host.com/a", "InvalidDomain"), ("host..com/a", "InvalidDomain"),
        ("<A238>", "NameTooLong"),
        ("bücher", "NonAscii"),
        ("http://host/a", "InvalidFormat"),
        ("<hex>", "HexIdentifier"),
    ];

    /// The variant name, taken from Debug so the table needs no per-variant matcher.
    fn kind(e: &ReferenceError) -> String {
        format!("{e:?}")
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect()
    }

    #[test]
    fn valid_references_normalise_like_docker() {
        for &(input, registry, repository, tag, has_digest, display) in VALID {
            let input = expand(input);
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(r.registry(), expand(registry), "{input:?}");
            assert_eq!(r.repository(), expand(repository), "{input:?}");
            assert_eq!(r.tag().map(str::to_owned), tag.map(expand), "{input:?}");
            assert_eq!(
                r.digest().map(|d| d.hex()),
                has_digest.then(|| HEX.to_owned()),
                "{input:?}"
            );
            assert_eq!(r.to_string(), expand(display), "{input:?}");
            assert_eq!(input.parse::<Reference>().unwrap(), r, "FromStr {input:?}");
        }
    }

    #[test]
    fn invalid_references_are_refused_with_the_right_reason() {
        for &(input, expected) in INVALID {
            let input = expand(input);
            match Reference::parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => assert_eq!(kind(&e), expected, "{input:?}: {e}"),
            }
        }
    }

    #[test]
    fn display_and_familiar_forms_reparse_to_the_same_reference() {
        for &(input, ..) in VALID {
            let r = Reference::parse(&expand(input)).unwrap();
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{r}");
            assert_eq!(
                Reference::parse(&r.familiar()).unwrap(),
                r,
                "{}",
                r.familiar()
            );
        }
    }

    #[test]
    fn familiar_strips_docker_hub_and_library_only() {
        let cases = [
            ("busybox", "busybox:latest"),
            ("docker.io/library/busybox:1.36", "busybox:1.36"),
            ("user/app:1", "user/app:1"),
            ("docker.io/library/a/b", "library/a/b:latest"),
            ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
            ("ghcr.io/library/x", "ghcr.io/library/x:latest"),
            ("docker.io/foo.bar/baz", "docker.io/foo.bar/baz:latest"),
            ("a:tag@<d>", "a:tag@<d>"),
        ];
        for (input, familiar) in cases {
            assert_eq!(
                Reference::parse(&expand(input)).unwrap().familiar(),
                expand(familiar)
            );
        }
    }

    #[test]
    fn api_endpoint_and_reference_prefer_the_digest() {
        let hub = Reference::parse("busybox").unwrap();
        assert_eq!(hub.api_registry(), "registry-1.docker.io");
        assert_eq!(hub.api_reference(), "latest");
        let local = Reference::parse("localhost:5000/a:v1").unwrap();
        assert_eq!(local.api_registry(), "localhost:5000");
        let both = Reference::parse(&expand("a:tag@<d>")).unwrap();
        assert_eq!(both.api_reference(), expand("<d>"));

        let digest = Digest::of(b"manifest");
        let pinned = local.with_digest(digest);
        assert_eq!(pinned.tag(), Some("v1"));
        assert_eq!(pinned.digest(), Some(&digest));
        assert_eq!(pinned.api_reference(), digest.to_string());
        assert_eq!(pinned.to_string(), format!("localhost:5000/a:v1@{digest}"));
    }

    #[test]
    fn error_messages_quote_the_input_and_say_what_is_allowed() {
        let msg = |s: &str| Reference::parse(&expand(s)).unwrap_err().to_string();
        assert!(msg("Foo").contains("must be lowercase"));
        assert!(msg("foo/Bar").contains("\"foo/Bar\""));
        assert!(msg("<A238>").contains("255"));
        assert!(msg("a:-tag").contains("1 to 128 characters"));
        assert!(msg("a@sha512:<H128>").contains("unsupported"));
        assert!(msg("a@sha256:abc").contains("64 lowercase hex digits"));
        assert!(msg("localhost:abc/a").contains("\"abc\""));
        assert!(msg("").contains("empty"));
    }

    #[test]
    fn no_input_prefix_panics() {
        // Truncations of valid and invalid inputs hit every early-exit path of the parser.
        let odd = [
            "é:é@é", "[", "]", "[]:/", "@@", "::", "a/:", "ü/ü", "x\u{0}y", "[::1]:",
        ];
        let all = VALID
            .iter()
            .map(|c| c.0)
            .chain(INVALID.iter().map(|c| c.0))
            .chain(odd);
        for input in all.map(expand) {
            for (i, _) in input.char_indices() {
                let _ = Reference::parse(&input[..i]);
                let _ = Reference::parse(&input[i..]);
            }
        }
    }
}
