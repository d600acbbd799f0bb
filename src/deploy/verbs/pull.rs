//! registry → store: fetch the manifest and config, stream every missing layer into the store in
//! parallel (a few at a time), then publish all refs at once.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{anyhow, Context, Result};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::deploy::host::layout::Layout;
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{BlobStream, FetchedImage, RegistryOptions, Source};
use crate::signature::Requirements;
use crate::store::{self, Compression, ImageToPublish, LayerToImport, Store, StoredImage};

/// Layers downloaded and imported at once, as skopeo does.
pub const PARALLEL_LAYERS: usize = 6;

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    pub image: store::StoredImage,
    pub layers_fetched: usize,
    pub layers_present: usize,
    /// Special files that were not stored (see the store module).
    pub skipped: Vec<String>,
    /// How each signature the policy requires was met.
    pub signatures: Vec<String>,
}

/// The first of `candidates` (the search registries a short name `input` may be in, when
/// registries.conf's short-name-mode is not enforcing) that has the image and that the policy
/// does not refuse outright. Each is asked for its manifest in turn; if none has it, each
/// failure is said.
pub async fn first_available(
    input: &str,
    mut candidates: Vec<ImageRef>,
    options: &RegistryOptions,
) -> Result<ImageRef> {
    if candidates.len() == 1 {
        return candidates.pop().context("no image");
    }
    let mut failures = Vec::new();
    for candidate in candidates {
        let found = async {
            Requirements::for_image(&candidate, options.signature_policy.as_deref())?;
            Source::new(&candidate, options)?.fetch_image().await
        }
        .await;
        match found {
            Ok(_) => {
                crate::output::note(format!(
                    "short name '{input}' is {candidate} (the first search registry that has it)"
                ));
                return Ok(candidate);
            }
            Err(err) => failures.push(format!("{candidate}: {err:#}")),
        }
    }
    anyhow::bail!("no search registry gave the short name '{input}': {}", failures.join("; "))
}

/// The manifest and config of `image` with the signatures its policy requires checked (how
/// each requirement was met), and the source its layers come from. Nothing is fetched for an
/// image the policy rejects outright, and only the manifest for one whose signatures fail.
pub(in crate::deploy) async fn fetch_checked(
    image: &ImageRef,
    options: &RegistryOptions,
) -> Result<(Source, FetchedImage, Vec<String>)> {
    let requirements = Requirements::for_image(image, options.signature_policy.as_deref())?;
    let source = Source::new(image, options)?;
    let manifest = source.fetch_manifest().await?;
    let digests = [&manifest.named_digest, &manifest.manifest_digest];
    let signatures = requirements.verify(image, &digests, &source, options).await?;
    let fetched = source.fetch_config(manifest).await?;
    Ok((source, fetched, signatures))
}

/// The manifest digest `image`'s source has now, its signatures checked as a pull checks them;
/// no layer is fetched.
pub async fn available_digest(image: &ImageRef, options: &RegistryOptions) -> Result<String> {
    let (_, fetched, _) = fetch_checked(image, options).await?;
    Ok(fetched.manifest_digest.to_string())
}

