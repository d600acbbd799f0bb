//! Taking a container off the host, whatever is left of it: its socket (first, so that no
//! connection starts the service again) and its unit stopped, disabled and removed with sysctr's
//! drop-in, its tmpfiles.d file and host files if they are still the ones
//! sysctr wrote, then its deployment slots. Every step tolerates what an earlier, interrupted
//! attempt already removed, so that it can be run again to the same end.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::hostfs;
use crate::deploy::host::layout::{Deployment, Layout, DROPIN_FILE, TMPFILES_FILE};
use crate::deploy::journal::Unrecorded;
use crate::rooted::{EntryKind, RootedDir};
use crate::systemd::{ServiceManager, Tmpfiles, UnitState};

/// Removes everything of an installed container but its image, whatever is left of it.
pub(in crate::deploy) async fn remove_container(
    layout: &Layout,
    name: &str,
    systemd: &impl ServiceManager,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let record =
        layout.read_info(name).or_else(|_| layout.read_slot_info(name, 0)).or_else(|_| layout.read_slot_info(name, 1));
    let unit = Layout::unit_name(name);
    let units = layout.host_subdir(layout.unit_dir())?;
    if let Some(units) = &units {
        remove_socket(units, name, systemd).await?;
    }
    let has_unit = match &units {
        Some(units) => units.kind(Path::new(&unit))?.is_some(),
        None => false,
    };
    if let (Some(units), true) = (&units, has_unit) {
        if systemd.target().runs_units() {
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
        remove_if_present(units, Path::new(&unit))?;
        notes.extend(remove_own_dropin(units, layout.unit_dir(), name)?);
        systemd.reload().await?;
        // The system's own unit of that name is visible again: as enabled as it was before.
        if record.as_ref().is_ok_and(|r| r.shadowed_vendor_unit_enabled == Some(true)) {
            systemd.enable(&unit, &mut Unrecorded).await?;
        }
    }

    let tmpfiles = Layout::tmpfiles_name(name);
    let shown = format!("/{}/{tmpfiles}", layout.tmpfiles_dir());
    if let Some(dir) = layout.host_subdir(layout.tmpfiles_dir())? {
        if dir.kind(Path::new(&tmpfiles))?.is_some() {
            if owns_tmpfiles(layout, name, record.as_ref().ok()) {
                systemd.tmpfiles(Tmpfiles::Remove, Path::new(&shown))?;
                remove_if_present(&dir, Path::new(&tmpfiles))?;
            } else {
                notes.push(format!("kept {shown}: sysctr did not write it"));
            }
        }
    }

    if let Ok(deployment) = &record {
        notes.extend(hostfs::remove(layout, &deployment.installed_files, &deployment.created_dirs, None)?);
    }

    // The symlink goes first: from then on the name is free, whatever happens to the slots.
    if let Err(e) = std::fs::remove_file(layout.link(name)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("removing {}", layout.link(name).display()));
        }
    }
    for slot in [0, 1] {
        let dir = layout.slot(name, slot);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(notes)
}

/// Stops, disables and removes the socket unit of `name`, if it has one.
async fn remove_socket(units: &RootedDir, name: &str, systemd: &impl ServiceManager) -> Result<()> {
    let socket = Layout::socket_name(name);
    if units.kind(Path::new(&socket))?.is_none() {
        return Ok(());
    }
    if systemd.target().runs_units() && systemd.state(&socket).await? != UnitState::Inactive {
        systemd.stop(&socket).await?;
    }
    systemd.disable(&socket, None).await?;
    remove_if_present(units, Path::new(&socket))
}

/// Removes sysctr's own drop-in, and the drop-in directory only once nothing else is in it: an
/// administrator's drop-ins stay. Something else in the directory's place (a symlink) is left
/// alone and said, never followed: the rest of the uninstall goes on.
fn remove_own_dropin(units: &RootedDir, unit_dir: &str, name: &str) -> Result<Vec<String>> {
    let dir = PathBuf::from(Layout::dropin_dir_name(name));
    let shown = format!("/{unit_dir}/{}", dir.display());
    match units.kind(&dir)? {
        None => return Ok(Vec::new()),
        Some(EntryKind::Dir) => {}
        Some(_) => return Ok(vec![format!("left {shown} alone: it is not a directory, and sysctr did not create it")]),
    }
    remove_if_present(units, &dir.join(DROPIN_FILE))?;
    if units.is_empty_dir(&dir)? {
        units.remove_dir(&dir)?;
        Ok(Vec::new())
    } else {
        Ok(vec![format!("kept {shown}: it holds drop-ins sysctr did not write")])
    }
}

/// Whether the tmpfiles.d file of `name` is the one sysctr wrote: the copy kept in the active
/// slot, unchanged.
pub(in crate::deploy) fn owns_tmpfiles(layout: &Layout, name: &str, record: Option<&Deployment>) -> bool {
    let Some(record) = record else { return false };
    let ours = std::fs::read(layout.slot_dir(record).join(TMPFILES_FILE));
    let there = layout.host_subdir(layout.tmpfiles_dir()).and_then(|dir| {
        dir.context("no tmpfiles.d directory")?.read_file(Path::new(&Layout::tmpfiles_name(name)), MAX_TMPFILES_FILE)
    });
    matches!((ours, there), (Ok(a), Ok(b)) if a == b)
}

/// A tmpfiles.d file larger than this is not sysctr's (rendered ones are a few lines).
const MAX_TMPFILES_FILE: u64 = 1024 * 1024;

fn remove_if_present(dir: &RootedDir, relative: &Path) -> Result<()> {
    match dir.kind(relative)? {
        Some(_) => dir.remove_file(relative),
        None => Ok(()),
    }
}
