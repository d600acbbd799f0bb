//! `uninstall`: stop and disable the unit, remove what install wrote, keep the image.

use anyhow::{Context, Result};

use super::hostfs;
use super::activate::run_tmpfiles;
use super::journal::Journal;
use super::layout::Layout;
use crate::reference::validate_container_name;
use crate::systemd::Systemd;

/// What an uninstall did, for the user.
#[derive(Debug, Default)]
pub struct UninstallReport {
    pub notes: Vec<String>,
}

pub async fn uninstall(layout: &Layout, name: &str) -> Result<UninstallReport> {
    validate_container_name(name)?;
    let _lock = layout.lock()?;
    let deployment = layout.read_info(name)?;
    let mut report = UninstallReport::default();
    let unit = Layout::unit_name(name);

    if deployment.has_service {
        let systemd = Systemd::connect().await?;
        if systemd.active_state(&unit).await? != "inactive" {
            systemd.stop(&unit).await?;
        }
        systemd.disable(&[unit.as_str()]).await?;
        remove_if_present(&layout.unit_file(name))?;
        let dropin = layout.unit_dropin_dir(name);
        if dropin.exists() {
            std::fs::remove_dir_all(&dropin).with_context(|| format!("removing {}", dropin.display()))?;
        }
        systemd.reload().await?;
    }

    let tmpfiles = layout.tmpfiles_file(name);
    if tmpfiles.exists() {
        run_tmpfiles("--remove", &tmpfiles)?;
        remove_if_present(&tmpfiles)?;
    }

    report.notes = hostfs::remove(layout, &deployment.installed_files, &deployment.created_dirs, &mut Journal::default())?;

    // The symlink goes first: from then on the name is free, whatever happens to the slots.
    remove_if_present(&layout.link(name))?;
    for slot in [0, 1] {
        let dir = layout.slot(name, slot);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(report)
}

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}