/// Pulls `image` into the store: only layers not already present are downloaded.
pub async fn pull(store: &Store, image: &ImageRef, options: &RegistryOptions) -> Result<Pulled> {
    let (source, fetched, signatures) =
        fetch_checked(image, options).await.with_context(|| format!("pulling {image}"))?;

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
    let progress = options.progress.0.clone();
    if let Some(progress) = &progress {
        progress.begin(&to_import.iter().map(|(_, layer, size)| (layer.digest.clone(), *size)).collect::<Vec<_>>());
    }
    let layers_present = commits.len() - to_import.len();
    let layers_fetched = to_import.len();

    // At most PARALLEL_LAYERS layers at once. On the first failure the others are stopped, and
    // waited for, so that their transactions are aborted before this returns.
    let mut skipped = Vec::new();
    let mut tasks = JoinSet::new();
    let mut pending = to_import.into_iter();
    let mut failure: Option<anyhow::Error> = None;
    let stop = CancellationToken::new();
    let source = std::sync::Arc::new(source);
    loop {
        while failure.is_none() && tasks.len() < PARALLEL_LAYERS {
            let Some((position, layer, size)) = pending.next() else { break };
            let source = source.clone();
            let repo_path: PathBuf = store.path().to_path_buf();
            let stop = stop.clone();
            let limits = options.layer_limits;
            tasks.spawn(async move {
                let stream = tokio::select! {
                    stream = source.blob_stream(&layer.digest, size) => stream?,
                    () = stop.cancelled() => anyhow::bail!("stopped: another layer failed"),
                };
                let bridge = SyncIoBridge::new(StopOnCancel::new(stream, stop));
                let imported =
                    tokio::task::spawn_blocking(move || store::import_layer(&repo_path, bridge, &layer, &limits))
                        .await
                        .map_err(|e| anyhow!("layer import task failed: {e}"))??;
                Ok::<_, anyhow::Error>((position, imported))
            });
        }
        let Some(joined) = tasks.join_next().await else { break };
        match joined.map_err(|e| anyhow!("layer task failed: {e}")).and_then(|result| result) {
            Ok((position, imported)) => {
                if let (Some(progress), Some(layer)) = (&progress, layers.get(position)) {
                    progress.finished(&Digest::parse(layer.digest().as_ref())?);
                }
                tracing::info!(layer = %layers.get(position).map(|l| l.digest().to_string()).unwrap_or_default(), "layer imported");
                skipped.extend(imported.skipped);
                commits[position] = Some(imported.commit);
            }
            Err(err) => {
                if failure.is_none() {
                    stop.cancel();
                    failure = Some(err);
                }
            }
        }
    }
    if let Some(progress) = &progress {
        progress.end();
    }
    if let Some(err) = failure {
        return Err(err).with_context(|| format!("pulling {image}"));
    }

    let mut layer_refs = Vec::new();
    for (descriptor, commit) in layers.iter().zip(commits) {
        let digest = Digest::parse(descriptor.digest().as_ref())?;
        let commit = commit.ok_or_else(|| anyhow!("layer {digest} was not imported"))?;
        layer_refs.push((digest, commit));
    }
    let reference = image.canonical();
    if layers_fetched == 0 {
        if let Some(stored) = store.image(&reference)? {
            if stored.manifest_digest == fetched.manifest_digest.to_string() {
                // Recorded as it is already: no transaction, which would rewrite the refs and
                // sync every object directory of the repository.
                return Ok(Pulled { image: stored, layers_fetched, layers_present, skipped, signatures });
            }
        }
    }
    // Flattening reads every layer's tree: blocking work, kept off the async workers.
    let repo_path = store.path().to_path_buf();
    let to_publish = (reference.clone(), fetched.manifest_digest.to_string(), fetched.manifest_raw, fetched.config_raw);
    let commit = tokio::task::spawn_blocking(move || {
        let (reference, manifest_digest, manifest_raw, config_raw) = to_publish;
        let image = ImageToPublish {
            reference: &reference,
            manifest_digest: &manifest_digest,
            manifest_raw: &manifest_raw,
            config_raw: &config_raw,
        };
        Store::open(&repo_path)?.publish(&image, &layer_refs)
    })
    .await
    .map_err(|e| anyhow!("publishing task failed: {e}"))?
    .with_context(|| format!("recording {image} in the store"))?;
    let image = store
        .image(&reference)?
        .ok_or_else(|| anyhow!("image commit {commit} for {reference} vanished right after it was written"))?;
    Ok(Pulled { image, layers_fetched, layers_present, skipped, signatures })
}

/// A layer stream that fails as soon as the pull is stopped, even while it waits for the network.
struct StopOnCancel {
    inner: BlobStream,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl StopOnCancel {
    fn new(inner: BlobStream, stop: CancellationToken) -> Self {
        StopOnCancel { inner, stopped: Box::pin(stop.cancelled_owned()), done: false }
    }
}

impl AsyncRead for StopOnCancel {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.done || this.stopped.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Err(io::Error::other("stopped: another layer failed")));
        }
        this.inner.as_mut().poll_read(cx, buf)
    }
}

/// `image` taken from the store of the OS image this host runs, when that has it, rather than
/// fetched: no network, and its objects stored once (see `Store::copy_image_from`).
pub(in crate::deploy) fn from_the_os_image(
    layout: &Layout,
    store: &Store,
    image: &ImageRef,
) -> Result<Option<StoredImage>> {
    let Some(os_image) = layout.image_layout() else { return Ok(None) };
    if !os_image.repo().join("config").exists() {
        return Ok(None);
    }
    let source = Store::open(&os_image.repo())?;
    store.copy_image_from(&source, &image.canonical())
}

/// After a fetch on a host whose OS image has a store: the files the fetched image has in common
/// with the OS image's are made one (see `Store::share_objects_with`).
pub fn share_with_the_os_image(layout: &Layout, store: &Store) -> Result<()> {
    let Some(os_image) = layout.image_layout() else { return Ok(()) };
    if !os_image.repo().join("config").exists() {
        return Ok(());
    }
    let (objects, bytes) = store.share_objects_with(&Store::open(&os_image.repo())?)?;
    if objects > 0 {
        tracing::info!(objects, bytes, "objects shared with the OS image's store");
    }
    Ok(())
}
