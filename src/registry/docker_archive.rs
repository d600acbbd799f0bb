//! A `docker save` / `podman save` / `skopeo copy … docker-archive:` tar, read in place.
//!
//! Such an archive has `manifest.json`, a JSON array of `{Config, RepoTags, Layers}` naming
//! members, plus the legacy `repositories` file (ignored). It has no registry manifest, so one is
//! synthesized: the config's digest is the sha256 of its member, and each layer's is the sha256 of
//! its member, computed here by reading it once. Layers are normally plain tars, whose digest must
//! then be the config's diff_id; a gzip or zstd layer is accepted too, and its diff_id is checked
//! when it is imported.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::archive::{compression_of, read_up_to, ArchiveIndex};
use super::{BlobStream, MAX_METADATA_SIZE, OCI_MANIFEST};
use crate::digest::Digest;
use crate::reference::ArchivePick;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub struct DockerArchiveSource {
    path: PathBuf,
    pick: Option<ArchivePick>,
    state: OnceCell<State>,
}

/// What reading the archive's manifest established.
struct State {
    index: Arc<ArchiveIndex>,
    /// The member holding each blob of the synthesized manifest.
    blobs: HashMap<Digest, String>,
    manifest_digest: Digest,
    manifest_raw: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl DockerArchiveSource {
    pub fn new(path: &Path, pick: Option<&ArchivePick>) -> DockerArchiveSource {
        DockerArchiveSource { path: path.to_path_buf(), pick: pick.cloned(), state: OnceCell::new() }
    }

    pub async fn resolve_manifest(&self) -> Result<(Digest, Vec<u8>)> {
        let state = self.state().await?;
        Ok((state.manifest_digest.clone(), state.manifest_raw.clone()))
    }

    pub async fn fetch_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        let state = self.state().await?;
        let member = state.member(digest)?;
        let bytes = state.index.read_member(member, MAX_METADATA_SIZE).await?;
        digest.verify_bytes(&bytes, &format!("member '{member}' of {}", self.path.display()))?;
        Ok(bytes)
    }

    pub async fn blob_stream(&self, digest: &Digest) -> Result<BlobStream> {
        let state = self.state().await?;
        state.index.open_member(state.member(digest)?).await
    }

    async fn state(&self) -> Result<&State> {
        self.state
            .get_or_try_init(|| async {
                let index = ArchiveIndex::load(&self.path).await?;
                let pick = self.pick.clone();
                tokio::task::spawn_blocking(move || synthesize(index, pick.as_ref()))
                    .await
                    .map_err(|e| anyhow!("archive reading task failed: {e}"))?
            })
            .await
    }
}

impl State {
    fn member(&self, digest: &Digest) -> Result<&str> {
        self.blobs
            .get(digest)
            .map(String::as_str)
            .with_context(|| format!("{} has no blob {digest}", self.index.path().display()))
    }
}

/// Reads `manifest.json`, picks the image, hashes its config and layers, and builds its manifest.
fn synthesize(index: Arc<ArchiveIndex>, pick: Option<&ArchivePick>) -> Result<State> {
    let archive = index.path().display().to_string();
    let read = |name: &str| index.read_member_blocking(name, MAX_METADATA_SIZE);
    if !index.contains("manifest.json") {
        bail!("{archive} is not a docker archive (no manifest.json in it)");
    }
    let entries: Vec<Entry> = serde_json::from_slice(&read("manifest.json")?)
        .with_context(|| format!("parsing manifest.json in {archive}"))?;
    let entry = pick_entry(&entries, pick, &archive)?;

    let config_raw = read(&entry.config).with_context(|| format!("reading the image config of {archive}"))?;
    let config_digest = Digest::of_bytes(&config_raw);
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    let config: Config = serde_json::from_slice(&config_raw)
        .with_context(|| format!("parsing the image config '{}' in {archive}", entry.config))?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        bail!(
            "{archive} is inconsistent: {} layers listed in manifest.json but {} diff_ids in the config",
            entry.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }

    let mut blobs = HashMap::from([(config_digest.clone(), entry.config.clone())]);
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let diff_id =
            Digest::parse(diff_id).with_context(|| format!("reading a diff_id of the config in {archive}"))?;
        let (digest, size, compression) =
            hash_member(&index, name).with_context(|| format!("reading layer '{name}' of {archive}"))?;
        let media_type = match compression {
            None => {
                if digest != diff_id {
                    bail!(
                        "digest mismatch for layer '{name}' of {archive}: the config's diff_id is {diff_id}, the member hashes to {digest}"
                    );
                }
                "application/vnd.oci.image.layer.v1.tar"
            }
            Some("gzip") => "application/vnd.oci.image.layer.v1.tar+gzip",
            Some("zstd") => "application/vnd.oci.image.layer.v1.tar+zstd",
            Some(other) => {
                bail!("layer '{name}' of {archive} is {other}-compressed, which is not supported")
            }
        };
        layers.push(serde_json::json!({"mediaType": media_type, "digest": digest.as_str(), "size": size}));
        blobs.insert(digest, name.clone());
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.as_str(), "size": config_raw.len()},
        "layers": layers,
    });
    let manifest_raw = serde_json::to_vec(&manifest).context("writing the synthesized manifest")?;
    Ok(State { manifest_digest: Digest::of_bytes(&manifest_raw), manifest_raw, blobs, index })
}

