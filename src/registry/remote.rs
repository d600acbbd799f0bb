//! A registry, through `oci-client`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use futures_util::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio_util::io::StreamReader;

use super::{
    is_index, select_from_index, BlobStream, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MAX_METADATA_SIZE, OCI_INDEX, OCI_MANIFEST,
};
use crate::digest::Digest;

const DEFAULT_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `Some(false)`: plain HTTP for the image's registry (`--tls-verify=false`).
    pub tls_verify: Option<bool>,
    /// containers-registries.conf(5); registries marked `insecure = true` there use plain HTTP.
    pub registries_conf: PathBuf,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions { tls_verify: None, registries_conf: PathBuf::from(DEFAULT_REGISTRIES_CONF) }
    }
}

pub struct RegistrySource {
    client: Client,
    reference: Reference,
    plain_http: bool,
}

impl RegistrySource {
    pub fn new(reference: &Reference, options: &RegistryOptions) -> Result<RegistrySource> {
        let registry = reference.resolve_registry().to_string();
        let plain_http = match options.tls_verify {
            Some(verify) => !verify,
            None => is_loopback(&registry) || marked_insecure(&options.registries_conf, &registry)?,
        };
        let protocol = if plain_http { ClientProtocol::HttpsExcept(vec![registry]) } else { ClientProtocol::Https };
        // `Client::new` would silently fall back to defaults on a bad config.
        let client = Client::try_from(ClientConfig { protocol, ..Default::default() })
            .context("configuring the registry client")?;
        Ok(RegistrySource { client, reference: reference.clone(), plain_http })
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
        let accepted = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST];
        let (raw, _) = self
            .client
            .pull_manifest_raw(reference, &RegistryAuth::Anonymous, &accepted)
            .await
            .map_err(|e| self.explain(e))
            .with_context(|| format!("fetching the manifest of {}", reference.whole()))?;
        if raw.len() as u64 > MAX_METADATA_SIZE {
            anyhow::bail!("the manifest of {} is larger than {MAX_METADATA_SIZE} bytes", reference.whole());
        }
        // The registry's digest header is not trusted: hash the bytes, and compare with the
        // digest the user asked for, if any.
        let digest = Digest::of_bytes(&raw);
        if let Some(wanted) = reference.digest() {
            let wanted = Digest::parse(wanted)?;
            wanted.verify_bytes(&raw, &format!("the manifest of {}", reference.whole()))?;
        }
        Ok((digest, raw.to_vec()))
    }

    pub async fn fetch_blob_bytes(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        if size > MAX_METADATA_SIZE {
            anyhow::bail!("the image config {digest} has an unreasonable size ({size} bytes)");
        }
        let mut out = Vec::with_capacity(size as usize);
        self.client
            .pull_blob(&self.reference, digest.as_str(), &mut out)
            .await
            .map_err(|e| self.explain(e))
            .with_context(|| format!("fetching blob {digest}"))?;
        Ok(out)
    }

    pub async fn blob_stream(&self, digest: &Digest, _size: u64) -> Result<BlobStream> {
        let stream = self
            .client
            .pull_blob_stream(&self.reference, digest.as_str())
            .await
            .map_err(|e| self.explain(e))
            .with_context(|| format!("fetching blob {digest}"))?;
        let bytes = stream.stream.map_err(std::io::Error::other);
        Ok(Box::pin(StreamReader::new(bytes)))
    }

    /// Adds the likely cause to connection-level failures.
    fn explain(&self, err: oci_client::errors::OciDistributionError) -> anyhow::Error {
        let registry = self.reference.resolve_registry();
        let text = format!("{err}");
        let mut chain = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = source {
            chain.push_str(&e.to_string());
            chain.push(' ');
            source = e.source();
        }
        if chain.contains("Connection refused") || chain.contains("error trying to connect") || chain.contains("dns error") {
            let hint = if self.plain_http {
                String::new()
            } else {
                format!("; if it serves plain HTTP, pass --tls-verify=false or mark it insecure in {DEFAULT_REGISTRIES_CONF}")
            };
            return anyhow!("cannot reach registry {registry}: {}{hint}", chain.trim());
        }
        if chain.contains("InvalidContentType") || chain.contains("wrong version number") {
            return anyhow!("registry {registry} does not speak HTTPS ({text}); pass --tls-verify=false to use plain HTTP");
        }
        anyhow!("{text}")
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(host, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) { host } else { registry }
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
    let parsed: Conf = toml::from_str(&text).with_context(|| format!("parsing {}", conf.display()))?;
    Ok(parsed.registry.iter().any(|entry| {
        let location = entry.prefix.as_deref().or(entry.location.as_deref()).unwrap_or_default();
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
        for no in ["10.0.0.1:5000", "registry.example:443", "localhost.example", "docker.io"] {
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
