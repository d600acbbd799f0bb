use anyhow::Result;

use super::images::human_size;
use crate::deploy::{self, Layout};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct PruneOpts {}

pub async fn run(layout: &Layout, systemd: &HostManager, _opts: &PruneOpts) -> Result<()> {
    let report = deploy::prune(layout, systemd).await?;
    for slot in &report.slots {
        crate::say!("removed orphaned deployment {slot}");
    }
    crate::say!(
        "removed {} unused layers and {} objects, freed {}",
        report.store.layers,
        report.store.objects,
        human_size(report.store.bytes)
    );
    Ok(())
}
