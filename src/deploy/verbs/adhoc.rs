//! Looking into images outside any service: `mount` shows a container's rootfs, or a checkout
//! of an image, read-only at a directory; image checkouts live in `STORAGE/mounts/` until
//! `umount`.
//!
//! The view is made with the mount API: a detached copy of the rootfs's mount
//! (`open_tree(OPEN_TREE_CLONE)`), made read-only, nosuid and nodev while still detached
//! (`mount_setattr`), then attached at the directory (`move_mount`). It is never reachable
//! writable, or with the image's setuid files and device nodes honoured.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::umount;
use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use sha2::{Digest as _, Sha256};

use super::images::stored_image;
use crate::deploy::host::layout::Layout;
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
            std::fs::create_dir_all(layout.state.join("mounts")).context("creating the mounts directory")?;
            checkout_image(&store, &stored.commit, &checkout)?;
            checkout
        }
    };
    if let Err(err) = attach_readonly_view(&rootfs, dir) {
        if let MountSource::Image(_) = source {
            let _ = std::fs::remove_dir_all(&rootfs);
        }
        return Err(err);
    }
    Ok(())
}

/// Attaches a read-only, nosuid, nodev view of the directory `source` at `target` (not
/// recursive: mounts beneath `source` are not part of it).
fn attach_readonly_view(source: &Path, target: &Path) -> Result<()> {
    let tree = rustix::mount::open_tree(CWD, source, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
        .with_context(|| format!("copying the mount of {}", source.display()))?;
    // An image's setuid files and device nodes mean nothing to the user looking at them.
    set_readonly_nosuid_nodev(&tree)
        .with_context(|| format!("making the view of {} read-only, nosuid and nodev", source.display()))?;
    rustix::mount::move_mount(&tree, "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .with_context(|| format!("mounting the view of {} on {}", source.display(), target.display()))
}

/// `mount_setattr(2)` on the detached mount `tree` (an `open_tree` fd): read-only, nosuid,
/// nodev. rustix has no wrapper for this system call, hence this `unsafe`.
#[allow(unsafe_code)]
fn set_readonly_nosuid_nodev(tree: &OwnedFd) -> Result<()> {
    use nix::libc;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the arguments are those mount_setattr(2) takes: an open file descriptor, a
    // NUL-terminated (empty) path with AT_EMPTY_PATH so that the descriptor itself is meant, and
    // a pointer to a `mount_attr` with its size; both stay alive across the call, which only
    // reads them.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error()).context("mount_setattr");
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
    Ok(layout.state.join("mounts").join(&key[..16]))
}
