//! Making a built slot the active one on the host: the previous slot's unit (disabled), tmpfiles.d
//! file and host files out, the new slot's in, the `NAME` symlink switched by rename, systemd
//! reloaded and the unit enabled. Every change is journaled first; starting and stopping is the
//! caller's business.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::hostfs;
use super::journal::Journal;
use super::layout::{Deployment, Layout};
use super::slot::{self, DROPIN_FILE, TMPFILES_FILE, UNIT_FILE};
use super::uninstall::owns_tmpfiles;
use crate::rooted::{Resolve, RootedDir};
use crate::systemd::{ServiceManager, Tmpfiles};

/// Activates `to` (already built in its slot), replacing `from` if there is one. Updates `to`'s
/// record with the host files actually installed. Returns notes for the user.
pub(super) async fn activate(
    layout: &Layout,
    from: Option<&Deployment>,
    to: &mut Deployment,
    systemd: &impl ServiceManager,
    journal: &mut Journal,
) -> Result<Vec<String>> {
    let name = to.name.clone();
    let unit = Layout::unit_name(&name);
    let mut notes = Vec::new();
    // Disabled while its unit file still says how it was enabled (offline, the links to remove).
    if from.is_some_and(|f| f.has_service) {
        systemd.disable(&unit, Some(journal)).await?;
    }
    if let Some(from) = from {
        notes.extend(hostfs::remove(layout, &from.installed_files, &from.created_dirs, Some(&mut *journal))?);
    }

    let to_dir = slot::slot_dir(layout, to);
    let installed = hostfs::install(layout, &slot::staged_host_files(&to_dir)?, journal)?;
    for path in &installed.kept_existing {
        notes.push(format!("not installed {path}: a file is already there, and sysctr never overwrites one"));
    }
    to.installed_files = installed.files;
    to.created_dirs = installed.created_dirs;
    journal.save(&to_dir.join("info"))?;
    to.write(&to_dir)?;

    let tmpfiles = layout.tmpfiles_file(&name);
    let someone_elses =
        std::fs::symlink_metadata(&tmpfiles).is_ok() && !from.is_some_and(|f| owns_tmpfiles(layout, &name, Some(f)));
    if someone_elses && to_dir.join(TMPFILES_FILE).exists() {
        bail!("{} exists and was not written by sysctr; move it away, or pick another --name", tmpfiles.display());
    } else if someone_elses {
        notes.push(format!("left {} alone: sysctr did not write it", tmpfiles.display()));
    } else {
        place(layout, journal, &to_dir.join(TMPFILES_FILE), &tmpfiles)?;
        if tmpfiles.exists() {
            systemd.tmpfiles(Tmpfiles::Create, &tmpfiles)?;
        }
    }
    journal.units_changed()?;
    place(layout, journal, &to_dir.join(UNIT_FILE), &layout.unit_file(&name))?;
    let dropin_dir = layout.unit_dropin_dir(&name);
    if !dropin_dir.exists() && to.has_service {
        journal.created_dir(&dropin_dir)?;
        std::fs::create_dir_all(&dropin_dir).with_context(|| format!("creating {}", dropin_dir.display()))?;
    }
    place(layout, journal, &to_dir.join(DROPIN_FILE), &dropin_dir.join(DROPIN_FILE))?;
    if !to.has_service && dropin_dir.exists() {
        journal.removed_dir(&dropin_dir)?;
        let _ = std::fs::remove_dir(&dropin_dir);
    }

    let link = layout.link(&name);
    journal.save(&link)?;
    RootedDir::open(&layout.deployments(), Resolve::NoSymlinks)?
        .replace_symlink(Path::new(&name), Path::new(&format!("{name}.{}", to.slot)))?;

    systemd.reload().await?;
    if to.has_service {
        systemd.enable(&unit, journal).await?;
    }
    Ok(notes)
}

/// Enables the unit the way `systemctl --root` would: the previous deployment's `[Install]`
/// links are removed, the new one's created.
/// Copies `source` to `target` (a path under the root) when the slot has it, durably and beneath
/// the root's handle; removes `target` when the slot has no such file.
fn place(layout: &Layout, journal: &mut Journal, source: &Path, target: &Path) -> Result<()> {
    let host = layout.host_dir()?;
    let relative = layout.host_relative(target)?;
    journal.save(target)?;
    if source.exists() {
        let content = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        if let Some(parent) = relative.parent() {
            host.create_dir_all(parent)?;
        }
        host.replace_file(relative, &content, 0o644)?;
    } else if host.kind(relative)?.is_some() {
        host.remove_file(relative)?;
    }
    Ok(())
}
