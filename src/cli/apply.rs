use std::path::PathBuf;

use anyhow::Result;

use super::RegistryArgs;
use crate::deploy::{self, Action, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct ApplyOpts {
    /// TOML file listing the system containers of this host.
    pub file: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &ApplyOpts) -> Result<()> {
    let (actions, notes) = deploy::apply(layout, &opts.file, &opts.registry.options(), systemd).await?;
    for note in notes {
        eprintln!("note: {note}");
    }
    for action in actions {
        match action {
            Action::Installed(name) => println!("installed {name}"),
            Action::Updated(name) => println!("updated {name}"),
            Action::Unchanged(name) => println!("unchanged {name}"),
        }
    }
    Ok(())
}
