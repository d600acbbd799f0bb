//! `install`: image → new deployment slot → rendered files on the host → systemd.
//!
//! Order matters: everything is rendered and validated inside a staging directory before the
//! host is touched; then each change is journaled before it is made, and the `NAME` symlink,
//! renamed into place, comes last. Any failure, including the first start with `--now`,
//! undoes the journal so the host is left as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::pull::{from_the_os_image, pull, share_with_the_os_image};
use super::recovery::lock_and_recover;
use super::run::{run_once, RunRequest};
use crate::deploy::deployment::activate::activate;
use crate::deploy::deployment::readiness::ReadySettings;
use crate::deploy::deployment::slot::{build_slot, runs_once, SlotRequest};
use crate::deploy::deployment::socket::Listen;
use crate::deploy::host::facts::{find_runtime, vendor_tmpfiles, vendor_unit};
use crate::deploy::host::layout::{Deployment, Layout};
use crate::deploy::host::reproducible::image_container_uuid;
use crate::deploy::journal::Journal;
use crate::reference::{validate_container_name, ImageRef};
use crate::registry::RegistryOptions;
use crate::store::Store;
use crate::systemd::{MissingUnit, ServiceManager};

/// A checked install request, as the CLI hands it over.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub image: ImageRef,
    pub name: Option<String>,
    pub values: BTreeMap<String, String>,
    pub runtime: Option<PathBuf>,
    pub start_now: bool,
    /// With `start_now`: return once systemd has queued the start job, without waiting for its
    /// result (`--no-block`).
    pub no_block: bool,
    pub registry: RegistryOptions,
    /// Install even though the system's packages ship a unit of the same name, shadowing it.
    pub replace_vendor_unit: bool,
    /// Let `update --all` update it.
    pub auto_update: bool,
    /// What systemd listens on, starting the service at the first connection (`--listen`).
    pub listen: Listen,
    /// When it counts as ready, over what the image says (`--ready`, `--health-cmd`, …).
    pub ready: ReadySettings,
}

/// What `install` did: installed a service, or ran an image that only runs once.
#[derive(Debug)]
pub enum InstallOutcome {
    Installed(Box<InstallReport>),
    /// The image is labelled `atomic.run=once`: it ran in the foreground and left nothing
    /// behind, as with `atomic install`. The container's exit code.
    RanOnce(i32),
}

/// What an install did, for the user.
#[derive(Debug)]
pub struct InstallReport {
    pub name: String,
    pub deployment: Deployment,
    pub notes: Vec<String>,
    /// Dependencies of the new unit on units this host does not have.
    pub missing_units: Vec<MissingUnit>,
}

