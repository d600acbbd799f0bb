//! Taking an image from another store on this machine instead of fetching it: the OS image's
//! store under `/usr`, for an image the host installs that its OS image already has. Objects are
//! hard-linked where the filesystem allows (the same filesystem, the same owner) and copied where
//! not, so they are stored once yet the host's store never depends on the other one: a new OS
//! image that drops them leaves the host's copies (the same inodes) in place.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::image::ImageManifest;
use ostree::gio;

use super::{image_ref, layer_ref, Store, StoredImage};
use crate::digest::Digest;

impl Store {
    /// Imports `reference` with its layers from `source`, if `source` has it whole; `None` if not.
    /// Every ref is written in one transaction, once every object is in.
    pub fn copy_image_from(&self, source: &Store, reference: &str) -> Result<Option<StoredImage>> {
        let Some(image) = source.image(reference)? else { return Ok(None) };
        let manifest: ImageManifest = serde_json::from_slice(&image.manifest_raw)
            .with_context(|| format!("reading the stored manifest of {reference} in {}", source.path.display()))?;
        let mut layers = Vec::new();
        for layer in manifest.layers() {
            let digest = Digest::parse(layer.digest().as_ref())?;
            let Some(commit) = source.layer_commit(&digest)? else { return Ok(None) };
            layers.push((digest, commit));
        }
        let repo = &self.repo;
        repo.prepare_transaction(gio::Cancellable::NONE).context("starting an OSTree transaction")?;
        let copied = (|| -> Result<()> {
            let commits = layers.iter().map(|(_, commit)| commit.as_str()).chain([image.commit.as_str()]);
            for commit in commits {
                let objects = source
                    .repo
                    .traverse_commit(commit, 0, gio::Cancellable::NONE)
                    .with_context(|| format!("listing the objects of commit {commit} in {}", source.path.display()))?;
                for object in objects {
                    repo.import_object_from_with_trust(
                        &source.repo,
                        object.object_type(),
                        object.checksum(),
                        true,
                        gio::Cancellable::NONE,
                    )
                    .with_context(|| {
                        format!("importing object {} from {}", object.checksum(), source.path.display())
                    })?;
                }
            }
            for (digest, commit) in &layers {
                repo.transaction_set_ref(None, &layer_ref(digest), Some(commit));
            }
            repo.transaction_set_ref(None, &image_ref(reference), Some(&image.commit));
            repo.commit_transaction(gio::Cancellable::NONE).context("committing the image refs")?;
            Ok(())
        })();
        if let Err(err) = copied {
            let _ = repo.abort_transaction(gio::Cancellable::NONE);
            return Err(err.context(format!("taking {reference} from {}", source.path.display())));
        }
        self.image(reference)
    }

    /// Makes every file object this store shares with `other` (the same checksum, hence the same
    /// content, mode, owner and xattrs) one file: this store's copy is replaced by a hard link to
    /// `other`'s, where the filesystem allows (a rename over it, so a reader sees one or the
    /// other). For images fetched on a host whose OS image holds some of their files. Returns how
    /// many objects, and how many bytes, are now shared that were not.
    pub fn share_objects_with(&self, other: &Store) -> Result<(u64, u64)> {
        let (ours, theirs) = (self.path.join("objects"), other.path.join("objects"));
        let (mut objects, mut bytes) = (0, 0);
        for prefix in read_dir_names(&ours)? {
            let (dir, other_dir) = (ours.join(&prefix), theirs.join(&prefix));
            if !other_dir.is_dir() {
                continue;
            }
            for name in read_dir_names(&dir)? {
                if !name.ends_with(".file") {
                    continue;
                }
                let (ours, theirs) = (dir.join(&name), other_dir.join(&name));
                let (Ok(mine), Ok(other)) = (std::fs::symlink_metadata(&ours), std::fs::symlink_metadata(&theirs))
                else {
                    continue;
                };
                if !mine.is_file() || !other.is_file() || mine.ino() == other.ino() {
                    continue;
                }
                if mine.dev() != other.dev() {
                    return Ok((objects, bytes)); // another filesystem: no object can be shared
                }
                let staged = dir.join(format!(".{name}.shared"));
                let _ = std::fs::remove_file(&staged);
                if let Err(e) = std::fs::hard_link(&theirs, &staged) {
                    tracing::debug!("not sharing {}: {e}", ours.display());
                    continue;
                }
                std::fs::rename(&staged, &ours).with_context(|| format!("replacing {}", ours.display()))?;
                objects += 1;
                bytes += mine.len();
            }
        }
        Ok((objects, bytes))
    }
}

/// The names in `dir`, none if it does not exist.
fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}
