//! registry → store: fetch the manifest and config, stream every missing layer into the store in
//! parallel, then publish all refs at once.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{RegistryOptions, Source};
use crate::store::{self, Compression, ImageToPublish, LayerToImport, Store};

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    pub image: store::StoredImage,
    pub layers_fetched: usize,
    pub layers_present: usize,
    /// Special files that were not stored (see the store module).
    pub skipped: Vec<String>,
}

/// Pulls `image` into the store: only layers not already present are downloaded.
pub async fn pull(store: &Store, image: &ImageRef, options: &RegistryOptions) -> Result<Pulled> {
    let source = Source::new(image, options)?;
    let fetched = source.fetch_image().await.with_context(|| format!("pulling {image}"))?;

    let diff_ids = fetched.config.rootfs().diff_ids();
    let layers = fetched.manifest.layers();
    if diff_ids.len() != layers.len() {
        anyhow::bail!(
            "the image {image} is inconsistent: {} layers in the manifest but {} diff_ids in the config",
            layers.len(),
            diff_ids.len()
        );
    }

    let mut to_import = Vec::new();
    let mut commits: Vec<Option<String>> = Vec::new();
    for (descriptor, diff_id) in layers.iter().zip(diff_ids) {
        let layer = LayerToImport {
            digest: Digest::parse(descriptor.digest().as_ref()).context("reading a layer digest")?,
            diff_id: Digest::parse(diff_id).context("reading a layer diff_id")?,
            compression: Compression::from_media_type(descriptor.media_type().as_ref())?,
        };
        let size = descriptor.size();
        let existing = store.layer_commit(&layer.digest)?;
        if existing.is_none() {
            to_import.push((commits.len(), layer.clone(), size));
        }
        commits.push(existing);
    }
    let layers_present = commits.len() - to_import.len();
    let layers_fetched = to_import.len();

    let mut skipped = Vec::new();
    let mut tasks = JoinSet::new();
    let source = std::sync::Arc::new(source);
    for (position, layer, size) in to_import {
        let source = source.clone();
        let repo_path: PathBuf = store.path().to_path_buf();
        tasks.spawn(async move {
            let stream = source.blob_stream(&layer.digest, size).await?;
            let bridge = SyncIoBridge::new(stream);
            let imported = tokio::task::spawn_blocking(move || store::import_layer(&repo_path, bridge, &layer))
                .await
                .map_err(|e| anyhow!("layer import task failed: {e}"))??;
            Ok::<_, anyhow::Error>((position, imported))
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (position, imported) = joined.map_err(|e| anyhow!("layer task failed: {e}"))?.with_context(|| format!("pulling {image}"))?;
        skipped.extend(imported.skipped);
        commits[position] = Some(imported.commit);
    }

    let mut layer_refs = Vec::new();
    for (descriptor, commit) in layers.iter().zip(commits) {
        let digest = Digest::parse(descriptor.digest().as_ref())?;
        let commit = commit.ok_or_else(|| anyhow!("layer {digest} was not imported"))?;
        layer_refs.push((digest, commit));
    }
    let reference = image.canonical();
    let commit = store
        .publish(
            &ImageToPublish {
                reference: &reference,
                manifest_digest: fetched.manifest_digest.as_str(),
                manifest_raw: &fetched.manifest_raw,
                config_raw: &fetched.config_raw,
            },
            &layer_refs,
        )
        .with_context(|| format!("recording {image} in the store"))?;
    let image = store
        .image(&reference)?
        .ok_or_else(|| anyhow!("image commit {commit} for {reference} vanished right after it was written"))?;
    Ok(Pulled { image, layers_fetched, layers_present, skipped })
}
