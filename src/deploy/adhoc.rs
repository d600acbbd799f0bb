//! Looking into images outside any service: `mount` shows a container's rootfs, or a checkout
//! of an image, read-only at a directory (a bind mount remounted read-only, nosuid and nodev);
//! image checkouts live in `STORAGE/mounts/` until `umount`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount, MsFlags};
use sha2::{Digest as _, Sha256};

use super::images::stored_image;
use super::layout::Layout;
use crate::reference::{validate_container_name, ImageRef};
use crate::spec;
use crate::store::{checkout_image, Store};

/// What `mount` shows.
#[derive(Debug, Clone)]
pub enum MountSource {
    Container(String),
    Image(ImageRef),
}

pub fn mount_readonly(layout: &Layout, source: &MountSource, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    let _lock = layout.lock()?;
    let rootfs = match source {
        MountSource::Container(name) => {
            validate_container_name(name)?;
            layout.read_info(name)?;
            layout.link(name).join(spec::ROOTFS)
        }
        MountSource::Image(image) => {
            let store = Store::open(&layout.repo())?;
            let stored = stored_image(&store, image)?;
            let checkout = mount_checkout(layout, dir)?;
            if checkout.exists() {
                bail!("{} already has an image mounted; `sysctr umount` it first", dir.display());
            }
            std::fs::create_dir_all(layout.storage.join("mounts")).context("creating the mounts directory")?;
            checkout_image(&store, &stored.commit, &checkout)?;
            checkout
        }
    };
    let bind = mount(Some(&rootfs), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("bind-mounting {} on {}", rootfs.display(), dir.display()));
    let readonly = bind.and_then(|()| {
        // An image's setuid files and device nodes mean nothing to the user looking at them.
        let flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(None::<&str>, dir, None::<&str>, flags, None::<&str>)
            .with_context(|| format!("making {} read-only", dir.display()))
    });
    if let Err(err) = readonly {
        let _ = umount(dir);
        if let MountSource::Image(_) = source {
            let _ = std::fs::remove_dir_all(&rootfs);
        }
        return Err(err);
    }
    Ok(())
}

pub fn unmount(layout: &Layout, dir: &Path) -> Result<()> {
    let _lock = layout.lock()?;
    umount(dir).with_context(|| format!("unmounting {}", dir.display()))?;
    let checkout = mount_checkout(layout, dir)?;
    if checkout.exists() {
        std::fs::remove_dir_all(&checkout).with_context(|| format!("removing {}", checkout.display()))?;
    }
    Ok(())
}

/// Where the checkout of an image mounted at `dir` lives: named after the mount point.
fn mount_checkout(layout: &Layout, dir: &Path) -> Result<PathBuf> {
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let key = hex::encode(Sha256::digest(dir.as_os_str().as_encoded_bytes()));
    Ok(layout.storage.join("mounts").join(&key[..16]))
}
