//! An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/…`), for air-gapped hosts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{is_index, select_from_index, BlobStream};
use crate::digest::Digest;

/// The annotation that names a manifest in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct LayoutSource {
    dir: PathBuf,
    tag: Option<String>,
}

impl LayoutSource {
    pub fn new(dir: &Path, tag: Option<&str>) -> LayoutSource {
        LayoutSource { dir: dir.to_path_buf(), tag: tag.map(str::to_string) }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    pub async fn fetch_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = tokio::fs::read(&path).await.with_context(|| format!("reading blob {}", path.display()))?;
        digest.verify_bytes(&bytes, &format!("blob {}", path.display()))?;
        Ok(bytes)
    }

    pub async fn blob_stream(&self, digest: &Digest) -> Result<BlobStream> {
        let path = self.blob_path(digest);
        let file = tokio::fs::File::open(&path).await.with_context(|| format!("opening blob {}", path.display()))?;
        Ok(Box::pin(file))
    }

    pub async fn resolve_manifest(&self) -> Result<(Digest, Vec<u8>)> {
        let marker = self.dir.join("oci-layout");
        if !marker.is_file() {
            bail!("{} is not an OCI image layout (no oci-layout file)", self.dir.display());
        }
        let index_path = self.dir.join("index.json");
        let index_raw = tokio::fs::read(&index_path)
            .await
            .with_context(|| format!("reading {}", index_path.display()))?;
        let top = self.pick_from_top_index(&index_raw)?;
        let raw = self.fetch_blob_bytes(&top).await?;
        if !is_index(&raw)? {
            return Ok((top, raw));
        }
        let chosen = select_from_index(&raw)?;
        let raw = self.fetch_blob_bytes(&chosen).await?;
        Ok((chosen, raw))
    }

    /// Picks the entry of `index.json` named by the tag, or the only entry when no tag is given.
    fn pick_from_top_index(&self, raw: &[u8]) -> Result<Digest> {
        #[derive(serde::Deserialize)]
        struct Index {
            manifests: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            digest: String,
            #[serde(default)]
            annotations: std::collections::HashMap<String, String>,
        }
        let index: Index = serde_json::from_slice(raw)
            .with_context(|| format!("parsing {}/index.json", self.dir.display()))?;
        let names: Vec<_> = index.manifests.iter().filter_map(|m| m.annotations.get(REF_NAME).cloned()).collect();
        let entry = match &self.tag {
            Some(tag) => index.manifests.iter().find(|m| m.annotations.get(REF_NAME) == Some(tag)).with_context(|| {
                format!("no image tagged '{tag}' in {} (tags: {})", self.dir.display(), names.join(", "))
            })?,
            None => match index.manifests.as_slice() {
                [only] => only,
                [] => bail!("the OCI layout {} holds no image", self.dir.display()),
                _ => bail!(
                    "the OCI layout {} holds several images; name one with oci:DIR:TAG (tags: {})",
                    self.dir.display(),
                    names.join(", ")
                ),
            },
        };
        Digest::parse(&entry.digest)
    }
}
