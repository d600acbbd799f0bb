use anyhow::Result;

use crate::deploy::{self, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct RecoverOpts {
    /// Drop the pending transactions as they are, undoing nothing (after fixing the host by hand).
    #[arg(long)]
    pub abandon: bool,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &RecoverOpts) -> Result<()> {
    let done = deploy::recover(layout, systemd, opts.abandon).await?;
    if done.is_empty() {
        crate::say!("nothing to recover");
    }
    for line in done {
        crate::say!("{line}");
    }
    Ok(())
}
