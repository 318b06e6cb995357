//! Platforms (`os/arch[/variant]`) and the choice of one entry from a multi-platform index.

use oci_spec::image::{Arch, Descriptor, ImageIndex, Os, Platform};

use super::manifest::is_image_manifest;

/// The platform of this host: linux on the host architecture (arm64 counts as v8).
pub(crate) fn host_platform() -> Platform {
    let architecture = crate::host::oci_architecture();
    let mut platform = Platform::default();
    platform.set_os(Os::Linux);
    platform.set_architecture(Arch::from(architecture));
    platform.set_variant((architecture == "arm64").then(|| "v8".to_owned()));
    platform
}

/// Parses `os/arch[/variant]`, as `--platform` takes it.
pub(crate) fn parse_platform(s: &str) -> Option<Platform> {
    let mut parts = s.split('/');
    let os = parts.next().filter(|p| !p.is_empty())?;
    let architecture = parts.next().filter(|p| !p.is_empty())?;
    let variant = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
    if parts.next().is_some() {
        return None;
    }
    let mut platform = Platform::default();
    platform.set_os(Os::from(os));
    platform.set_architecture(Arch::from(architecture));
    platform.set_variant(variant);
    Some(platform)
}

/// `os/arch[/variant]`.
pub(crate) fn platform_string(platform: &Platform) -> String {
    match platform.variant() {
        Some(v) => format!("{}/{}/{v}", platform.os(), platform.architecture()),
        None => format!("{}/{}", platform.os(), platform.architecture()),
    }
}

/// Whether an index entry's platform satisfies the wanted one (a missing variant on either
/// side matches any).
fn accepts(want: &Platform, candidate: &Platform) -> bool {
    if want.os() != candidate.os() || want.architecture() != candidate.architecture() {
        return false;
    }
    match (want.variant(), candidate.variant()) {
        (None, _) | (_, None) => true,
        (Some(want), Some(have)) => want == have,
    }
}

/// Picks the index entry for `want`, an exact variant before an entry without one; on
/// failure, the platforms the index offers.
pub(crate) fn select_platform<'a>(
    index: &'a ImageIndex,
    want: &Platform,
) -> Result<&'a Descriptor, Vec<String>> {
    let mut candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| d.platform().as_ref().is_some_and(|p| accepts(want, p)))
        .filter(|d| is_image_manifest(d.media_type()))
        .collect();
    candidates.sort_by_key(|d| d.platform().as_ref().map(|p| p.variant() != want.variant()));
    candidates.first().copied().ok_or_else(|| {
        index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .filter(|p| p.os() != &Os::Other("unknown".into()))
            .map(platform_string)
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType};

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn index(platforms: &[&str]) -> ImageIndex {
        let manifests = platforms
            .iter()
            .map(|p| {
                DescriptorBuilder::default()
                    .media_type(MediaType::ImageManifest)
                    .digest(oci_spec::image::Digest::try_from(D).unwrap())
                    .size(1u64)
                    .platform(parse_platform(p).unwrap())
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(manifests)
            .build()
            .unwrap()
    }

    #[test]
    fn platform_selection_prefers_the_exact_variant() {
        let idx = index(&["linux/arm/v6", "linux/arm/v7", "linux/amd64"]);
        let pick = select_platform(&idx, &parse_platform("linux/arm/v7").unwrap()).unwrap();
        assert_eq!(
            pick.platform().as_ref().unwrap().variant().as_deref(),
            Some("v7")
        );
        let amd = select_platform(&idx, &parse_platform("linux/amd64").unwrap()).unwrap();
        assert_eq!(
            amd.platform().as_ref().unwrap().architecture(),
            &Arch::Amd64
        );
        let missing = select_platform(&idx, &parse_platform("linux/s390x").unwrap()).unwrap_err();
        assert_eq!(missing, ["linux/arm/v6", "linux/arm/v7", "linux/amd64"]);
    }

    #[test]
    fn platform_strings_parse_like_docker() {
        let p = parse_platform("linux/arm64/v8").unwrap();
        assert_eq!(p.variant().as_deref(), Some("v8"));
        assert_eq!(platform_string(&p), "linux/arm64/v8");
        assert!(parse_platform("linux").is_none());
        assert!(parse_platform("linux/amd64/v1/x").is_none());
        assert!(parse_platform("/amd64").is_none());
    }
}
