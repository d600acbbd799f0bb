use anyhow::Result;

use crate::deploy::{self, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct UninstallOpts {
    /// Name of the installed container.
    pub name: String,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &UninstallOpts) -> Result<()> {
    let report = deploy::uninstall(layout, &opts.name, systemd).await?;
    for note in &report.notes {
        crate::output::note(note);
    }
    crate::say!("uninstalled {}", opts.name);
    Ok(())
}
