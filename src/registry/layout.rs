//! An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), for air-gapped hosts: either
//! a directory (`oci:DIR`) or a tar of one (`oci-archive:PATH`), read in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use super::archive::ArchiveIndex;
use super::{is_index, select_from_index, BlobStream, MAX_METADATA_SIZE};
use crate::digest::Digest;

/// The annotation that names a manifest in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where the layout's files are.
enum Files {
    Dir(PathBuf),
    /// Indexed on first use.
    Archive {
        path: PathBuf,
        index: OnceCell<Arc<ArchiveIndex>>,
    },
}

impl Files {
    fn path(&self) -> &Path {
        match self {
            Files::Dir(dir) => dir,
            Files::Archive { path, .. } => path,
        }
    }

    /// "DIR/NAME", or "NAME in ARCHIVE", for messages.
    fn describe(&self, name: &str) -> String {
        match self {
            Files::Dir(dir) => dir.join(name).display().to_string(),
            Files::Archive { path, .. } => format!("{name} in {}", path.display()),
        }
    }

    async fn archive(&self) -> Result<Option<&ArchiveIndex>> {
        match self {
            Files::Dir(_) => Ok(None),
            Files::Archive { path, index } => {
                Ok(Some(index.get_or_try_init(|| ArchiveIndex::load(path)).await?.as_ref()))
            }
        }
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        Ok(match self.archive().await? {
            Some(archive) => archive.contains(name),
            None => self.path().join(name).is_file(),
        })
    }

    /// Reads a whole file, refusing one larger than `max` bytes.
    async fn read(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        if let Some(archive) = self.archive().await? {
            return archive.read_member(name, max).await;
        }
        let path = self.path().join(name);
        let file = tokio::fs::File::open(&path).await.with_context(|| format!("reading {}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(max + 1).read_to_end(&mut bytes).await.with_context(|| format!("reading {}", path.display()))?;
        if bytes.len() as u64 > max {
            bail!("{} is larger than the {max} bytes accepted for it", path.display());
        }
        Ok(bytes)
    }

    async fn open(&self, name: &str) -> Result<BlobStream> {
        if let Some(archive) = self.archive().await? {
            return archive.open_member(name).await;
        }
        let path = self.path().join(name);
        let file = tokio::fs::File::open(&path).await.with_context(|| format!("opening blob {}", path.display()))?;
        Ok(Box::pin(file))
    }
}

pub struct LayoutSource {
    files: Files,
    tag: Option<String>,
}

impl LayoutSource {
    /// An OCI layout directory.
    pub fn new(dir: &Path, tag: Option<&str>) -> LayoutSource {
        LayoutSource { files: Files::Dir(dir.to_path_buf()), tag: tag.map(str::to_string) }
    }

    /// A tar archive of an OCI layout, read in place.
    pub fn archive(path: &Path, tag: Option<&str>) -> LayoutSource {
        LayoutSource {
            files: Files::Archive { path: path.to_path_buf(), index: OnceCell::new() },
            tag: tag.map(str::to_string),
        }
    }

    fn what(&self) -> String {
        match &self.files {
            Files::Dir(dir) => format!("the OCI layout {}", dir.display()),
            Files::Archive { path, .. } => format!("the OCI archive {}", path.display()),
        }
    }

    fn blob_name(digest: &Digest) -> String {
        format!("blobs/sha256/{}", digest.hex())
    }

    /// A manifest, index or config, whole and digest-checked.
    pub async fn fetch_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        let name = Self::blob_name(digest);
        let what = format!("blob {}", self.files.describe(&name));
        let bytes = self.files.read(&name, MAX_METADATA_SIZE).await.with_context(|| format!("reading {what}"))?;
        digest.verify_bytes(&bytes, &what)?;
        Ok(bytes)
    }

    pub async fn blob_stream(&self, digest: &Digest) -> Result<BlobStream> {
        self.files.open(&Self::blob_name(digest)).await
    }

    /// Returns the digest of the manifest the tag names, and the digest and bytes of the
    /// platform manifest.
    pub async fn resolve_manifest(&self) -> Result<(Digest, Digest, Vec<u8>)> {
        if !self.files.exists("oci-layout").await? {
            match &self.files {
                Files::Dir(dir) => bail!("{} is not an OCI image layout (no oci-layout file)", dir.display()),
                Files::Archive { path, .. } => {
                    bail!("{} is not an OCI archive (no oci-layout file in it)", path.display())
                }
            }
        }
        let index_raw = self
            .files
            .read("index.json", MAX_METADATA_SIZE)
            .await
            .with_context(|| format!("reading {}", self.files.describe("index.json")))?;
        let top = self.pick_from_top_index(&index_raw)?;
        let raw = self.fetch_blob_bytes(&top).await?;
        if !is_index(&raw)? {
            return Ok((top.clone(), top, raw));
        }
        let chosen = select_from_index(&raw)?;
        let raw = self.fetch_blob_bytes(&chosen).await?;
        if is_index(&raw)? {
            bail!("the image index points to another index ({chosen}); nested indexes are not supported");
        }
        Ok((top, chosen, raw))
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
        let index: Index =
            serde_json::from_slice(raw).with_context(|| format!("parsing {}", self.files.describe("index.json")))?;
        let names: Vec<_> = index.manifests.iter().filter_map(|m| m.annotations.get(REF_NAME).cloned()).collect();
        let place = self.files.path().display();
        let entry = match &self.tag {
            Some(tag) => index
                .manifests
                .iter()
                .find(|m| m.annotations.get(REF_NAME) == Some(tag))
                .with_context(|| format!("no image tagged '{tag}' in {place} (tags: {})", names.join(", ")))?,
            None => match index.manifests.as_slice() {
                [only] => only,
                [] => bail!("{} holds no image", self.what()),
                _ => bail!(
                    "{} holds several images; name one with {}:TAG (tags: {})",
                    self.what(),
                    match self.files {
                        Files::Dir(_) => "oci:DIR",
                        Files::Archive { .. } => "oci-archive:PATH",
                    },
                    names.join(", ")
                ),
            },
        };
        Digest::parse(&entry.digest)
    }
}