/// The entry named by the pick, or the only one.
fn pick_entry<'a>(entries: &'a [Entry], pick: Option<&ArchivePick>, archive: &str) -> Result<&'a Entry> {
    let tags = || {
        let all: Vec<_> = entries.iter().flat_map(|e| e.repo_tags.iter().flatten().cloned()).collect();
        if all.is_empty() {
            "none".to_string()
        } else {
            all.join(", ")
        }
    };
    match pick {
        None => match entries {
            [only] => Ok(only),
            [] => bail!("the docker archive {archive} holds no image"),
            _ => bail!(
                "the docker archive {archive} holds {} images; name one with docker-archive:PATH:REF or docker-archive:PATH:@N (tags: {})",
                entries.len(),
                tags()
            ),
        },
        Some(ArchivePick::Index(n)) => entries.get(*n).with_context(|| {
            format!("the docker archive {archive} has no image @{n}: it holds {} (counting from @0)", entries.len())
        }),
        Some(ArchivePick::Ref(wanted)) => {
            let normalized = |s: &str| crate::reference::parse_docker(s).ok().map(|r| r.whole());
            let wanted_normal = normalized(wanted);
            entries
                .iter()
                .find(|e| {
                    e.repo_tags.iter().flatten().any(|tag| {
                        tag == wanted || (wanted_normal.is_some() && normalized(tag) == wanted_normal)
                    })
                })
                .with_context(|| format!("no image tagged '{wanted}' in {archive} (tags: {})", tags()))
        }
    }
}

/// The sha256 and size of a member, and the compression its first bytes show.
fn hash_member(index: &ArchiveIndex, name: &str) -> Result<(Digest, u64, Option<&'static str>)> {
    let expected = index.member(name)?.size;
    let mut reader = index.open_member_blocking(name)?;
    let mut head = [0u8; 6];
    let n = read_up_to(&mut reader, &mut head).context("reading its first bytes")?;
    let mut hasher = Sha256::new();
    hasher.update(&head[..n]);
    let rest = io::copy(&mut reader, &mut hasher).context("hashing it")?;
    let size = n as u64 + rest;
    if size != expected {
        bail!("the archive is truncated: the member has {size} of its {expected} bytes");
    }
    let digest = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize())))?;
    Ok((digest, size, compression_of(&head[..n])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tags: &[&str]) -> Entry {
        Entry {
            config: "c.json".into(),
            repo_tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            layers: Vec::new(),
        }
    }

    #[test]
    fn entries_are_picked_by_tag_index_or_uniqueness() {
        let entries = [entry(&["busybox:latest"]), entry(&["registry.lan:5000/k8s/etcd:3.4", "etcd:3.4"])];
        let by = |pick: Option<ArchivePick>| pick_entry(&entries, pick.as_ref(), "a.tar").map(|e| e.repo_tags.clone());
        let second = Some(entries[1].repo_tags.clone().unwrap());
        assert_eq!(by(Some(ArchivePick::Ref("etcd:3.4".into()))).unwrap(), second);
        assert_eq!(by(Some(ArchivePick::Ref("docker.io/library/etcd:3.4".into()))).unwrap(), second);
        assert_eq!(by(Some(ArchivePick::Ref("registry.lan:5000/k8s/etcd:3.4".into()))).unwrap(), second);
        assert_eq!(by(Some(ArchivePick::Ref("busybox".into()))).unwrap(), Some(vec!["busybox:latest".to_string()]));
        assert_eq!(by(Some(ArchivePick::Index(1))).unwrap(), second);

        let err = by(Some(ArchivePick::Ref("etcd:3.5".into()))).unwrap_err().to_string();
        assert!(err.contains("no image tagged 'etcd:3.5'") && err.contains("busybox:latest"), "{err}");
        let err = by(Some(ArchivePick::Index(2))).unwrap_err().to_string();
        assert!(err.contains("no image @2"), "{err}");
        let err = by(None).unwrap_err().to_string();
        assert!(err.contains("holds 2 images"), "{err}");
        assert!(pick_entry(&entries[..1], None, "a.tar").is_ok());
    }
}
