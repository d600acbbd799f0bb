use anyhow::Result;

use crate::deploy::{self, Layout};

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct UninstallOpts {
    /// Name of the installed container.
    pub name: String,
}

pub async fn run(layout: &Layout, opts: &UninstallOpts) -> Result<()> {
    let report = deploy::uninstall(layout, &opts.name).await?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    println!("uninstalled {}", opts.name);
    Ok(())
}
