//! `uninstall`: stop and disable the unit, remove what install wrote, keep the image. An
//! interrupted uninstall is finished by the next command, so every step tolerates what an
//! earlier attempt already removed.

use anyhow::Result;

use super::recovery::lock_and_recover;
use crate::deploy::deployment::teardown::remove_container;
use crate::deploy::host::layout::Layout;
use crate::deploy::journal::Journal;
use crate::reference::validate_container_name;
use crate::systemd::ServiceManager;

/// What an uninstall did, for the user.
#[derive(Debug, Default)]
pub struct UninstallReport {
    pub notes: Vec<String>,
}

#[tracing::instrument(name = "uninstall", skip_all, fields(container = %name))]
pub async fn uninstall(layout: &Layout, name: &str, systemd: &impl ServiceManager) -> Result<UninstallReport> {
    validate_container_name(name)?;
    layout.refuse_image_owned(name, "uninstall")?;
    let (_lock, mut notes) = lock_and_recover(layout, systemd, Some(name)).await?;
    layout.read_info(name)?;
    let mut journal = Journal::begin(&layout.transaction_dir(), &layout.root, "uninstall", name)?;
    journal.uninstalling(name)?;
    notes.extend(remove_container(layout, name, systemd).await?);
    journal.commit()?;
    Ok(UninstallReport { notes })
}
