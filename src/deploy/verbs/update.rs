//! `update` and `rollback`: move a container to the deployment in its other slot, stopping and
//! restarting the service around the switch. A failure at any step puts the previous slot back,
//! and an update whose service does not come back up is rolled back unless asked not to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::install::with_undo_problems;
use super::pull::{pull, share_with_the_os_image};
use super::recovery::lock_and_recover;
use crate::deploy::deployment::activate::activate;
use crate::deploy::deployment::readiness::ReadySettings;
use crate::deploy::deployment::slot::{build_slot, SlotRequest};
use crate::deploy::deployment::socket::Listen;
use crate::deploy::host::layout::{Deployment, FailedUpdate, Layout};
use crate::deploy::journal::Journal;
use crate::reference::{validate_container_name, ImageRef};
use crate::registry::RegistryOptions;
use crate::store::Store;
use crate::systemd::{MissingUnit, ServiceManager, UnitState};

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
    /// New listen addresses (`apply`); `None` keeps those given at install.
    pub listen: Option<Listen>,
    /// New readiness settings (`apply`); `None` keeps those given at install.
    pub ready: Option<ReadySettings>,
    /// Roll back unless the units that require the service, and ran, are ready again too.
    pub ready_dependents: bool,
}

/// What an update or rollback did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per command
pub enum SwitchReport {
    UpToDate,
    Switched { from: Deployment, to: Deployment, notes: Vec<String>, missing_units: Vec<MissingUnit> },
}

/// What `update --check` found for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateCheck {
    pub name: String,
    pub image: String,
    pub installed: String,
    /// The manifest digest the image's source gives now.
    pub available: String,
}

/// What the image sources answered during one command, by image reference: the manifest
/// digest, or why there is none. Containers of the same image cost one request to its source,
/// and an unreachable source one timeout (`update --all --check`).
#[derive(Debug, Default)]
pub struct SourceDigests(std::collections::HashMap<String, Result<String, String>>);

/// Asks the installed image's source for its manifest digest now, unless `seen` already holds
/// its answer; changes nothing.
pub async fn check_update(
    layout: &Layout,
    name: &str,
    registry: &RegistryOptions,
    seen: &mut SourceDigests,
) -> Result<UpdateCheck> {
    validate_container_name(name)?;
    layout.refuse_image_owned(name, "update")?;
    let current = layout.read_info(name)?;
    let image = ImageRef::parse(&current.image).context("reading the installed image reference")?;
    let answer = match seen.0.get(&image.canonical()) {
        Some(answer) => answer.clone(),
        None => {
            let answer = super::pull::available_digest(&image, registry)
                .await
                .map_err(|err| format!("{:#}", err.context(format!("checking {image} for a newer image"))));
            seen.0.insert(image.canonical(), answer.clone());
            answer
        }
    };
    let available = answer.map_err(anyhow::Error::msg)?;
    Ok(UpdateCheck { name: name.to_string(), image: current.image, installed: current.manifest_digest, available })
}

#[tracing::instrument(name = "update", skip_all, fields(container = %request.name))]
pub async fn update(layout: &Layout, request: &UpdateRequest, systemd: &impl ServiceManager) -> Result<SwitchReport> {
    validate_container_name(&request.name)?;
    layout.refuse_image_owned(&request.name, "update")?;
    tracing::info!(image = %request.rebase.as_ref().map_or_else(|| "the installed one".to_string(), ToString::to_string), "updating");
    let (_lock, recovered) = lock_and_recover(layout, systemd, Some(&request.name)).await?;
    let current = layout.read_info(&request.name)?;
    let store = Store::open(&layout.repo())?;
    let image_ref = match &request.rebase {
        Some(image) => image.clone(),
        None => ImageRef::parse(&current.image).context("reading the installed image reference")?,
    };
    let image = if request.pull {
        let pulled = pull(&store, &image_ref, &request.registry).await?.image;
        share_with_the_os_image(layout, &store)?;
        pulled
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
    let listen = request.listen.clone().unwrap_or_else(|| current.listen.clone());
    let ready = request.ready.clone().unwrap_or_else(|| current.ready_settings.clone());
    if image.commit == current.ostree_commit
        && values == current.values
        && listen == current.listen
        && ready == current.ready_settings
    {
        tracing::info!(image = %current.image, "already up to date");
        return Ok(SwitchReport::UpToDate);
    }

    let runtime = PathBuf::from(&current.runtime);
    let slot_request = SlotRequest {
        name: &request.name,
        slot: 1 - current.slot,
        image: &image,
        runtime: &runtime,
        user_values: &values,
        listen: &listen,
        ready: &ready,
        uuid: &current.uuid,
        target: systemd.target(),
    };
    let mut journal = Journal::begin(&layout.transaction_dir(), &layout.root, "update", &request.name)?;
    let mut started = false;
    let outcome = async {
        let (mut next, slot_notes) = build_slot(layout, &store, &slot_request, &mut journal)?;
        next.shadowed_vendor_unit_enabled = current.shadowed_vendor_unit_enabled;
        next.auto_update = current.auto_update;
        let dependents = Dependents { required: request.ready_dependents };
        let (to, notes) = switch(layout, &current, next, systemd, &mut journal, &mut started, dependents).await?;
        Ok::<_, anyhow::Error>((to, [slot_notes.notes, notes].concat(), slot_notes.missing_units))
    }
    .await;
    match outcome {
        Ok((to, notes, missing_units)) => {
            journal.commit()?;
            // An OS image carries no rollback of its own containers: the OS image's is theirs.
            if layout.os_image {
                let previous = layout.slot_dir(&current);
                std::fs::remove_dir_all(&previous)
                    .with_context(|| format!("removing the previous deployment {}", previous.display()))?;
            }
            tracing::info!(from = %current.image_id, to = %to.image_id, slot = to.slot, "updated");
            Ok(SwitchReport::Switched { from: current, to, notes: [recovered, notes].concat(), missing_units })
        }
        // Only a service that failed to come up keeps the new deployment: a failure inside the
        // switch itself is always undone.
        Err(err) if started && !request.rollback_on_failure => {
            journal.commit()?;
            Err(err
                .context(format!("the update of {} failed; left on the new deployment (--no-rollback)", request.name)))
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "update failed; rolling back");
            let problems = journal.undo(systemd).await;
            if started && problems.is_empty() {
                remember_failure(layout, &current, &image.reference, &err);
            }
            let err = err.context(format!(
                "the update of {} failed; rolled back to {} (slot {})",
                request.name, current.image, current.slot
            ));
            Err(with_undo_problems(err, problems))
        }
    }
}

