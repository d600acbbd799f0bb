//! `update` and `rollback`: move a container to the deployment in its other slot, stopping and
//! restarting the service around the switch. A failure at any step puts the previous slot back,
//! and an update whose service does not come back up is rolled back unless asked not to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::activate::activate;
use super::install::with_undo_problems;
use super::journal::Journal;
use super::layout::{Deployment, Layout};
use super::pull::pull;
use super::recovery::lock_and_recover;
use super::slot::{build_slot, SlotRequest};
use crate::reference::{validate_container_name, ImageRef};
use crate::registry::RegistryOptions;
use crate::store::Store;
use crate::systemd::Systemd;

/// A checked update request.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub name: String,
    /// New `--set` values, merged over those given before.
    pub values: BTreeMap<String, String>,
    /// Use `values` as they are, dropping those given before.
    pub replace_values: bool,
    /// Move to another image, keeping the values.
    pub rebase: Option<ImageRef>,
    /// Fetch the image again first (`false`: use the store as it is).
    pub pull: bool,
    /// Switch back when the service does not come back up.
    pub rollback_on_failure: bool,
    pub registry: RegistryOptions,
}

/// What an update or rollback did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per command
pub enum SwitchReport {
    UpToDate,
    Switched { from: Deployment, to: Deployment, notes: Vec<String> },
}

pub async fn update(layout: &Layout, request: &UpdateRequest) -> Result<SwitchReport> {
    validate_container_name(&request.name)?;
    let (_lock, recovered) = lock_and_recover(layout).await?;
    let current = layout.read_info(&request.name)?;
    let store = Store::open(&layout.repo())?;
    let image_ref = match &request.rebase {
        Some(image) => image.clone(),
        None => ImageRef::parse(&current.image).context("reading the installed image reference")?,
    };
    let image = if request.pull {
        pull(&store, &image_ref, &request.registry).await?.image
    } else {
        store
            .image(&image_ref.canonical())?
            .with_context(|| format!("{image_ref} is not in the store; update without --no-pull"))?
    };
    let values = if request.replace_values {
        request.values.clone()
    } else {
        let mut merged = current.values.clone();
        merged.extend(request.values.clone());
        merged
    };
    if image.commit == current.ostree_commit && values == current.values {
        return Ok(SwitchReport::UpToDate);
    }

    let runtime = PathBuf::from(&current.runtime);
    let slot_request = SlotRequest {
        name: &request.name,
        slot: 1 - current.slot,
        image: &image,
        runtime: &runtime,
        user_values: &values,
        uuid: &current.uuid,
    };
    let mut journal = Journal::begin(&layout.transaction_dir(), &format!("update {}", request.name))?;
    let mut systemd = None;
    let mut switched = false;
    let outcome = async {
        let (mut next, warnings) = build_slot(layout, &store, &slot_request, &mut journal)?;
        next.shadowed_vendor_unit_enabled = current.shadowed_vendor_unit_enabled;
        if (current.has_service || next.has_service) && !layout.is_offline() {
            systemd = Some(Systemd::connect().await?);
        }
        switched = true;
        let (to, notes) = switch(layout, &current, next, systemd.as_ref(), &mut journal).await?;
        Ok::<_, anyhow::Error>((to, [warnings, notes].concat()))
    }
    .await;
    match outcome {
        Ok((to, notes)) => {
            journal.commit()?;
            Ok(SwitchReport::Switched { from: current, to, notes: [recovered, notes].concat() })
        }
        Err(err) if switched && !request.rollback_on_failure => {
            journal.commit()?;
            Err(err.context(format!("the update of {} failed; left on the new deployment (--no-rollback)", request.name)))
        }
        Err(err) => {
            let problems = journal.undo(systemd.as_ref()).await;
            let err = err.context(format!(
                "the update of {} failed; rolled back to {} (slot {})",
                request.name, current.image, current.slot
            ));
            Err(with_undo_problems(err, problems))
        }
    }
}

pub async fn rollback(layout: &Layout, name: &str) -> Result<SwitchReport> {
    validate_container_name(name)?;
    let (_lock, recovered) = lock_and_recover(layout).await?;
    let current = layout.read_info(name)?;
    let previous = layout
        .read_slot_info(name, 1 - current.slot)
        .with_context(|| format!("{name} has no previous deployment to roll back to"))?;
    let systemd = if (current.has_service || previous.has_service) && !layout.is_offline() {
        Some(Systemd::connect().await?)
    } else {
        None
    };
    let mut journal = Journal::begin(&layout.transaction_dir(), &format!("rollback {name}"))?;
    match switch(layout, &current, previous, systemd.as_ref(), &mut journal).await {
        Ok((to, notes)) => {
            journal.commit()?;
            Ok(SwitchReport::Switched { from: current, to, notes: [recovered, notes].concat() })
        }
        Err(err) => {
            let problems = journal.undo(systemd.as_ref()).await;
            Err(with_undo_problems(err.context(format!("rolling back {name} failed; nothing changed")), problems))
        }
    }
}

/// Stops the service if it runs, activates `to` in place of `from`, and starts the service again
/// if it was running, checking that it stays up.
async fn switch(
    layout: &Layout,
    from: &Deployment,
    mut to: Deployment,
    systemd: Option<&Systemd>,
    journal: &mut Journal,
) -> Result<(Deployment, Vec<String>)> {
    if !to.has_service && from.has_service {
        bail!("{} ships no service while the installed deployment does; uninstall it instead", to.image);
    }
    let unit = Layout::unit_name(&to.name);
    let was_active = match (systemd, from.has_service) {
        (Some(s), true) => s.active_state(&unit).await? == "active",
        _ => false,
    };
    if let (true, Some(s)) = (was_active, systemd) {
        journal.stopped(&unit)?;
        s.stop(&unit).await?;
    }
    let notes = activate(layout, Some(from), &mut to, systemd, journal).await?;
    if let (Some(s), true) = (systemd, to.has_service) {
        s.enable(&[unit.as_str()]).await?;
        if was_active {
            journal.started(&unit)?;
            s.start(&unit).await?;
            s.ensure_stays_active(&unit).await?;
        }
    }
    Ok((to, notes))
}
