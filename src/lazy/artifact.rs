//! The index as an OCI artifact: a manifest of artifact type [`ARTIFACT_TYPE`] whose layers are
//! the gzip-compressed tables of the image's layers and whose subject is the image manifest,
//! found through the referrers API or, where a registry lacks it (distribution 2.8), the
//! referrers tag scheme: an image index tagged `sha256-<hex of the subject digest>`.

use std::collections::HashMap;

use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType,
};

use super::LazyError;
use crate::Digest;

/// What the artifact is: skiff's lazy-start index.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.skiff.lazy.index.v1+json";
/// A layer's table: [`super::toc::LayerToc`] as JSON, gzip-compressed.
pub(crate) const TOC_MEDIA_TYPE: &str = "application/vnd.skiff.lazy.toc.v1+json+gzip";
/// A layer's windows blob (see [`super::toc::LayerToc::split_windows`]), listed so that the
/// registry keeps it and copies of the index carry it; its table names it by digest.
pub(crate) const WINDOWS_MEDIA_TYPE: &str = "application/vnd.skiff.lazy.windows.v1";
/// The annotation naming the image layer a table describes.
pub(crate) const LAYER_ANNOTATION: &str = "dev.skiff.lazy.layer";
/// The empty config of an artifact, `{}`.
pub(crate) const EMPTY_CONFIG: &[u8] = b"{}";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The tag the referrers tag scheme uses for `subject`.
pub(crate) fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

fn descriptor(
    media_type: &str,
    digest: &Digest,
    size: u64,
) -> Result<DescriptorBuilder, LazyError> {
    let digest = digest
        .to_string()
        .parse::<oci_spec::image::Digest>()
        .map_err(|e| LazyError::Index {
            reason: format!("digest {digest}: {e}"),
        })?;
    Ok(DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(digest)
        .size(size))
}

fn built<T>(r: Result<T, oci_spec::OciSpecError>) -> Result<T, LazyError> {
    r.map_err(|e| LazyError::Index {
        reason: format!("building the artifact: {e}"),
    })
}