/// Keeps why an update away from `current` was rolled back in its record, for `status`; a
/// record that cannot be written is said, and changes nothing else.
fn remember_failure(layout: &Layout, current: &Deployment, image: &str, err: &anyhow::Error) {
    let failed = FailedUpdate {
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        image: image.to_owned(),
        reason: format!("{err:#}"),
    };
    let record = Deployment { failed_update: Some(failed), ..current.clone() };
    if let Err(err) = record.write(&layout.slot_dir(current)) {
        crate::output::warning(format!("keeping why the update failed for `sysctr status`: {err:#}"));
    }
}

pub async fn rollback(layout: &Layout, name: &str, systemd: &impl ServiceManager) -> Result<SwitchReport> {
    validate_container_name(name)?;
    layout.refuse_image_owned(name, "roll back")?;
    let (_lock, recovered) = lock_and_recover(layout, systemd, Some(name)).await?;
    let current = layout.read_info(name)?;
    let previous = layout
        .read_slot_info(name, 1 - current.slot)
        .with_context(|| format!("{name} has no previous deployment to roll back to"))?;
    let mut journal = Journal::begin(&layout.transaction_dir(), &layout.root, "rollback", name)?;
    match switch(layout, &current, previous, systemd, &mut journal, &mut false, Dependents { required: false }).await {
        Ok((to, notes)) => {
            journal.commit()?;
            Ok(SwitchReport::Switched {
                from: current,
                to,
                notes: [recovered, notes].concat(),
                missing_units: Vec::new(),
            })
        }
        Err(err) => {
            let problems = journal.undo(systemd).await;
            Err(with_undo_problems(err.context(format!("rolling back {name} failed; nothing changed")), problems))
        }
    }
}

/// What a switch does with the units that require the service (`Requires=`, `BindsTo=`), which
/// stopping it stops.
#[derive(Debug, Clone, Copy)]
struct Dependents {
    /// Fail (and roll back) unless those that ran are ready again; otherwise a note says which
    /// did not come back.
    required: bool,
}

/// Stops the socket and the service if they run, activates `to` in place of `from`, starts its
/// socket, and starts the service again if it was running (or if its socket was and `to` has
/// none), checking that it stays up, then the units that require it and ran, as `systemctl
/// restart` would. `started` is set once the switch is complete and only the starts remain.
async fn switch(
    layout: &Layout,
    from: &Deployment,
    mut to: Deployment,
    systemd: &impl ServiceManager,
    journal: &mut Journal,
    started: &mut bool,
    dependents: Dependents,
) -> Result<(Deployment, Vec<String>)> {
    if !to.has_service && from.has_service {
        bail!("{} ships no service while the installed deployment does; uninstall it instead", to.image);
    }
    let (unit, socket) = (Layout::unit_name(&to.name), Layout::socket_name(&to.name));
    let runs_units = systemd.target().runs_units();
    // The old socket stops first, so that no connection starts the service during the switch.
    let socket_was_active = from.has_socket && runs_units && systemd.state(&socket).await? == UnitState::Active;
    if socket_was_active {
        journal.stopped(&socket)?;
        systemd.stop(&socket).await?;
    }
    let was_active = from.has_service && runs_units && systemd.state(&unit).await? == UnitState::Active;
    // Recorded before the service, so that an undo starts them again after it.
    let mut running_dependents = Vec::new();
    if was_active {
        for dependent in systemd.required_by(&unit).await? {
            if systemd.state(&dependent).await? == UnitState::Active {
                journal.stopped(&dependent)?;
                running_dependents.push(dependent);
            }
        }
        journal.stopped(&unit)?;
        systemd.stop(&unit).await?;
    }
    let mut notes = activate(layout, Some(from), &mut to, systemd, journal).await?;
    if to.has_socket && runs_units {
        journal.started(&socket)?;
        systemd.start(&socket).await?;
    }
    // A service its old socket started on demand, and that has no socket now, runs from now on.
    if to.has_service && (was_active || (socket_was_active && !to.has_socket)) {
        *started = true;
        journal.started(&unit)?;
        systemd.start(&unit).await?;
        systemd.ensure_stays_active(&unit).await?;
    }
    for dependent in running_dependents {
        if systemd.state(&dependent).await? == UnitState::Active {
            continue;
        }
        journal.started(&dependent)?;
        match systemd.start(&dependent).await {
            Ok(()) => {}
            Err(err) if dependents.required => {
                return Err(
                    err.context(format!("{dependent}, which requires {unit}, is not ready again (--ready-dependents)"))
                );
            }
            Err(err) => notes.push(format!("{dependent}, which requires {unit}, did not start again: {err:#}")),
        }
    }
    Ok((to, notes))
}
