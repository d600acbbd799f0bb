//! A registry, over its HTTP API (see [`super::http`]).

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::distribution::Reference;
use tokio_util::io::StreamReader;

use super::http::RegistryHttp;
use super::{
    is_index, select_from_index, BlobStream, RegistryOptions, DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST, MAX_METADATA_SIZE, OCI_INDEX, OCI_MANIFEST,
};
use crate::digest::Digest;

pub(super) const DEFAULT_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";

pub struct RegistrySource {
    http: RegistryHttp,
    reference: Reference,
}

impl RegistrySource {
    pub fn new(reference: &Reference, options: &RegistryOptions) -> Result<RegistrySource> {
        let registry = reference.resolve_registry().to_string();
        let plain_http = match options.tls_verify {
            Some(verify) => !verify,
            None => is_loopback(&registry) || marked_insecure(&options.registries_conf, &registry)?,
        };
        let http = RegistryHttp::new(
            &registry,
            reference.repository(),
            plain_http,
            options.timeout,
        )?;
        Ok(RegistrySource {
            http,
            reference: reference.clone(),
        })
    }

    /// Returns the digest and raw bytes of the platform manifest.
    pub async fn resolve_manifest(&self) -> Result<(Digest, Vec<u8>)> {
        let (digest, raw) = self.fetch_manifest(&self.reference).await?;
        if !is_index(&raw)? {
            return Ok((digest, raw));
        }
        let chosen = select_from_index(&raw)?;
        let by_digest = self.reference.clone_with_digest(chosen.to_string());
        let (digest, raw) = self.fetch_manifest(&by_digest).await?;
        if digest != chosen {
            anyhow::bail!("the registry returned manifest {digest} when asked for {chosen}");
        }
        if is_index(&raw)? {
            anyhow::bail!("the image index points to another index ({chosen}); nested indexes are not supported");
        }
        Ok((digest, raw))
    }

    async fn fetch_manifest(&self, reference: &Reference) -> Result<(Digest, Vec<u8>)> {
        let accepted = [
            OCI_MANIFEST,
            DOCKER_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
        ];
        let what = format!("the manifest of {}", reference.whole());
        let tag_or_digest = match reference.digest() {
            Some(digest) => digest,
            None => reference.tag().unwrap_or("latest"),
        };
        let raw = self
            .http
            .manifest(tag_or_digest, &accepted, MAX_METADATA_SIZE, &what)
            .await
            .with_context(|| format!("fetching {what}"))?;
        // The registry's digest header is not trusted: hash the bytes, and compare with the
        // digest the user asked for, if any.
        let digest = Digest::of_bytes(&raw);
        if let Some(wanted) = reference.digest() {
            let wanted = Digest::parse(wanted)?;
            wanted.verify_bytes(&raw, &what)?;
        }
        Ok((digest, raw))
    }

    /// The image config, read up to the size its descriptor gives and no further.
    pub async fn fetch_blob_bytes(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        if size > MAX_METADATA_SIZE {
            anyhow::bail!("the image config {digest} has an unreasonable size ({size} bytes)");
        }
        let what = format!("the image config {digest}");
        self.http
            .blob_bytes(digest.as_str(), size, &what)
            .await
            .with_context(|| format!("fetching {what}"))
    }

    /// A layer's bytes as they come; the caller bounds them to `size` (see [`super::SizedReader`]).
    pub async fn blob_stream(&self, digest: &Digest, size: u64) -> Result<BlobStream> {
        let what = format!("layer {digest}");
        let stream = self
            .http
            .blob_stream(digest.as_str(), size, &what)
            .await
            .with_context(|| format!("fetching {what}"))?;
        Ok(Box::pin(StreamReader::new(stream)))
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(host, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            host
        } else {
            registry
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads `[[registry]] location = "..." insecure = true` entries of containers-registries.conf.
fn marked_insecure(conf: &Path, registry: &str) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct Conf {
        #[serde(default)]
        registry: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        location: Option<String>,
        prefix: Option<String>,
        #[serde(default)]
        insecure: bool,
    }
    let text = match std::fs::read_to_string(conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", conf.display())),
    };
    let parsed: Conf =
        toml::from_str(&text).with_context(|| format!("parsing {}", conf.display()))?;
    Ok(parsed.registry.iter().any(|entry| {
        let location = entry
            .prefix
            .as_deref()
            .or(entry.location.as_deref())
            .unwrap_or_default();
        entry.insecure && (location == registry || location.split('/').next() == Some(registry))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for yes in ["127.0.0.1:5000", "127.3.4.5", "localhost:80", "[::1]:5000"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "10.0.0.1:5000",
            "registry.example:443",
            "localhost.example",
            "docker.io",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn registries_conf_insecure_entries() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("registries.conf");
        std::fs::write(
            &conf,
            "unqualified-search-registries = []\n[[registry]]\nlocation = \"reg.lan:5000\"\ninsecure = true\n\n[[registry]]\nlocation = \"secure.lan\"\n",
        )
        .unwrap();
        assert!(marked_insecure(&conf, "reg.lan:5000").unwrap());
        assert!(!marked_insecure(&conf, "secure.lan").unwrap());
        assert!(!marked_insecure(&conf, "other:5000").unwrap());
        assert!(!marked_insecure(&dir.path().join("missing.conf"), "reg.lan:5000").unwrap());
        std::fs::write(&conf, "[[registry]\n").unwrap();
        assert!(marked_insecure(&conf, "x").is_err());
    }
}
