use anyhow::Result;

use super::update::print_switch;
use crate::deploy::{self, Layout};

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct RollbackOpts {
    /// Name of the installed container.
    pub name: String,
}

pub async fn run(layout: &Layout, opts: &RollbackOpts) -> Result<()> {
    let report = deploy::rollback(layout, &opts.name).await?;
    print_switch(&opts.name, &report, "rolled back");
    Ok(())
}
