//! Checkout of an image into a directory that must not exist yet.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::gio;

use super::Store;
use crate::rooted::{Resolve, RootedDir};

/// Checks out an image commit (the flattened layers) into `dest`, which must not exist yet, as
/// hard links into the repository, then creates the image's FIFOs.
///
/// The result shares inodes with the repository: it must only ever be mounted read-only.
pub fn checkout_image(store: &Store, image_commit: &str, dest: &Path) -> Result<()> {
    if dest.exists() {
        bail!("checkout destination {} already exists", dest.display());
    }
    let options = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::None,
        no_copy_fallback: true,
        ..Default::default()
    };
    store
        .repo
        .checkout_at(Some(&options), libc_at_fdcwd(), dest, image_commit, gio::Cancellable::NONE)
        .with_context(|| format!("checking out image commit {image_commit} into {}", dest.display()))?;
    let meta = super::commit_metadata(&store.repo, image_commit)?;
    let fifos = super::FifoRecord::read_all(&meta);
    if fifos.is_empty() {
        return Ok(());
    }
    // The image chose every name in the checkout, its symlinks included: FIFOs are created
    // beneath the checkout's handle, through no symlink at all.
    let tree = RootedDir::open(dest, Resolve::NoSymlinks)?;
    for fifo in fifos {
        tree.create_fifo(Path::new(&fifo.path), fifo.mode, fifo.uid, fifo.gid)
            .with_context(|| format!("creating the image's FIFO /{}", fifo.path))?;
    }
    Ok(())
}

/// `AT_FDCWD`: paths are taken relative to the current directory (ours are absolute).
fn libc_at_fdcwd() -> i32 {
    nix::libc::AT_FDCWD
}
