use anyhow::Result;

use super::install::short_id;
use super::{parse_sets, RegistryArgs};
use crate::deploy::{self, Layout, SwitchReport, UpdateRequest};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct UpdateOpts {
    /// Name of the installed container.
    pub name: String,
    /// Set a template variable, KEY=VALUE (repeatable); values set before are kept.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Move the container to another image, keeping its values.
    #[arg(long, value_name = "IMAGE")]
    pub rebase: Option<String>,
    /// Use the image as it is in the store; do not fetch it again.
    #[arg(long)]
    pub no_pull: bool,
    /// Stay on the new deployment even if its service fails to start.
    #[arg(long)]
    pub no_rollback: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &UpdateOpts) -> Result<()> {
    let request = UpdateRequest {
        name: opts.name.clone(),
        values: parse_sets(&opts.set)?,
        replace_values: false,
        rebase: opts.rebase.as_deref().map(|r| opts.registry.image(r)).transpose()?,
        pull: !opts.no_pull,
        rollback_on_failure: !opts.no_rollback,
        registry: opts.registry.options(),
    };
    let report = deploy::update(layout, &request, systemd).await?;
    print_switch(&opts.name, &report, "updated");
    Ok(())
}

pub(super) fn print_switch(name: &str, report: &SwitchReport, verb: &str) {
    match report {
        SwitchReport::UpToDate => println!("{name} is already up to date"),
        SwitchReport::Switched { from, to, notes, missing_units } => {
            for note in notes {
                eprintln!("note: {note}");
            }
            for missing in missing_units {
                eprintln!("note: {missing}");
            }
            println!(
                "{verb} {name}: {} ({}, slot {}) -> {} ({}, slot {})",
                from.image,
                short_id(&from.image_id),
                from.slot,
                to.image,
                short_id(&to.image_id),
                to.slot
            );
        }
    }
}