/// The artifact manifest: `tables` and `windows` (layer digest, blob digest, blob size) for
/// the image manifest `subject` (`subject_type`, `subject_size`).
pub(crate) fn manifest(
    subject: &Digest,
    subject_type: &str,
    subject_size: u64,
    tables: &[(Digest, Digest, u64)],
    windows: &[(Digest, Digest, u64)],
) -> Result<Vec<u8>, LazyError> {
    let layers = tables
        .iter()
        .map(|t| (TOC_MEDIA_TYPE, t))
        .chain(windows.iter().map(|w| (WINDOWS_MEDIA_TYPE, w)))
        .map(|(media_type, (layer, blob, size))| {
            built(
                descriptor(media_type, blob, *size)?
                    .annotations(HashMap::from([(
                        LAYER_ANNOTATION.to_owned(),
                        layer.to_string(),
                    )]))
                    .build(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = built(
        descriptor(
            "application/vnd.oci.empty.v1+json",
            &Digest::of(EMPTY_CONFIG),
            EMPTY_CONFIG.len() as u64,
        )?
        .build(),
    )?;
    let m = built(
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::from(ARTIFACT_TYPE))
            .config(config)
            .layers(layers)
            .subject(built(
                descriptor(subject_type, subject, subject_size)?.build(),
            )?)
            .build(),
    )?;
    serde_json::to_vec(&m).map_err(|e| LazyError::Index {
        reason: e.to_string(),
    })
}

/// The referrers tag's index after adding `artifact` (its digest and size): earlier skiff
/// indexes of the same subject are replaced, other referrers (signatures…) kept.
pub(crate) fn add_referrer(
    existing: Option<&[u8]>,
    artifact: &Digest,
    size: u64,
) -> Result<Vec<u8>, LazyError> {
    let mut manifests: Vec<Descriptor> = match existing {
        Some(bytes) => parse_index(bytes)?.manifests().clone(),
        None => Vec::new(),
    };
    manifests.retain(|d| !is_ours(d));
    manifests.push(built(
        descriptor(OCI_MANIFEST, artifact, size)?
            .artifact_type(MediaType::from(ARTIFACT_TYPE))
            .build(),
    )?);
    let index = built(
        ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build(),
    )?;
    serde_json::to_vec(&index).map_err(|e| LazyError::Index {
        reason: e.to_string(),
    })
}

fn parse_index(bytes: &[u8]) -> Result<ImageIndex, LazyError> {
    serde_json::from_slice(bytes).map_err(|e| LazyError::Index {
        reason: format!("the referrers list is not an image index: {e}"),
    })
}

fn is_ours(d: &Descriptor) -> bool {
    d.artifact_type()
        .as_ref()
        .is_some_and(|t| t.to_string() == ARTIFACT_TYPE)
}

/// The newest skiff index among a referrers list: its manifest digest.
pub(crate) fn find_ours(referrers: &[u8]) -> Result<Option<Digest>, LazyError> {
    let index = parse_index(referrers)?;
    let Some(d) = index.manifests().iter().rev().find(|d| is_ours(d)) else {
        return Ok(None);
    };
    Digest::parse(d.digest().as_ref())
        .map(Some)
        .map_err(|e| LazyError::Index {
            reason: format!("a referrer's digest: {e}"),
        })
}

/// The tables an artifact manifest lists, by image layer: checked to be skiff's index of
/// `subject` (a referrer of another image, or another artifact, is refused).
pub(crate) fn tables(
    bytes: &[u8],
    subject: &Digest,
) -> Result<HashMap<Digest, (Digest, u64)>, LazyError> {
    let fail = |reason: String| LazyError::Index { reason };
    let m: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| fail(format!("the index manifest is not valid: {e}")))?;
    if m.artifact_type()
        .as_ref()
        .map(ToString::to_string)
        .as_deref()
        != Some(ARTIFACT_TYPE)
    {
        return Err(fail("the referrer is not a skiff index".into()));
    }
    let about = m.subject().as_ref().map(|s| s.digest().to_string());
    if about.as_deref() != Some(subject.to_string().as_str()) {
        return Err(fail(format!(
            "the index describes {}, not the image {subject}",
            about.unwrap_or_else(|| "no image".into())
        )));
    }
    let mut out = HashMap::new();
    for layer in m.layers() {
        if layer.media_type().to_string() != TOC_MEDIA_TYPE {
            continue;
        }
        let named = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(LAYER_ANNOTATION))
            .ok_or_else(|| fail("a table names no layer".into()))?;
        let layer_digest =
            Digest::parse(named).map_err(|e| fail(format!("a table's layer: {e}")))?;
        let blob = Digest::parse(layer.digest().as_ref())
            .map_err(|e| fail(format!("a table's digest: {e}")))?;
        out.insert(layer_digest, (blob, layer.size()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_artifact_round_trips_and_names_its_subject() {
        let subject = Digest::of(b"manifest");
        let layer = Digest::of(b"layer");
        let table = Digest::of(b"table");
        let windows = Digest::of(b"windows");
        let bytes = manifest(
            &subject,
            OCI_MANIFEST,
            8,
            &[(layer, table, 5)],
            &[(layer, windows, 9)],
        )
        .unwrap();
        let found = tables(&bytes, &subject).unwrap();
        assert_eq!(found.get(&layer), Some(&(table, 5)));
        assert_eq!(found.len(), 1, "windows blobs are not tables");
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(ARTIFACT_TYPE) && text.contains("\"subject\""),
            "{text}"
        );
        // Not for another image.
        let err = tables(&bytes, &Digest::of(b"other"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the image"), "{err}");
    }

    #[test]
    fn the_referrers_tag_keeps_others_and_replaces_ours() {
        let first = add_referrer(None, &Digest::of(b"a"), 10).unwrap();
        assert_eq!(find_ours(&first).unwrap(), Some(Digest::of(b"a")));
        // Someone else's referrer (a signature) stays; our older index goes.
        let mut index: serde_json::Value = serde_json::from_slice(&first).unwrap();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": Digest::of(b"sig").to_string(),
                "size": 3,
                "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"
            }));
        let with_sig = serde_json::to_vec(&index).unwrap();
        let second = add_referrer(Some(&with_sig), &Digest::of(b"b"), 11).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&second).unwrap();
        assert_eq!(parsed["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(find_ours(&second).unwrap(), Some(Digest::of(b"b")));
        assert_eq!(referrers_tag(&Digest::of(b"a")).len(), "sha256-".len() + 64);
        assert!(find_ours(b"[]").is_err());
    }
}
