//! Making a built slot the active one on the host: the previous slot's unit (disabled), tmpfiles.d
//! file and host files out, the new slot's in, the `NAME` symlink switched by rename, systemd
//! reloaded and the unit enabled (its socket instead, for a socket-activated container). Every
//! change is journaled first; starting and stopping is the caller's business.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::hostfs;
use super::slot;
use super::teardown::owns_tmpfiles;
use crate::deploy::host::layout::{Deployment, Layout, DROPIN_FILE, SOCKET_FILE, TMPFILES_FILE, UNIT_FILE};
use crate::deploy::journal::Journal;
use crate::rooted::{EntryKind, Resolve, RootedDir};
use crate::systemd::{ServiceManager, Tmpfiles};

/// Activates `to` (already built in its slot), replacing `from` if there is one. Updates `to`'s
/// record with the host files actually installed. Returns notes for the user.
pub(in crate::deploy) async fn activate(
    layout: &Layout,
    from: Option<&Deployment>,
    to: &mut Deployment,
    systemd: &impl ServiceManager,
    journal: &mut Journal,
) -> Result<Vec<String>> {
    let name = to.name.clone();
    let (unit, socket) = (Layout::unit_name(&name), Layout::socket_name(&name));
    let mut notes = Vec::new();
    // Disabled while its unit file still says how it was enabled (offline, the links to remove).
    if let Some(enabled) = from.and_then(Deployment::enabled_unit) {
        systemd.disable(&enabled, Some(journal)).await?;
    }
    if let Some(from) = from {
        notes.extend(hostfs::remove(layout, &from.installed_files, &from.created_dirs, Some(&mut *journal))?);
    }

    let to_dir = layout.slot_dir(to);
    let host_files = slot::staged_host_files(&to_dir)?;
    hostfs::refuse_over_own_files(&host_files, &own_host_paths(layout, &name))?;
    let installed = hostfs::install(layout, &host_files, journal)?;
    for path in &installed.kept_existing {
        notes.push(format!("not installed {path}: a file is already there, and sysctr never overwrites one"));
    }
    to.installed_files = installed.files;
    to.created_dirs = installed.created_dirs;
    journal.save(&to_dir.join("info"))?;
    to.write(&to_dir)?;

    let tmpfiles = Layout::tmpfiles_name(&name);
    let tmpfiles_dir = layout.tmpfiles_dir();
    let shown = format!("/{tmpfiles_dir}/{tmpfiles}");
    let present = layout.host_subdir(tmpfiles_dir)?.map(|dir| dir.kind(Path::new(&tmpfiles))).transpose()?.flatten();
    let someone_elses = present.is_some() && !from.is_some_and(|f| owns_tmpfiles(layout, &name, Some(f)));
    if someone_elses && to_dir.join(TMPFILES_FILE).exists() {
        bail!("{shown} exists and was not written by sysctr; move it away, or pick another --name");
    } else if someone_elses {
        notes.push(format!("left {shown} alone: sysctr did not write it"));
    } else if place(layout, journal, &to_dir.join(TMPFILES_FILE), tmpfiles_dir, &tmpfiles)? {
        systemd.tmpfiles(Tmpfiles::Create, Path::new(&shown))?;
    }
    journal.units_changed()?;
    place(layout, journal, &to_dir.join(UNIT_FILE), layout.unit_dir(), &unit)?;
    place(layout, journal, &to_dir.join(SOCKET_FILE), layout.unit_dir(), &socket)?;
    place_dropin(layout, journal, &to_dir.join(DROPIN_FILE), &name, to.has_service)?;

    let link = layout.link(&name);
    journal.save(&link)?;
    RootedDir::open(&layout.deployments(), Resolve::NoSymlinks)?
        .replace_symlink(Path::new(&name), Path::new(&format!("{name}.{}", to.slot)))?;

    systemd.reload().await?;
    // A socket-activated service is started by its socket only, never at boot by itself.
    if let Some(enabled) = to.enabled_unit() {
        systemd.enable(&enabled, journal).await?;
    }
    Ok(notes)
}

/// The host paths sysctr writes itself for container `name`: an image's host files may not
/// take them, nor plant a symlink on the way to them.
fn own_host_paths(layout: &Layout, name: &str) -> [String; 4] {
    let (units, tmpfiles) = (layout.unit_dir(), layout.tmpfiles_dir());
    [
        format!("/{units}/{}", Layout::unit_name(name)),
        format!("/{units}/{}", Layout::socket_name(name)),
        format!("/{units}/{}", Layout::dropin_dir_name(name)),
        format!("/{tmpfiles}/{}", Layout::tmpfiles_name(name)),
    ]
}

/// The host directory `dir` (one sysctr puts its own files in), created with its missing
/// parents, each creation journaled.
fn create_host_subdir(layout: &Layout, journal: &mut Journal, dir: &str) -> Result<RootedDir> {
    let host = layout.host_dir()?;
    for missing in host.missing_dirs(Path::new(dir))? {
        journal.created_dir(&missing)?;
        host.create_dir(&missing, 0o755)?;
    }
    layout.host_subdir(dir)?.with_context(|| format!("/{dir} vanished while it was being created"))
}

/// Copies the slot's `source` to `name` in the host directory `dir`, durably and beneath the
/// root's handle; removes `name` when the slot has no such file. Returns whether the file is
/// there afterwards.
fn place(layout: &Layout, journal: &mut Journal, source: &Path, dir: &str, name: &str) -> Result<bool> {
    let content = match std::fs::read(source) {
        Ok(content) => Some(content),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", source.display())),
    };
    let host_dir = match (layout.host_subdir(dir)?, &content) {
        (Some(host_dir), _) => host_dir,
        (None, None) => return Ok(false),
        (None, Some(_)) => create_host_subdir(layout, journal, dir)?,
    };
    journal.save(&PathBuf::from(dir).join(name))?;
    match &content {
        Some(content) => host_dir.replace_file(Path::new(name), content, 0o644)?,
        None if host_dir.kind(Path::new(name))?.is_some() => host_dir.remove_file(Path::new(name))?,
        None => {}
    }
    Ok(content.is_some())
}

/// sysctr's drop-in for the unit of `name`, in a `NAME.service.d` directory that must be a real
/// directory: it is created (journaled) when missing, never followed when it is a symlink.
fn place_dropin(layout: &Layout, journal: &mut Journal, source: &Path, name: &str, has_service: bool) -> Result<()> {
    let dropin_dir = Layout::dropin_dir_name(name);
    let unit_dir = layout.unit_dir();
    let units = match layout.host_subdir(unit_dir)? {
        Some(units) => units,
        None if has_service => create_host_subdir(layout, journal, unit_dir)?,
        None => return Ok(()),
    };
    match units.kind(Path::new(&dropin_dir))? {
        Some(EntryKind::Dir) => {}
        None if has_service => {
            journal.created_dir(&Path::new(unit_dir).join(&dropin_dir))?;
            units.create_dir(Path::new(&dropin_dir), 0o755)?;
        }
        None => return Ok(()),
        Some(_) => bail!(
            "/{unit_dir}/{dropin_dir} is not a directory (a symlink?): sysctr writes its drop-in there \
             and follows no link; move it away"
        ),
    }
    place(layout, journal, source, unit_dir, &format!("{dropin_dir}/{DROPIN_FILE}"))?;
    if !has_service && units.is_empty_dir(Path::new(&dropin_dir))? {
        journal.removed_dir(&Path::new(unit_dir).join(&dropin_dir))?;
        units.remove_dir(Path::new(&dropin_dir))?;
    }
    Ok(())
}