#[tracing::instrument(name = "install", skip_all, fields(container = tracing::field::Empty))]
pub async fn install(
    layout: &Layout,
    request: &InstallRequest,
    systemd: &impl ServiceManager,
) -> Result<InstallOutcome> {
    let name = request.name.clone().unwrap_or_else(|| request.image.default_container_name());
    validate_container_name(&name)?;
    tracing::Span::current().record("container", name.as_str());
    tracing::info!(image = %request.image, "installing");
    let (lock, mut notes) = lock_and_recover(layout, systemd, Some(&name)).await?;
    refuse_existing(layout, &name, request.replace_vendor_unit)?;
    let runtime = find_runtime(layout, request.runtime.as_deref())?;
    if request.start_now && !systemd.target().runs_units() {
        bail!("--now cannot start anything in an offline root ({})", layout.root.display());
    }

    let store = Store::open_or_create(&layout.repo())?;
    let stored = match store.image(&request.image.canonical())? {
        Some(image) => Some(image),
        None => from_the_os_image(layout, &store, &request.image)?,
    };
    let image = match stored {
        Some(image) => image,
        None => {
            let pulled = pull(&store, &request.image, &request.registry).await?;
            share_with_the_os_image(layout, &store)?;
            notes.extend(pulled.skipped.iter().map(|s| format!("not stored (OSTree cannot hold it): {s}")));
            pulled.image
        }
    };
    let config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&image.config_raw).context("reading the stored image config")?;
    if runs_once(&config) {
        if request.start_now {
            bail!("{} is labelled atomic.run=once: install runs it once, right away; drop --now", image.reference);
        }
        drop(lock);
        let run = RunRequest {
            image: request.image.clone(),
            command: Vec::new(),
            runtime: Some(runtime),
            registry: request.registry.clone(),
            name: Some(name),
            values: request.values.clone(),
        };
        return run_once(layout, &run, systemd).await.map(InstallOutcome::RanOnce);
    }

    // An OS image's containers are built the same way every time (see `reproducible`).
    let uuid = if layout.os_image { image_container_uuid(&name) } else { uuid::Uuid::new_v4().to_string() };
    let slot_request = SlotRequest {
        name: &name,
        slot: 0,
        image: &image,
        runtime: &runtime,
        user_values: &request.values,
        listen: &request.listen,
        ready: &request.ready,
        uuid: &uuid,
        target: systemd.target(),
    };
    let mut journal = Journal::begin(&layout.transaction_dir(), &layout.root, "install", &name)?;
    let outcome = async {
        let (mut deployment, slot_notes) = build_slot(layout, &store, &slot_request, &mut journal)?;
        deployment.auto_update = request.auto_update;
        let unit = Layout::unit_name(&name);
        if deployment.has_service && vendor_unit(layout, &name)?.is_some() {
            deployment.shadowed_vendor_unit_enabled = Some(systemd.is_enabled(&unit).await?);
        }
        let more = [slot_notes.notes, activate(layout, None, &mut deployment, systemd, &mut journal).await?].concat();
        if deployment.has_socket && systemd.target().runs_units() {
            // The service starts at the first connection, `--now` or not.
            let socket = Layout::socket_name(&name);
            journal.started(&socket)?;
            systemd.start(&socket).await?;
        } else if deployment.has_service && request.start_now {
            journal.started(&unit)?;
            if request.no_block {
                systemd.queue_start(&unit).await?;
            } else {
                systemd.start(&unit).await?;
            }
        }
        Ok::<_, anyhow::Error>((deployment, more, slot_notes.missing_units))
    }
    .await;
    match outcome {
        Ok((deployment, mut more, missing_units)) => {
            journal.commit()?;
            notes.append(&mut more);
            tracing::info!(image_id = %deployment.image_id, "installed");
            Ok(InstallOutcome::Installed(Box::new(InstallReport { name, deployment, notes, missing_units })))
        }
        Err(err) => {
            let problems = journal.undo(systemd).await;
            Err(with_undo_problems(err, problems))
        }
    }
}

pub(in crate::deploy) fn with_undo_problems(err: anyhow::Error, problems: Vec<String>) -> anyhow::Error {
    if problems.is_empty() {
        err
    } else {
        err.context(format!("and cleaning up after the failure also failed: {}", problems.join("; ")))
    }
}

fn refuse_existing(layout: &Layout, name: &str, replace_vendor_unit: bool) -> Result<()> {
    let link = layout.link(name);
    if std::fs::symlink_metadata(&link).is_ok() {
        bail!("'{name}' is already installed (use `sysctr uninstall {name}` first, or another --name)");
    }
    refuse_colliding_names(layout, name)?;
    for slot in [0, 1] {
        let dir = layout.slot(name, slot);
        if dir.exists() {
            bail!("'{name}' is not installed but {} exists; remove it or pick another --name", dir.display());
        }
    }
    let unit = Layout::unit_name(name);
    let unit_dir = layout.unit_dir();
    for unit in [unit, Layout::socket_name(name)] {
        if layout.host_dir()?.kind(&Path::new(unit_dir).join(&unit))?.is_some() {
            bail!("/{unit_dir}/{unit} already exists and was not installed by sysctr; pick another --name");
        }
    }
    if !replace_vendor_unit {
        let shadowed = [vendor_unit(layout, name)?, vendor_tmpfiles(layout, name)?];
        if let Some(vendor) = shadowed.iter().flatten().next() {
            bail!(
                "{vendor} comes from the system's packages, its administrator or its runtime; installing \
                 '{name}' would mask it. Pick another --name, or pass --replace-vendor-unit to mask it on purpose"
            );
        }
    }
    Ok(())
}

/// Containers `a` and `a.1` would share `deployments/a.1` (one's slot, the other's link):
/// refused in either order of install.
fn refuse_colliding_names(layout: &Layout, name: &str) -> Result<()> {
    let installed =
        |other: &str| std::fs::symlink_metadata(layout.link(other)).is_ok_and(|m| m.file_type().is_symlink());
    if let Some((base, slot)) = name.rsplit_once('.').filter(|(_, slot)| *slot == "0" || *slot == "1") {
        if installed(base) {
            bail!("'{name}' would use deployments/{name}, which is slot {slot} of the installed container '{base}'; pick another --name");
        }
    }
    for slot in [0, 1] {
        let other = format!("{name}.{slot}");
        if installed(&other) {
            bail!("'{name}' would use deployments/{other} as a slot, which is the installed container '{other}'; pick another --name");
        }
    }
    Ok(())
}
