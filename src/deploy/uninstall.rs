//! `uninstall`: stop and disable the unit, remove what install wrote, keep the image. An
//! interrupted uninstall is finished by the next command, so every step tolerates what an
//! earlier attempt already removed.

use anyhow::{Context, Result};

use super::activate::{offline_links, run_tmpfiles};
use super::hostfs;
use super::journal::Journal;
use super::layout::Layout;
use super::recovery::lock_and_recover;
use crate::reference::validate_container_name;
use crate::systemd::Systemd;

/// What an uninstall did, for the user.
#[derive(Debug, Default)]
pub struct UninstallReport {
    pub notes: Vec<String>,
}

pub async fn uninstall(layout: &Layout, name: &str) -> Result<UninstallReport> {
    validate_container_name(name)?;
    let (_lock, mut notes) = lock_and_recover(layout).await?;
    layout.read_info(name)?;
    let mut journal = Journal::begin(&layout.transaction_dir(), &format!("uninstall {name}"))?;
    journal.uninstalling(name)?;
    notes.extend(remove_container(layout, name).await?);
    journal.commit()?;
    Ok(UninstallReport { notes })
}

/// Removes everything of an installed container but its image, whatever is left of it.
pub(super) async fn remove_container(layout: &Layout, name: &str) -> Result<Vec<String>> {
    let unit = Layout::unit_name(name);
    let unit_file = layout.unit_file(name);
    if layout.is_offline() {
        for deployment in [layout.read_slot_info(name, 0), layout.read_slot_info(name, 1)].into_iter().flatten() {
            for (link, _) in offline_links(layout, &deployment)? {
                remove_if_present(&layout.root.join(link))?;
            }
        }
        remove_if_present(&unit_file)?;
        let dropin = layout.unit_dropin_dir(name);
        if dropin.exists() {
            std::fs::remove_dir_all(&dropin).with_context(|| format!("removing {}", dropin.display()))?;
        }
    } else if unit_file.exists() {
        let systemd = Systemd::connect().await?;
        let dependents = systemd.required_by(&unit).await?;
        if !dependents.is_empty() {
            // Said before the stop: systemd stops them along with this unit.
            eprintln!("warning: {} require {unit}; stopping it stops them too", dependents.join(", "));
        }
        if systemd.active_state(&unit).await? != "inactive" {
            systemd.stop(&unit).await?;
        }
        systemd.disable(&[unit.as_str()]).await?;
        remove_if_present(&unit_file)?;
        let dropin = layout.unit_dropin_dir(name);
        if dropin.exists() {
            std::fs::remove_dir_all(&dropin).with_context(|| format!("removing {}", dropin.display()))?;
        }
        systemd.reload().await?;
    }

    let tmpfiles = layout.tmpfiles_file(name);
    if tmpfiles.exists() {
        if !layout.is_offline() {
            run_tmpfiles("--remove", &tmpfiles)?;
        }
        remove_if_present(&tmpfiles)?;
    }

    let record = layout.read_info(name).or_else(|_| layout.read_slot_info(name, 0)).or_else(|_| layout.read_slot_info(name, 1));
    let notes = match record {
        Ok(deployment) => hostfs::remove(layout, &deployment.installed_files, &deployment.created_dirs, None)?,
        Err(_) => Vec::new(),
    };

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

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}
