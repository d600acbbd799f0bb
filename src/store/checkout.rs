//! Union checkout of an image's layers into a directory that must not exist yet.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::gio;

use super::Store;

/// Checks out `layer_commits` (in manifest order, lowest first) on top of each other into `dest`,
/// as hard links into the repository. libostree applies the OCI whiteout rules per layer:
/// `.wh.NAME` removes NAME from the layers below, `.wh..wh..opq` empties the directory of
/// lower-layer content, and a later entry of another type replaces an earlier one.
///
/// The result shares inodes with the repository: it must only ever be mounted read-only.
pub fn checkout_layers(store: &Store, layer_commits: &[String], dest: &Path) -> Result<()> {
    if dest.exists() {
        bail!("checkout destination {} already exists", dest.display());
    }
    let options = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::None,
        overwrite_mode: ostree::RepoCheckoutOverwriteMode::UnionFiles,
        process_whiteouts: true,
        no_copy_fallback: true,
        ..Default::default()
    };
    for commit in layer_commits {
        store
            .repo
            .checkout_at(Some(&options), libc_at_fdcwd(), dest, commit, gio::Cancellable::NONE)
            .with_context(|| format!("checking out layer commit {commit} into {}", dest.display()))?;
    }
    if layer_commits.is_empty() {
        std::fs::create_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
    }
    Ok(())
}

/// `AT_FDCWD`: paths are taken relative to the current directory (ours are absolute).
fn libc_at_fdcwd() -> i32 {
    nix::libc::AT_FDCWD
}
