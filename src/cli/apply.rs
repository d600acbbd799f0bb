use std::path::PathBuf;

use anyhow::Result;

use super::RegistryArgs;
use crate::deploy::{self, Action, Change, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct ApplyOpts {
    /// TOML file listing the system containers of this host, or a directory whose `*.toml`
    /// files together list them (read in name order).
    pub file: PathBuf,
    /// Say what would be installed, updated, removed or left alone, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also uninstall the containers the file does not list.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &ApplyOpts) -> Result<()> {
    if opts.dry_run {
        for step in deploy::plan(layout, &opts.file, &opts.registry.options(), opts.prune)? {
            let change = match step.change {
                Change::Install => "would install",
                Change::Update => "would update",
                Change::Remove => "would remove",
                Change::Unchanged => "unchanged",
            };
            println!("{change} {}: {}", step.name, step.reason);
        }
        return Ok(());
    }
    let (actions, notes) = deploy::apply(layout, &opts.file, &opts.registry.options(), opts.prune, systemd).await?;
    for note in notes {
        eprintln!("note: {note}");
    }
    for action in actions {
        match action {
            Action::Installed(name) => println!("installed {name}"),
            Action::Updated(name) => println!("updated {name}"),
            Action::Unchanged(name) => println!("unchanged {name}"),
            Action::Removed(name) => println!("removed {name}"),
        }
    }
    Ok(())
}
