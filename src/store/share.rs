//! Taking an image from another store on this machine instead of fetching it: the OS image's
//! store under `/usr`, for an image the host installs that its OS image already has. Objects are
//! hard-linked where the filesystem allows (the same filesystem, the same owner) and copied where
//! not, so they are stored once yet the host's store never depends on the other one: a new OS
//! image that drops them leaves the host's copies (the same inodes) in place.

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
}
