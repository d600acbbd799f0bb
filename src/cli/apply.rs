use std::path::PathBuf;

use anyhow::Result;

use super::RegistryArgs;
use crate::deploy::{self, Action, Layout};

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct ApplyOpts {
    /// TOML file listing the system containers of this host.
    pub file: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(layout: &Layout, opts: &ApplyOpts) -> Result<()> {
    for action in deploy::apply(layout, &opts.file, &opts.registry.options()).await? {
        match action {
            Action::Installed(name) => println!("installed {name}"),
            Action::Updated(name) => println!("updated {name}"),
            Action::Unchanged(name) => println!("unchanged {name}"),
        }
    }
    Ok(())
}
