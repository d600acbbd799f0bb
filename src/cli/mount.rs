use std::path::PathBuf;

use anyhow::Result;

use crate::deploy::{self, Layout, MountSource};
use crate::reference::validate_container_name;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct MountOpts {
    /// An installed container's name, or an image in the store.
    pub what: String,
    /// An existing directory to show it at, read-only.
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct UmountOpts {
    /// A directory given to `sysctr mount`.
    pub dir: PathBuf,
}

pub fn run(layout: &Layout, opts: &MountOpts) -> Result<()> {
    // A name of an installed container wins over an image reference that looks the same.
    let source = if validate_container_name(&opts.what).is_ok() && layout.link(&opts.what).exists() {
        MountSource::Container(opts.what.clone())
    } else {
        MountSource::Image(super::image_arg(&opts.what)?)
    };
    deploy::mount_readonly(layout, &source, &opts.dir)?;
    crate::say!("mounted {} read-only on {}", opts.what, opts.dir.display());
    Ok(())
}

pub fn run_umount(layout: &Layout, opts: &UmountOpts) -> Result<()> {
    deploy::unmount(layout, &opts.dir)?;
    crate::say!("unmounted {}", opts.dir.display());
    Ok(())
}
