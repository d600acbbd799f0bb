//! Fetching images: manifests and configs as raw, digest-checked bytes, and layer blobs as
//! streams. Sources: a registry (through `oci-client`, `remote.rs`; manifests over a bounded
//! request of our own, `http.rs`), an OCI image layout on disk or in a tar (`oci-archive:`), and a
//! `docker save` tar (`docker-archive:`); archives are read in place.
//! Nothing here knows about OSTree; layer streams are verified by whoever reads them to the end.
//!
//! What a source may send is bounded: manifests and configs are read up to a size fixed in
//! advance, layer streams up to their descriptor's size, and a manifest may list only so many
//! layers. A registry that goes silent is given up after a timeout.

mod archive;
mod auth;
mod bounded;
mod certs;
mod config;
mod docker_archive;
mod http;
mod layout;
mod remote;

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use tokio::io::AsyncRead;

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::store::LayerLimits;

pub use auth::{remove as logout, AuthFiles, Credentials};
pub use bounded::SizedReader;
pub use config::{parse_image, parse_image_candidates, RegistriesConf};
pub use http::is_transient;
pub(crate) use http::{is_downgrade, tls_connector};
pub(crate) use remote::is_loopback;
pub use remote::login;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests, indexes and configs larger than this are refused rather than held in memory.
pub(crate) const MAX_METADATA_SIZE: u64 = 4 * 1024 * 1024;

/// How long a registry may stay silent by default (connecting, before answering, within a blob).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Where containers-registries.conf(5) is read from by default.
pub const DEFAULT_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
/// Where containers-registries.d(5), which says where signatures are found, is read from by
/// default.
pub const DEFAULT_REGISTRIES_D: &str = "/etc/containers/registries.d";
/// Most layers accepted in a manifest by default.
pub const DEFAULT_MAX_LAYERS: usize = 500;

/// A stream of a blob's raw (still compressed) bytes.
pub type BlobStream = Pin<Box<dyn AsyncRead + Send>>;

/// Told how far layer downloads have got (the progress bars of a terminal).
pub trait BlobProgress: Send + Sync {
    /// These layers (digest, size) are about to be fetched.
    fn begin(&self, layers: &[(Digest, u64)]);
    fn advanced(&self, layer: &Digest, bytes: u64);
    fn finished(&self, layer: &Digest);
    /// Every layer is in, or the pull failed.
    fn end(&self);
}

/// Where layer progress is reported, if anywhere.
#[derive(Clone, Default)]
pub struct Progress(pub Option<std::sync::Arc<dyn BlobProgress>>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Progress(reported)" } else { "Progress(none)" })
    }
}

/// A layer stream that reports what passes through it.
struct Reporting {
    inner: BlobStream,
    layer: Digest,
    sink: std::sync::Arc<dyn BlobProgress>,
}

impl AsyncRead for Reporting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.sink.advanced(&self.layer, read as u64);
        }
        polled
    }
}

/// How to reach registries, and what to accept from any source.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `Some(false)`: plain HTTP for the image's registry (`--tls-verify=false`).
    pub tls_verify: Option<bool>,
    /// containers-registries.conf(5); registries marked `insecure = true` there use plain HTTP.
    pub registries_conf: PathBuf,
    /// A registry that sends nothing for this long is given up (`--registry-timeout`).
    pub timeout: Duration,
    /// Manifests listing more layers are refused (`--max-layers`).
    pub max_layers: usize,
    /// What one layer may hold (`--max-layer-*`, `--max-tar-header`, `--max-path-*`).
    pub layer_limits: LayerLimits,
    /// Where credentials are found (`--authfile`, containers-auth.json(5)).
    pub auth: AuthFiles,
    /// The one directory of CA certificates to trust (`--cert-dir`), instead of the registry's
    /// own under `/etc/containers/certs.d` and `/etc/docker/certs.d`.
    pub cert_dir: Option<PathBuf>,
    /// The signature policy to follow instead of `/etc/containers/policy.json`.
    pub signature_policy: Option<PathBuf>,
    /// containers-registries.d(5): where signatures are found.
    pub registries_d: PathBuf,
    /// Where layer downloads report their progress.
    pub progress: Progress,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: None,
            registries_conf: PathBuf::from(DEFAULT_REGISTRIES_CONF),
            timeout: DEFAULT_TIMEOUT,
            max_layers: DEFAULT_MAX_LAYERS,
            layer_limits: LayerLimits::DEFAULT,
            auth: AuthFiles::default(),
            cert_dir: None,
            signature_policy: None,
            registries_d: PathBuf::from(DEFAULT_REGISTRIES_D),
            progress: Progress::default(),
        }
    }
}

/// A configuration file of this host (an administrator's: auth, registries, certificates,
/// policy), read whole up to `max` bytes and refused past it; `None` when there is none.
pub(crate) fn read_host_config(path: &std::path::Path, max: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(Some(bytes))
}

/// [`read_host_config`] of a text file.
pub(crate) fn read_host_config_text(path: &std::path::Path, max: u64) -> Result<Option<String>> {
    read_host_config(path, max)?
        .map(|bytes| String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display())))
        .transpose()
}

