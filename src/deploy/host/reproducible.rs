//! What makes composing an OS image reproducible: the same apply file and images give the same
//! tree, byte for byte. Times are clamped to `SOURCE_DATE_EPOCH` when it is set (the records'
//! `created`, the mtimes of what sysctr wrote), and a container's UUID is derived from its name
//! instead of drawn at random. OSTree commits are made at time 0 anyway (see `store`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, Timespec, Timestamps};
use sha2::{Digest as _, Sha256};

use super::layout::Layout;
use crate::rooted::{EntryKind, Resolve, RootedDir};

const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// `SOURCE_DATE_EPOCH`, if set to a number of seconds.
fn source_date_epoch() -> Result<Option<u64>> {
    let Some(value) = std::env::var_os(SOURCE_DATE_EPOCH) else { return Ok(None) };
    let value = value.to_string_lossy();
    let seconds = value
        .trim()
        .parse::<u64>()
        .with_context(|| format!("{SOURCE_DATE_EPOCH}={value}: expected a number of seconds since 1970"))?;
    Ok(Some(seconds))
}

/// The time to record as now: `SOURCE_DATE_EPOCH` if it is earlier.
pub(in crate::deploy) fn now() -> Result<SystemTime> {
    let now = SystemTime::now();
    Ok(match source_date_epoch()? {
        Some(epoch) => now.min(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch)),
        None => now,
    })
}

/// The `UUID` of a container an OS image provides: the same for the same name, in every build of
/// the image and on every machine it is installed on, and kept across updates of the image.
pub(in crate::deploy) fn image_container_uuid(name: &str) -> String {
    let hash = Sha256::digest(format!("sysctr os-image container\n{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// Clamps to `SOURCE_DATE_EPOCH` the mtime of everything sysctr writes into an OS image being
/// composed: its store and deployments, its state directory, and the directories of vendor units
/// and tmpfiles.d files (a unit directory's entries are sysctr's or the image's packages', which
/// a reproducible image build clamps too). Nothing is followed: symlinks get their own mtime.
pub fn clamp_image_times(layout: &Layout) -> Result<()> {
    let Some(epoch) = source_date_epoch()? else { return Ok(()) };
    let host = layout.host_dir()?;
    let epoch = Timespec { tv_sec: i64::try_from(epoch).unwrap_or(i64::MAX), tv_nsec: 0 };
    for path in [&layout.storage, &layout.state] {
        let relative = path
            .strip_prefix(&layout.root)
            .with_context(|| format!("{} is not inside the root {}", path.display(), layout.root.display()))?;
        clamp_path(&host, relative, epoch)?;
    }
    for dir in [layout.unit_dir(), layout.tmpfiles_dir()] {
        clamp_path(&host, Path::new(dir), epoch)?;
    }
    Ok(())
}

/// Clamps `relative` (beneath `host`) and, if it is a directory, everything beneath it; then the
/// directories on the way to it, which sysctr may have created or added to.
fn clamp_path(host: &RootedDir, relative: &Path, epoch: Timespec) -> Result<()> {
    let mut recursive = true;
    for path in relative.ancestors() {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { continue };
        if let Some(parent) = host.open_dir(parent, Resolve::InRoot)? {
            clamp_entry(&parent, Path::new(name), epoch, recursive)?;
        }
        recursive = false;
    }
    Ok(())
}

fn clamp_entry(dir: &RootedDir, name: &Path, epoch: Timespec, recursive: bool) -> Result<()> {
    let Some(kind) = dir.kind(name)? else { return Ok(()) };
    if kind == EntryKind::Dir && recursive {
        if let Some(inner) = dir.open_dir(name, Resolve::NoSymlinks)? {
            for entry in inner.list_dir(Path::new(""))? {
                clamp_entry(&inner, Path::new(&entry), epoch, true)?;
            }
        }
    }
    let shown = || dir.path().join(name).display().to_string();
    let stat = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("inspecting {}", shown()))?;
    if stat.st_mtime > epoch.tv_sec {
        let atime = Timespec { tv_sec: stat.st_atime.min(epoch.tv_sec), tv_nsec: 0 };
        rustix::fs::utimensat(
            dir.as_fd(),
            name,
            &Timestamps { last_access: atime, last_modification: epoch },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("setting the mtime of {} to SOURCE_DATE_EPOCH", shown()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_container_uuid_depends_on_its_name_only() {
        let a = image_container_uuid("etcd");
        assert_eq!(a, image_container_uuid("etcd"));
        assert_ne!(a, image_container_uuid("flannel"));
        assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
    }
}
