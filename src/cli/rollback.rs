use anyhow::Result;

use super::update::print_switch;
use crate::deploy::{self, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct RollbackOpts {
    /// Name of the installed container.
    pub name: String,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &RollbackOpts) -> Result<()> {
    let report = deploy::rollback(layout, &opts.name, systemd).await?;
    print_switch(&opts.name, &report, "rolled back");
    Ok(())
}