/// An image's manifest, resolved to this host's platform; what its signatures are checked
/// against before anything else is fetched.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The digest of the manifest the reference names: an index for a multi-platform image. What
    /// signatures are made for.
    pub named_digest: Digest,
    pub manifest_digest: Digest,
    pub manifest_raw: Vec<u8>,
    pub manifest: ImageManifest,
}

/// An image's manifest and config, resolved to this host's platform.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    /// The digest of the manifest the reference names: an index for a multi-platform image. What
    /// signatures are made for.
    pub named_digest: Digest,
    pub manifest_digest: Digest,
    pub manifest_raw: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_raw: Vec<u8>,
    pub config: ImageConfiguration,
}

/// One sigstore signature attached to an image: the signed claim and its signature annotation
/// (unverified; see [`crate::signature`]).
#[derive(Debug, Clone)]
pub struct SigstoreAttachment {
    pub payload: Vec<u8>,
    pub signature: Option<String>,
}

/// Where images are fetched from.
pub struct Source {
    from: Origin,
    max_layers: usize,
    progress: Progress,
}

enum Origin {
    /// Each place the image may come from (its mirrors, then its registry), and the one that gave
    /// the manifest, which the layers then come from too.
    Registry {
        places: Vec<RegistryPlace>,
        chosen: std::sync::OnceLock<usize>,
    },
    /// `oci:DIR` and `oci-archive:PATH`.
    Layout(layout::LayoutSource),
    DockerArchive(docker_archive::DockerArchiveSource),
}

impl Source {
    pub fn new(image: &ImageRef, options: &RegistryOptions) -> Result<Source> {
        let from = match image {
            ImageRef::Registry(reference) => {
                Origin::Registry { places: registry_places(reference, options)?, chosen: std::sync::OnceLock::new() }
            }
            ImageRef::Layout { dir, tag } => Origin::Layout(layout::LayoutSource::new(dir, tag.as_deref())),
            ImageRef::OciArchive { path, tag } => Origin::Layout(layout::LayoutSource::archive(path, tag.as_deref())),
            ImageRef::DockerArchive { path, pick } => {
                Origin::DockerArchive(docker_archive::DockerArchiveSource::new(path, pick.as_ref()))
            }
        };
        Ok(Source { from, max_layers: options.max_layers, progress: options.progress.clone() })
    }

    /// [`Source::fetch_manifest`], then [`Source::fetch_config`].
    pub async fn fetch_image(&self) -> Result<FetchedImage> {
        let manifest = self.fetch_manifest().await?;
        self.fetch_config(manifest).await
    }

    /// Fetches the manifest, resolving an index to this host's platform: from a registry, from
    /// the first of its places that gives it, each failure said if none does. That place is the
    /// one the config, the layers and the sigstore signatures then come from.
    pub async fn fetch_manifest(&self) -> Result<FetchedManifest> {
        let Origin::Registry { places, chosen } = &self.from else { return self.manifest_from(None).await };
        let mut failures = Vec::new();
        for (index, place) in places.iter().enumerate() {
            match async { self.manifest_from(Some(place.source()?)).await }.await {
                Ok(manifest) => {
                    let _ = chosen.set(index);
                    return Ok(manifest);
                }
                Err(err) if places.len() == 1 => return Err(err),
                Err(err) => {
                    let what = if place.candidate.mirror { "mirror" } else { "registry" };
                    failures.push(format!("{what} {}: {err:#}", place.candidate.repository));
                }
            }
        }
        bail!("no place the image may be pulled from gave it: {}", failures.join("; "))
    }

    /// [`Source::fetch_manifest`] from one registry place (`registry`), or from the layout or archive.
    async fn manifest_from(&self, registry: Option<&remote::RegistrySource>) -> Result<FetchedManifest> {
        let (named_digest, manifest_digest, manifest_raw) = match (&self.from, registry) {
            (_, Some(s)) => s.resolve_manifest().await?,
            (Origin::Layout(s), None) => s.resolve_manifest().await?,
            (Origin::DockerArchive(s), None) => {
                let (digest, raw) = s.resolve_manifest().await?;
                (digest.clone(), digest, raw)
            }
            (Origin::Registry { .. }, None) => bail!("no registry to fetch from"),
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_raw).context("parsing the image manifest")?;
        let layers = manifest.layers().len();
        if layers > self.max_layers {
            bail!("the image has {layers} layers, more than the {} accepted (--max-layers)", self.max_layers);
        }
        Ok(FetchedManifest { named_digest, manifest_digest, manifest_raw, manifest })
    }

