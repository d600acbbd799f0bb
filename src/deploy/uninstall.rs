//! `uninstall`: stop and disable the unit, remove what install wrote, keep the image. An
//! interrupted uninstall is finished by the next command, so every step tolerates what an
//! earlier attempt already removed.

use anyhow::{Context, Result};

use super::hostfs;
use super::journal::{Journal, Unrecorded};
use super::layout::{Deployment, Layout};
use super::recovery::lock_and_recover;
use super::slot::{slot_dir, DROPIN_FILE, TMPFILES_FILE};
use crate::reference::validate_container_name;
use crate::systemd::{ServiceManager, Tmpfiles, UnitState};

/// What an uninstall did, for the user.
#[derive(Debug, Default)]
pub struct UninstallReport {
    pub notes: Vec<String>,
}

#[tracing::instrument(name = "uninstall", skip_all, fields(container = %name))]
pub async fn uninstall(layout: &Layout, name: &str, systemd: &impl ServiceManager) -> Result<UninstallReport> {
    validate_container_name(name)?;
    let (_lock, mut notes) = lock_and_recover(layout, systemd, Some(name)).await?;
    layout.read_info(name)?;
    let mut journal = Journal::begin(&layout.transaction_dir(), &layout.root, &format!("uninstall {name}"))?;
    journal.uninstalling(name)?;
    notes.extend(remove_container(layout, name, systemd).await?);
    journal.commit()?;
    Ok(UninstallReport { notes })
}

/// Removes everything of an installed container but its image, whatever is left of it.
pub(super) async fn remove_container(
    layout: &Layout,
    name: &str,
    systemd: &impl ServiceManager,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let record =
        layout.read_info(name).or_else(|_| layout.read_slot_info(name, 0)).or_else(|_| layout.read_slot_info(name, 1));
    let unit = Layout::unit_name(name);
    let unit_file = layout.unit_file(name);
    if unit_file.exists() {
        if systemd.runs_units() {
            let dependents = systemd.required_by(&unit).await?;
            if !dependents.is_empty() {
                // Said before the stop: systemd stops them along with this unit.
                crate::output::warning(format!("{} require {unit}; stopping it stops them too", dependents.join(", ")));
            }
            if systemd.state(&unit).await? != UnitState::Inactive {
                systemd.stop(&unit).await?;
            }
        }
        systemd.disable(&unit, None).await?;
        remove_if_present(&unit_file)?;
        notes.extend(remove_own_dropin(layout, name)?);
        systemd.reload().await?;
        // The system's own unit of that name is visible again: as enabled as it was before.
        if record.as_ref().is_ok_and(|r| r.shadowed_vendor_unit_enabled == Some(true)) {
            systemd.enable(&unit, &mut Unrecorded).await?;
        }
    }

    let tmpfiles = layout.tmpfiles_file(name);
    if tmpfiles.exists() {
        if owns_tmpfiles(layout, name, record.as_ref().ok()) {
            systemd.tmpfiles(Tmpfiles::Remove, &tmpfiles)?;
            remove_if_present(&tmpfiles)?;
        } else {
            notes.push(format!("kept {}: sysctr did not write it", tmpfiles.display()));
        }
    }

    if let Ok(deployment) = &record {
        notes.extend(hostfs::remove(layout, &deployment.installed_files, &deployment.created_dirs, None)?);
    }

    // The symlink goes first: from then on the name is free, whatever happens to the slots.
    remove_if_present(&layout.link(name))?;
    for slot in [0, 1] {
        let dir = layout.slot(name, slot);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(notes)
}

/// Removes sysctr's own drop-in, and the drop-in directory only once nothing else is in it: an
/// administrator's drop-ins stay.
fn remove_own_dropin(layout: &Layout, name: &str) -> Result<Vec<String>> {
    let dir = layout.unit_dropin_dir(name);
    remove_if_present(&dir.join(DROPIN_FILE))?;
    match std::fs::remove_dir(&dir) {
        Ok(()) => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
            Ok(vec![format!("kept {}: it holds drop-ins sysctr did not write", dir.display())])
        }
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Whether the tmpfiles.d file of `name` is the one sysctr wrote: the copy kept in the active
/// slot, unchanged.
pub(super) fn owns_tmpfiles(layout: &Layout, name: &str, record: Option<&Deployment>) -> bool {
    let Some(record) = record else { return false };
    let ours = std::fs::read(slot_dir(layout, record).join(TMPFILES_FILE));
    let there = std::fs::read(layout.tmpfiles_file(name));
    matches!((ours, there), (Ok(a), Ok(b)) if a == b)
}

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
