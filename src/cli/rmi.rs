use anyhow::Result;

use crate::deploy::{self, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct RmiOpts {
    /// An image in the store.
    pub image: String,
    /// Remove it even if a container uses it (its deployment keeps its own checkout).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &RmiOpts) -> Result<()> {
    let image = super::image_arg(&opts.image)?;
    deploy::rmi(layout, &image, opts.force, systemd).await?;
    crate::say!("removed {image} (run `sysctr prune` to free its space)");
    Ok(())
}
