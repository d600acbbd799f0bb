use anyhow::Result;

use super::install::short_id;
use super::{print_json, print_table};
use crate::deploy::{self, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct ListOpts {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also list previous deployments (the slots `rollback` would switch to).
    #[arg(long)]
    pub all: bool,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &ListOpts) -> Result<()> {
    // Read-only: what is pending is reported, and left to `sysctr recover`.
    for pending in deploy::pending(layout)? {
        crate::output::note(format!("{} is pending; run `sysctr recover`", pending.describe()));
    }
    let rows = deploy::list(layout, opts.all, systemd).await?;
    if opts.json {
        return print_json("ContainerList", &rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.image.clone(),
                short_id(&r.image_id).to_string(),
                r.state.to_string(),
                r.slot.to_string(),
                r.created.clone(),
                r.runtime.clone(),
                r.origin.as_str().to_string(),
            ]
        })
        .collect();
    print_table(&["NAME", "IMAGE", "IMAGE-ID", "STATE", "SLOT", "CREATED", "RUNTIME", "ORIGIN"], &table);
    Ok(())
}
