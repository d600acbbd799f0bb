//! Making a built slot the active one on the host: the previous slot's unit, tmpfiles.d file and
//! host files out, the new slot's in, the `NAME` symlink switched by rename, systemd reloaded.
//! Every change is journaled first; starting and stopping is the caller's business.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::hostfs;
use super::journal::Journal;
use super::layout::{Deployment, Layout};
use super::slot::{self, DROPIN_FILE, TMPFILES_FILE, UNIT_FILE};
use super::uninstall::owns_tmpfiles;
use crate::systemd::Systemd;

/// Activates `to` (already built in its slot), replacing `from` if there is one. Updates `to`'s
/// record with the host files actually installed. Returns notes for the user.
pub(super) async fn activate(
    layout: &Layout,
    from: Option<&Deployment>,
    to: &mut Deployment,
    systemd: Option<&Systemd>,
    journal: &mut Journal,
) -> Result<Vec<String>> {
    let name = to.name.clone();
    let mut notes = Vec::new();
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
    let someone_elses = std::fs::symlink_metadata(&tmpfiles).is_ok() && !from.is_some_and(|f| owns_tmpfiles(layout, &name, Some(f)));
    if someone_elses && to_dir.join(TMPFILES_FILE).exists() {
        bail!("{} exists and was not written by sysctr; move it away, or pick another --name", tmpfiles.display());
    } else if someone_elses {
        notes.push(format!("left {} alone: sysctr did not write it", tmpfiles.display()));
    } else {
        place(layout, journal, &to_dir.join(TMPFILES_FILE), &tmpfiles)?;
        // Offline, systemd-tmpfiles-setup.service applies it at the first boot.
        if tmpfiles.exists() && !layout.is_offline() {
            run_tmpfiles("--create", &tmpfiles)?;
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

    if layout.is_offline() {
        enable_offline(layout, from, to, journal)?;
    }

    let link = layout.link(&name);
    journal.save(&link)?;
    replace_symlink(&link, &format!("{name}.{}", to.slot))?;

    if let Some(systemd) = systemd {
        systemd.reload().await?;
    }
    Ok(notes)
}

/// Enables the unit the way `systemctl --root` would: the previous deployment's `[Install]`
/// links are removed, the new one's created.
fn enable_offline(layout: &Layout, from: Option<&Deployment>, to: &Deployment, journal: &mut Journal) -> Result<()> {
    let unit_name = Layout::unit_name(&to.name);
    let host = layout.host_dir()?;
    if let Some(from) = from {
        for (link, _) in offline_links(layout, from)? {
            journal.save(&layout.root.join(&link))?;
            if host.kind(Path::new(&link))?.is_some() {
                host.remove_file(Path::new(&link))?;
            }
        }
    }
    for (link, target) in offline_links(layout, to)? {
        let link = Path::new(&link);
        for dir in host.missing_dirs(link.parent().unwrap_or(Path::new("")))? {
            journal.created_dir(&layout.root.join(&dir))?;
            host.create_dir(&dir, 0o755)?;
        }
        journal.save(&layout.root.join(link))?;
        if host.kind(link)?.is_some() {
            host.remove_file(link)?;
        }
        host.symlink(link, Path::new(&target)).with_context(|| format!("enabling {unit_name}"))?;
    }
    Ok(())
}

/// The `[Install]` links of a deployment's unit, from the copy kept in its slot.
pub(super) fn offline_links(layout: &Layout, deployment: &Deployment) -> Result<Vec<(String, String)>> {
    let unit = slot::slot_dir(layout, deployment).join(UNIT_FILE);
    match std::fs::read_to_string(&unit) {
        Ok(text) => crate::systemd::install_links(&text, &Layout::unit_name(&deployment.name)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", unit.display())),
    }
}

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

/// Points `link` at `target` atomically: a new symlink is renamed over the old one, so there is
/// never a moment without it.
fn replace_symlink(link: &Path, target: &str) -> Result<()> {
    let file_name = link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = link.with_file_name(format!(".{file_name}.new"));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).with_context(|| format!("creating {}", temp.display()))?;
    std::fs::rename(&temp, link).with_context(|| format!("switching {} to {target}", link.display()))
}

pub(super) fn run_tmpfiles(action: &str, file: &Path) -> Result<()> {
    let output = std::process::Command::new("systemd-tmpfiles")
        .arg(action)
        .arg(file)
        .output()
        .context("running systemd-tmpfiles")?;
    if !output.status.success() {
        anyhow::bail!(
            "systemd-tmpfiles {action} {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
