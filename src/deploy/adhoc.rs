//! Looking into images and running them once, outside any service: `mount`, `umount`, `run`.
//!
//! - `mount` shows a container's rootfs, or a checkout of an image, read-only at a directory
//!   (a bind mount remounted read-only); image checkouts live in `STORAGE/mounts/` until `umount`.
//! - `run` gives the container a throw-away writable root: an overlay whose lower layer is a
//!   read-only checkout and whose upper layer is a tmpfs, discarded afterwards, so the store's
//!   files (hard-linked into checkouts) are never written.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount, MsFlags};
use oci_spec::image::ImageConfiguration;
use sha2::{Digest as _, Sha256};

use super::images::stored_image;
use super::install::find_runtime;
use super::layout::Layout;
use super::pull::pull;
use crate::reference::{validate_container_name, ImageRef};
use crate::registry::RegistryOptions;
use crate::spec;
use crate::store::{checkout_image, Store, StoredImage};

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
        mount(None::<&str>, dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
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

/// A one-off run request.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub image: ImageRef,
    /// Replaces the image's Cmd when not empty.
    pub command: Vec<String>,
    pub runtime: Option<PathBuf>,
    pub registry: RegistryOptions,
}

/// Runs the image once in the foreground and returns its exit code; nothing is left behind.
pub async fn run_once(layout: &Layout, request: &RunRequest) -> Result<i32> {
    let runtime = find_runtime(layout, request.runtime.as_deref())?;
    let (work, stored) = {
        let _lock = layout.lock()?;
        let store = Store::open_or_create(&layout.repo())?;
        let stored = match store.image(&request.image.canonical())? {
            Some(image) => image,
            None => pull(&store, &request.image, &request.registry).await?.image,
        };
        let id = format!("sysctr-run-{}", uuid::Uuid::new_v4().simple());
        let work = layout.storage.join("run").join(&id);
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let prepared = prepare_bundle(&store, &stored, request, &work, &id);
        if let Err(err) = prepared {
            cleanup_bundle(&work);
            return Err(err);
        }
        (work, stored)
    };
    let id = work.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let status = Command::new(&runtime)
        .arg("run")
        .arg("--bundle")
        .arg(&work)
        .arg(&id)
        .status()
        .with_context(|| format!("running {} with {}", stored.reference, runtime.display()));
    let _ = Command::new(&runtime).args(["delete", "--force", &id]).output();
    cleanup_bundle(&work);
    let status = status?;
    Ok(status.code().unwrap_or(128 + 9))
}

fn prepare_bundle(store: &Store, image: &StoredImage, request: &RunRequest, work: &Path, id: &str) -> Result<()> {
    let lower = work.join("lower");
    checkout_image(store, &image.commit, &lower)?;
    // The writable layer lives in memory: it is thrown away anyway, and an overlay's upper
    // layer cannot sit on every filesystem the storage may be on (overlayfs, for one).
    let scratch = work.join("scratch");
    for dir in [&scratch, &work.join(spec::ROOTFS)] {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    mount(Some("tmpfs"), &scratch, Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))
        .context("mounting the scratch space of the throw-away root")?;
    for dir in ["upper", "work"] {
        std::fs::create_dir(scratch.join(dir)).with_context(|| format!("creating {}", scratch.join(dir).display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        scratch.join("upper").display(),
        scratch.join("work").display()
    );
    mount(Some("overlay"), &work.join(spec::ROOTFS), Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .context("mounting the throw-away root filesystem")?;

    let config: ImageConfiguration = serde_json::from_slice(&image.config_raw).context("reading the stored image config")?;
    let passwd = std::fs::read_to_string(lower.join("etc/passwd")).ok();
    let group = std::fs::read_to_string(lower.join("etc/group")).ok();
    let generated = spec::generate(
        &config,
        &spec::GenerateInputs { hostname: id, passwd: passwd.as_deref(), group: group.as_deref() },
    );
    let generated = match (generated, request.command.is_empty()) {
        (Ok(text), _) => text,
        // An image with nothing to run can still run a command given here.
        (Err(_), false) => {
            let mut with_cmd = config.clone();
            let mut inner = with_cmd.config().clone().unwrap_or_default();
            inner.set_cmd(Some(request.command.clone()));
            with_cmd.set_config(Some(inner));
            spec::generate(&with_cmd, &spec::GenerateInputs { hostname: id, passwd: passwd.as_deref(), group: group.as_deref() })?
        }
        (Err(err), true) => return Err(err),
    };
    let mut value: serde_json::Value = serde_json::from_str(&generated).context("reading the generated config")?;
    value["root"]["readonly"] = serde_json::Value::Bool(false);
    if !request.command.is_empty() {
        value["process"]["args"] = serde_json::json!(request.command);
    }
    std::fs::write(work.join("config.json"), serde_json::to_string_pretty(&value)?).context("writing config.json")?;
    Ok(())
}

fn cleanup_bundle(work: &Path) {
    let _ = umount(&work.join(spec::ROOTFS));
    let _ = umount(&work.join("scratch"));
    let _ = std::fs::remove_dir_all(work);
}
