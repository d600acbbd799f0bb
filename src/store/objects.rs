//! Regular-file objects written straight into `objects/` of a bare repository, laid out as
//! libostree lays them out: `objects/XX/REST.file`, with the file's owner, mode and xattrs and a
//! modification time of 0. The checksum is computed before (see `import::regfile_checksum`),
//! so that nothing is asked of libostree per file: it stats an object up to four times, changes
//! its mode three times and creates its directory again for each one it writes.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::checkout::epoch;

pub(super) struct ObjectWriter {
    objects: OwnedFd,
    /// The `objects/XX` directories known to exist.
    prefixes: HashSet<String>,
    /// What may still be written without eating into the free space the repository keeps
    /// (`min-free-space-percent`, 3% by default, or `min-free-space-size`), counted as libostree
    /// counts it in a transaction; `None` where it keeps none.
    budget: Option<SpaceBudget>,
}

struct SpaceBudget {
    block_size: u64,
    blocks_left: u64,
    reserved: u64,
}

/// Whether [`ObjectWriter::write`] stored the object.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    Stored,
    /// The file system has no `O_TMPFILE`: libostree writes it instead.
    Unsupported,
}

impl ObjectWriter {
    /// `reserved`: the bytes the repository keeps free (`ostree::Repo::min_free_space_bytes`).
    pub(super) fn open(repo_path: &Path, reserved: u64) -> Result<ObjectWriter> {
        let objects = rustix::fs::open(
            repo_path.join("objects"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the objects of {}", repo_path.display()))?;
        let budget = if reserved > 0 {
            let fs = rustix::fs::fstatvfs(&objects)
                .with_context(|| format!("reading the free space of {}", repo_path.display()))?;
            let block_size = fs.f_bsize.max(1);
            // Root may use the blocks kept for root, as libostree counts.
            let free = if rustix::process::geteuid().is_root() { fs.f_bfree } else { fs.f_bavail };
            Some(SpaceBudget { block_size, blocks_left: free.saturating_sub(reserved / block_size), reserved })
        } else {
            None
        };
        Ok(ObjectWriter { objects, prefixes: HashSet::new(), budget })
    }

    /// Stores `content` as the object `checksum`, unless it is there already. Written to an
    /// unnamed file first and linked into place only once complete, so that an object is never
    /// seen half-written; one written meanwhile by another import is kept.
    pub(super) fn write(
        &mut self,
        checksum: &str,
        content: &[u8],
        (uid, gid, mode): (u32, u32, u32),
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Written> {
        let (prefix, rest) = checksum.split_at_checked(2).context("an object checksum too short")?;
        let name = format!("{prefix}/{rest}.file");
        match rustix::fs::statat(&self.objects, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok(Written::Stored),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("looking for object {name}")),
        }
        if let Some(budget) = &mut self.budget {
            let blocks = content.len() as u64 / budget.block_size + 1;
            if blocks > budget.blocks_left {
                anyhow::bail!(
                    "the image store keeps {} MB free (OSTree's min-free-space), and object {name} needs at least {} more bytes",
                    budget.reserved / 1_000_000,
                    blocks * budget.block_size
                );
            }
            budget.blocks_left -= blocks;
        }
        if !self.prefixes.contains(prefix) {
            match rustix::fs::mkdirat(&self.objects, prefix, Mode::from_raw_mode(0o775)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("creating objects/{prefix}")),
            }
            self.prefixes.insert(prefix.to_owned());
        }
        let file = match rustix::fs::openat(
            &self.objects,
            prefix,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(file) => file,
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => return Ok(Written::Unsupported),
            Err(e) => return Err(e).with_context(|| format!("creating a file in objects/{prefix}")),
        };
        let mut rest = content;
        while !rest.is_empty() {
            match rustix::io::write(&file, rest) {
                Ok(0) => anyhow::bail!("writing object {name}: the file system took no more"),
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(e).with_context(|| format!("writing object {name}")),
            }
        }
        rustix::fs::fchown(&file, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
            .with_context(|| format!("setting the owner of object {name}"))?;
        // After the owner, which clears set-user-ID and set-group-ID.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))
            .with_context(|| format!("setting the mode of object {name}"))?;
        for (key, value) in xattrs {
            let key = CString::new(key.strip_suffix(b"\0").unwrap_or(key))
                .with_context(|| format!("object {name} has an xattr name with a NUL byte inside"))?;
            rustix::fs::fsetxattr(&file, key.as_c_str(), value, rustix::fs::XattrFlags::empty())
                .with_context(|| format!("setting {key:?} on object {name}"))?;
        }
        rustix::fs::futimens(&file, &epoch()).with_context(|| format!("setting the time of object {name}"))?;
        let unnamed = format!("/proc/self/fd/{}", file.as_raw_fd());
        match rustix::fs::linkat(CWD, unnamed.as_str(), &self.objects, &name, AtFlags::SYMLINK_FOLLOW) {
            Ok(()) | Err(Errno::EXIST) => Ok(Written::Stored),
            Err(e) => Err(e).with_context(|| format!("linking object {name} into place")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use ostree::gio;

    use super::*;
    use crate::store::import::{regfile_cases, regfile_checksum, xattrs_variant};

    fn bare_repo(path: &Path) -> ostree::Repo {
        let repo = ostree::Repo::new_for_path(path);
        repo.create(ostree::RepoMode::Bare, gio::Cancellable::NONE).unwrap();
        repo
    }

    /// What an object is on disk: mode, owner, time, content and xattrs.
    fn on_disk(repo: &Path, checksum: &str) -> String {
        let path = repo.join("objects").join(&checksum[..2]).join(format!("{}.file", &checksum[2..]));
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mut xattrs: Vec<(String, Vec<u8>)> = xattr::list(&path)
            .unwrap()
            .map(|name| (name.to_string_lossy().into_owned(), xattr::get(&path, &name).unwrap().unwrap()))
            .collect();
        xattrs.sort();
        let content = std::fs::read(&path).unwrap();
        format!("{:o} {}:{} {} {content:?} {xattrs:?}", meta.mode(), meta.uid(), meta.gid(), meta.mtime())
    }

    #[test]
    fn objects_are_stored_as_libostree_stores_them() {
        let dir = tempfile::Builder::new().prefix("sysctr-objects.").tempdir_in("/var/tmp").unwrap();
        let (theirs_path, ours_path) = (dir.path().join("theirs"), dir.path().join("ours"));
        let (theirs, ours) = (bare_repo(&theirs_path), bare_repo(&ours_path));
        let mut writer = ObjectWriter::open(&ours_path, 0).unwrap();
        for (content, uid, gid, permissions, xattrs) in regfile_cases() {
            let (content, mode) = (&content[..], 0o100000 | permissions);
            let checksum = regfile_checksum(content, uid, gid, mode, &xattrs);
            let variant = xattrs_variant(xattrs.clone());
            theirs
                .write_regfile_inline(
                    Some(&checksum),
                    uid,
                    gid,
                    mode,
                    variant.as_ref(),
                    content,
                    gio::Cancellable::NONE,
                )
                .unwrap();
            assert_eq!(writer.write(&checksum, content, (uid, gid, mode), &xattrs).unwrap(), Written::Stored);
            // libostree reads it back and finds the checksum it is stored under.
            ours.fsck_object(ostree::ObjectType::File, &checksum, gio::Cancellable::NONE).unwrap();
            assert_eq!(on_disk(&ours_path, &checksum), on_disk(&theirs_path, &checksum));
            // Written again: kept as it is.
            assert_eq!(writer.write(&checksum, b"other", (uid, gid, mode), &xattrs).unwrap(), Written::Stored);
            assert_eq!(on_disk(&ours_path, &checksum), on_disk(&theirs_path, &checksum));
        }
    }

    #[test]
    fn the_free_space_the_repository_keeps_is_not_written_into() {
        let dir = tempfile::Builder::new().prefix("sysctr-objects.").tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("repo");
        bare_repo(&path);
        let free = rustix::fs::statvfs(&path).unwrap();
        let free = free.f_bfree * free.f_bsize;
        // All but 64 MiB kept free: a small object fits, one of 256 MiB does not (with room for
        // what other processes write meanwhile).
        let mut writer = ObjectWriter::open(&path, free - (64 << 20)).unwrap();
        let small = regfile_checksum(b"small", 0, 0, 0o100644, &[]);
        assert_eq!(writer.write(&small, b"small", (0, 0, 0o100644), &[]).unwrap(), Written::Stored);
        let big = vec![1u8; 256 << 20];
        let checksum = regfile_checksum(&big, 0, 0, 0o100644, &[]);
        let err = format!("{:#}", writer.write(&checksum, &big, (0, 0, 0o100644), &[]).unwrap_err());
        assert!(err.contains("min-free-space") && err.contains(&checksum[2..]), "{err}");
        assert!(!path.join("objects").join(&checksum[..2]).join(format!("{}.file", &checksum[2..])).exists());
    }
}
