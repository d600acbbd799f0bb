//! Fetching images: manifests and configs as raw, digest-checked bytes, and layer blobs as
//! streams. Sources: a registry (through `oci-client`), an OCI image layout on disk or in a tar
//! (`oci-archive:`), and a `docker save` tar (`docker-archive:`); archives are read in place.
//! Nothing here knows about OSTree; layer streams are verified by whoever reads them to the end.

mod archive;
mod docker_archive;
mod layout;
mod remote;

use std::pin::Pin;

use anyhow::{bail, Context, Result};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use tokio::io::AsyncRead;

use crate::digest::Digest;
use crate::reference::ImageRef;

pub use remote::RegistryOptions;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests, indexes and configs larger than this are refused rather than held in memory.
pub(crate) const MAX_METADATA_SIZE: u64 = 4 * 1024 * 1024;

/// A stream of a blob's raw (still compressed) bytes.
pub type BlobStream = Pin<Box<dyn AsyncRead + Send>>;

/// An image's manifest and config, resolved to this host's platform.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    pub manifest_digest: Digest,
    pub manifest_raw: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_raw: Vec<u8>,
    pub config: ImageConfiguration,
}

/// Where images are fetched from.
pub enum Source {
    Registry(remote::RegistrySource),
    /// `oci:DIR` and `oci-archive:PATH`.
    Layout(layout::LayoutSource),
    DockerArchive(docker_archive::DockerArchiveSource),
}

impl Source {
    pub fn new(image: &ImageRef, options: &RegistryOptions) -> Result<Source> {
        Ok(match image {
            ImageRef::Registry(reference) => Source::Registry(remote::RegistrySource::new(reference, options)?),
            ImageRef::Layout { dir, tag } => Source::Layout(layout::LayoutSource::new(dir, tag.as_deref())),
            ImageRef::OciArchive { path, tag } => Source::Layout(layout::LayoutSource::archive(path, tag.as_deref())),
            ImageRef::DockerArchive { path, pick } => {
                Source::DockerArchive(docker_archive::DockerArchiveSource::new(path, pick.as_ref()))
            }
        })
    }

    /// Fetches the manifest (resolving an index to this host's platform) and the config.
    pub async fn fetch_image(&self) -> Result<FetchedImage> {
        let (manifest_digest, manifest_raw) = match self {
            Source::Registry(s) => s.resolve_manifest().await?,
            Source::Layout(s) => s.resolve_manifest().await?,
            Source::DockerArchive(s) => s.resolve_manifest().await?,
        };
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_raw).context("parsing the image manifest")?;
        let config_digest = Digest::parse(manifest.config().digest().as_ref()).context("reading the config digest")?;
        let config_raw = match self {
            Source::Registry(s) => s.fetch_blob_bytes(&config_digest, manifest.config().size()).await?,
            Source::Layout(s) => s.fetch_blob_bytes(&config_digest).await?,
            Source::DockerArchive(s) => s.fetch_blob_bytes(&config_digest).await?,
        };
        config_digest.verify_bytes(&config_raw, "the image config")?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_raw).context("parsing the image config")?;
        check_platform(config.os().to_string().as_str(), config.architecture().to_string().as_str())?;
        Ok(FetchedImage { manifest_digest, manifest_raw, manifest, config_raw, config })
    }

    /// Opens a layer blob as a stream of its raw bytes.
    pub async fn blob_stream(&self, digest: &Digest, size: u64) -> Result<BlobStream> {
        match self {
            Source::Registry(s) => s.blob_stream(digest, size).await,
            Source::Layout(s) => s.blob_stream(digest).await,
            Source::DockerArchive(s) => s.blob_stream(digest).await,
        }
    }
}

/// Picks this host's manifest from an image index (os, architecture and, when given, variant).
pub(crate) fn select_from_index(raw: &[u8]) -> Result<Digest> {
    let index: ImageIndex = serde_json::from_slice(raw).context("parsing the image index")?;
    let (os, arch, variant) = host_platform();
    let mut available = Vec::new();
    for entry in index.manifests() {
        let Some(platform) = entry.platform() else { continue };
        let entry_os = platform.os().to_string();
        let entry_arch = platform.architecture().to_string();
        let entry_variant = platform.variant().clone().unwrap_or_default();
        available.push(format!("{entry_os}/{entry_arch}{}", if entry_variant.is_empty() { String::new() } else { format!("/{entry_variant}") }));
        let variant_ok = entry_variant.is_empty() || variant.is_none_or(|v| v == entry_variant);
        if entry_os == os && entry_arch == arch && variant_ok {
            return Digest::parse(entry.digest().as_ref()).context("reading a manifest digest in the index");
        }
    }
    bail!(
        "the image has no manifest for this host's platform {os}/{arch}; it offers: {}",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )
}

pub(crate) fn is_index(raw: &[u8]) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(raw).context("parsing a manifest")?;
    Ok(match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => bail!("unsupported manifest media type '{other}'"),
        None => probe.manifests.is_some(),
    })
}

/// This host's platform in OCI terms.
fn host_platform() -> (&'static str, &'static str, Option<&'static str>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let variant = if arch == "arm64" { Some("v8") } else { None };
    ("linux", arch, variant)
}

fn check_platform(os: &str, arch: &str) -> Result<()> {
    let (host_os, host_arch, _) = host_platform();
    if os != host_os || arch != host_arch {
        bail!("the image is for {os}/{arch}, but this host is {host_os}/{host_arch}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> Vec<u8> {
        let manifests: Vec<_> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": format!("sha256:{}", format!("{i}").repeat(64)),
                    "size": 100,
                    "platform": {"os": os, "architecture": arch}
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn index_resolves_to_host_platform() {
        let (_, arch, _) = host_platform();
        let raw = index(&[("linux", "s390x"), ("linux", arch)]);
        assert!(is_index(&raw).unwrap());
        assert_eq!(select_from_index(&raw).unwrap().hex(), "1".repeat(64));
    }

    #[test]
    fn index_without_host_platform_names_what_it_offers() {
        let raw = index(&[("linux", "s390x"), ("windows", "amd64")]);
        let err = select_from_index(&raw).unwrap_err().to_string();
        assert!(err.contains("linux/s390x, windows/amd64"), "{err}");
    }

    #[test]
    fn platform_mismatch_is_refused() {
        assert!(check_platform("linux", "s390x").is_err());
        let (os, arch, _) = host_platform();
        check_platform(os, arch).unwrap();
    }
}