    /// The config `manifest` names, from where the manifest came, checked against its digest
    /// and this host's platform.
    pub async fn fetch_config(&self, manifest: FetchedManifest) -> Result<FetchedImage> {
        let FetchedManifest { named_digest, manifest_digest, manifest_raw, manifest } = manifest;
        let config_digest = Digest::parse(manifest.config().digest().as_ref()).context("reading the config digest")?;
        let config_raw = match &self.from {
            Origin::Registry { places, chosen } => {
                let index = chosen.get().copied().context("the config was asked for before the manifest")?;
                let source = places.get(index).context("no such registry place")?.source()?;
                source.fetch_blob_bytes(&config_digest, manifest.config().size(), "the image config").await?
            }
            Origin::Layout(s) => s.fetch_blob_bytes(&config_digest).await?,
            Origin::DockerArchive(s) => s.fetch_blob_bytes(&config_digest).await?,
        };
        config_digest.verify_bytes(&config_raw, "the image config")?;
        let config: ImageConfiguration = serde_json::from_slice(&config_raw).context("parsing the image config")?;
        check_platform(config.os().to_string().as_str(), config.architecture().to_string().as_str())?;
        Ok(FetchedImage { named_digest, manifest_digest, manifest_raw, manifest, config_raw, config })
    }

    /// The registry place the manifest came from (a mirror, or the registry itself), with the
    /// image's tag or digest; `None` for an image on disk, or before [`Source::fetch_manifest`].
    pub fn pulled_from(&self) -> Option<&oci_client::Reference> {
        match &self.from {
            Origin::Registry { places, chosen } => places.get(*chosen.get()?).map(|place| &place.reference),
            Origin::Layout(_) | Origin::DockerArchive(_) => None,
        }
    }

    /// The sigstore signatures attached to manifest `digest` in the registry the manifest came
    /// from; none for an image on disk.
    pub async fn sigstore_signatures(&self, digest: &Digest) -> Result<Vec<SigstoreAttachment>> {
        match &self.from {
            Origin::Registry { places, chosen } => {
                let index = chosen.get().copied().context("signatures were asked for before the manifest")?;
                places.get(index).context("no such registry place")?.source()?.sigstore_attachments(digest).await
            }
            Origin::Layout(_) | Origin::DockerArchive(_) => Ok(Vec::new()),
        }
    }

    /// Opens a layer blob as a stream of its raw bytes, which fails once they pass `size`, the
    /// size its descriptor gives (or end short of it).
    pub async fn blob_stream(&self, digest: &Digest, size: u64) -> Result<BlobStream> {
        let stream = match &self.from {
            Origin::Registry { places, chosen } => {
                let index = chosen.get().copied().context("a layer was asked for before the manifest")?;
                places.get(index).context("no such registry place")?.source()?.blob_stream(digest, size).await?
            }
            Origin::Layout(s) => s.blob_stream(digest).await?,
            Origin::DockerArchive(s) => s.blob_stream(digest).await?,
        };
        let sized: BlobStream = Box::pin(SizedReader::new(stream, size, format!("layer {digest}")));
        Ok(match &self.progress.0 {
            Some(sink) => Box::pin(Reporting { inner: sized, layer: digest.clone(), sink: sink.clone() }),
            None => sized,
        })
    }
}

/// One place an image may be pulled from (a mirror, or the registry itself), whose client is
/// made only if the place is tried: building an HTTP client loads the system's CA bundle, and
/// finding credentials may run a helper program.
struct RegistryPlace {
    candidate: config::Candidate,
    reference: oci_client::Reference,
    plain_http: bool,
    options: RegistryOptions,
    credential_helpers: Vec<String>,
    source: std::sync::OnceLock<remote::RegistrySource>,
}

impl RegistryPlace {
    fn source(&self) -> Result<&remote::RegistrySource> {
        if let Some(source) = self.source.get() {
            return Ok(source);
        }
        let source =
            remote::RegistrySource::new(&self.reference, &self.options, self.plain_http, &self.credential_helpers)?;
        Ok(self.source.get_or_init(|| source))
    }
}

/// The places `reference` may be pulled from, as registries.conf says, in the order they are tried.
fn registry_places(reference: &oci_client::Reference, options: &RegistryOptions) -> Result<Vec<RegistryPlace>> {
    let conf = RegistriesConf::load(&options.registries_conf)?;
    let credential_helpers = conf.credential_helpers();
    let name = format!("{}/{}", reference.registry(), reference.repository());
    let suffix = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => format!("@{digest}"),
        (None, Some(tag)) => format!(":{tag}"),
        (None, None) => String::new(),
    };
    let mut places = Vec::new();
    for candidate in conf.candidates(&name, reference.digest().is_some())? {
        let text = format!("{}{suffix}", candidate.repository);
        let at = crate::reference::parse_docker(&text)
            .with_context(|| format!("registries.conf makes {name} '{text}', not an image reference"))?;
        let plain_http = match options.tls_verify {
            Some(verify) => !verify,
            None => candidate.insecure || remote::is_loopback(at.registry()) || conf.is_insecure(at.registry()),
        };
        places.push(RegistryPlace {
            candidate,
            reference: at,
            plain_http,
            options: options.clone(),
            credential_helpers: credential_helpers.clone(),
            source: std::sync::OnceLock::new(),
        });
    }
    Ok(places)
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
        available.push(format!(
            "{entry_os}/{entry_arch}{}",
            if entry_variant.is_empty() { String::new() } else { format!("/{entry_variant}") }
        ));
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
