//! Checkout of an image into a directory that must not exist yet.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::{gio, glib};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::Store;
use crate::rooted::{Resolve, RootedDir};

/// Checks out an image commit (the flattened layers) into `dest`, which must not exist yet, as
/// hard links into the repository, then creates the image's FIFOs.
///
/// The result shares inodes with the repository: it must only ever be mounted read-only.
pub fn checkout_image(store: &Store, image_commit: &str, dest: &Path) -> Result<()> {
    if dest.exists() {
        bail!("checkout destination {} already exists", dest.display());
    }
    let linked = link_tree(store, image_commit, dest);
    if linked.is_err() && dest.exists() {
        // What was made so far: root's directories, 0700, which would stand in the way.
        let _ = std::fs::remove_dir_all(dest);
    }
    if linked? == Linked::NeedsLibostree {
        if dest.exists() {
            std::fs::remove_dir_all(dest).with_context(|| format!("removing a partial checkout {}", dest.display()))?;
        }
        let options = ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            no_copy_fallback: true,
            ..Default::default()
        };
        store
            .repo
            .checkout_at(Some(&options), libc_at_fdcwd(), dest, image_commit, gio::Cancellable::NONE)
            .with_context(|| format!("checking out image commit {image_commit} into {}", dest.display()))?;
    }
    let meta = super::commit_metadata(&store.repo, image_commit)?;
    let fifos = super::FifoRecord::read_all(&meta);
    if fifos.is_empty() {
        return Ok(());
    }
    // The image chose every name in the checkout, its symlinks included: FIFOs are created
    // beneath the checkout's handle, through no symlink at all.
    let tree = RootedDir::open(dest, Resolve::NoSymlinks)?;
    for fifo in fifos {
        tree.create_fifo(Path::new(&fifo.path), fifo.mode, fifo.uid, fifo.gid)
            .with_context(|| format!("creating the image's FIFO /{}", fifo.path))?;
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Linked {
    Done,
    /// A directory with xattrs, which only libostree's checkout sets: it checks the whole tree
    /// out instead.
    NeedsLibostree,
}

/// The checkout libostree makes of a bare repository in hard-link mode, with one `statat` and
/// one `linkat` per file (empty files are copied): libostree also opens the object and lists its
/// xattrs.
/// Directories are made as libostree makes them: created 0700, filled, then given their mode,
/// owner and a modification time of 0.
pub(super) fn link_tree(store: &Store, image_commit: &str, dest: &Path) -> Result<Linked> {
    let (commit, _) =
        store.repo.load_commit(image_commit).with_context(|| format!("loading OSTree commit {image_commit}"))?;
    let root_tree = checksum_hex(&commit.child_value(6))?;
    let root_meta = checksum_hex(&commit.child_value(7))?;
    let parent_path = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let parent = rustix::fs::open(parent_path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {}", parent_path.display()))?;
    let name = dest.file_name().and_then(|n| n.to_str()).context("a checkout destination needs a UTF-8 file name")?;
    Linker::new(store)?
        .link_dir(parent.as_fd(), name, &root_tree, &root_meta)
        .with_context(|| format!("checking out image commit {image_commit} into {}", dest.display()))
}

pub(super) struct Linker<'s> {
    repo: &'s ostree::Repo,
    objects: OwnedFd,
}

type DirMeta = (u32, u32, u32, Vec<(Vec<u8>, Vec<u8>)>);

impl<'s> Linker<'s> {
    pub(super) fn new(store: &'s Store) -> Result<Linker<'s>> {
        let objects = rustix::fs::open(
            store.path().join("objects"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the objects of {}", store.path().display()))?;
        Ok(Linker { repo: &store.repo, objects })
    }

    fn link_dir(&self, parent: BorrowedFd<'_>, name: &str, tree: &str, meta: &str) -> Result<Linked> {
        let dirtree = self
            .repo
            .load_variant(ostree::ObjectType::DirTree, tree)
            .with_context(|| format!("loading OSTree object {tree}"))?;
        if dirtree.type_().as_str() != "(a(say)a(sayay))" {
            bail!("OSTree object {tree} is not a directory tree");
        }
        // Read entry by entry: glib's conversion of a whole array checks the type of each
        // element again, which took most of a checkout's time.
        let (files, dirs) = (dirtree.child_value(0), dirtree.child_value(1));
        let (uid, gid, mode, xattrs): DirMeta = self.load(ostree::ObjectType::DirMeta, meta)?;
        if !xattrs.is_empty() {
            return Ok(Linked::NeedsLibostree);
        }
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).with_context(|| format!("creating {name}"))?;
        let dir = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {name}"))?;
        for entry in files.iter() {
            let file = &entry_name(&entry)?;
            let object = format!("{}.file", object_path(entry.child_value(1).fixed_array::<u8>()?)?);
            let stat = rustix::fs::statat(&self.objects, &object, AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| format!("reading object {object} for {name}/{file}"))?;
            let copied = || {
                self.copy_object(&object, &stat, dir.as_fd(), file)
                    .with_context(|| format!("copying object {object} to {name}/{file}"))
            };
            // Empty files are copied, as libostree copies them: linked, the one object of every
            // empty file of an owner and mode would reach the file system's limit of links
            // (65,000 on ext4) after a few checkouts.
            if stat.st_size == 0 && rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file() {
                copied()?;
                continue;
            }
            match rustix::fs::linkat(&self.objects, &object, &dir, file, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::MLINK) => copied()?,
                Err(Errno::XDEV) => bail!("the image store and the deployments are on different file systems"),
                Err(e) => return Err(e).with_context(|| format!("linking object {object} as {name}/{file}")),
            }
        }
        for entry in dirs.iter() {
            let sub = &entry_name(&entry)?;
            let (tree, meta) = (entry.child_value(1), entry.child_value(2));
            let linked = self
                .link_dir(dir.as_fd(), sub, &checksum_text(tree.fixed_array()?)?, &checksum_text(meta.fixed_array()?)?)
                .with_context(|| format!("in {name}"))?;
            if linked == Linked::NeedsLibostree {
                return Ok(linked);
            }
        }
        let (uid, gid, mode) = (u32::from_be(uid), u32::from_be(gid), u32::from_be(mode));
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode & 0o7777))
            .with_context(|| format!("setting the mode of {name}"))?;
        rustix::fs::fchown(&dir, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
            .with_context(|| format!("setting the owner of {name}"))?;
        rustix::fs::futimens(&dir, &epoch()).with_context(|| format!("setting the time of {name}"))?;
        Ok(Linked::Done)
    }

    /// A copy of an object, with its owner, mode and xattrs, as libostree copies one where it
    /// does not link it (its time is the copy's). A file is written unnamed and linked into place
    /// once complete.
    pub(super) fn copy_object(
        &self,
        object: &str,
        stat: &rustix::fs::Stat,
        dir: BorrowedFd<'_>,
        name: &str,
    ) -> Result<()> {
        let (uid, gid) = (Some(rustix::fs::Uid::from_raw(stat.st_uid)), Some(rustix::fs::Gid::from_raw(stat.st_gid)));
        let source = format!("/proc/self/fd/{}/{object}", self.objects.as_raw_fd());
        let xattrs = XattrCopy::of(&source)?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Symlink {
            let target = rustix::fs::readlinkat(&self.objects, object, Vec::new())?;
            rustix::fs::symlinkat(target.as_c_str(), dir, name)?;
            rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
            let copy = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
            for (key, value) in &xattrs.0 {
                rustix::fs::lsetxattr(copy.as_str(), key.as_c_str(), value, rustix::fs::XattrFlags::empty())
                    .with_context(|| format!("setting {key:?}"))?;
            }
            return Ok(());
        }
        let source = rustix::fs::openat(
            &self.objects,
            object,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let copy = rustix::fs::openat(
            dir,
            ".",
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        if stat.st_size > 0 {
            std::io::copy(&mut std::fs::File::from(source), &mut std::fs::File::from(copy.try_clone()?))?;
        }
        rustix::fs::fchown(&copy, uid, gid)?;
        // After the owner, which clears set-user-ID and set-group-ID.
        rustix::fs::fchmod(&copy, Mode::from_raw_mode(stat.st_mode & 0o7777))?;
        for (key, value) in &xattrs.0 {
            // Without CREATE: where SELinux labels files, the new file has a label already.
            rustix::fs::fsetxattr(&copy, key.as_c_str(), value, rustix::fs::XattrFlags::empty())
                .with_context(|| format!("setting {key:?}"))?;
        }
        let unnamed = format!("/proc/self/fd/{}", copy.as_raw_fd());
        rustix::fs::linkat(rustix::fs::CWD, unnamed.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)?;
        Ok(())
    }

    fn load<T: glib::variant::FromVariant>(&self, kind: ostree::ObjectType, checksum: &str) -> Result<T> {
        let variant =
            self.repo.load_variant(kind, checksum).with_context(|| format!("loading OSTree object {checksum}"))?;
        variant.get::<T>().with_context(|| format!("OSTree object {checksum} is not a {kind:?}"))
    }
}

/// The xattrs of a file (not following a symlink), names and values.
struct XattrCopy(Vec<(std::ffi::CString, Vec<u8>)>);

impl XattrCopy {
    fn of(path: &str) -> Result<XattrCopy> {
        // The kernel's limits: 64 KiB for the list of names and for one value.
        let mut names = vec![0u8; 64 * 1024];
        let length = rustix::fs::llistxattr(path, &mut names[..]).context("listing xattrs")?;
        let mut xattrs = Vec::new();
        for key in names[..length].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let key = std::ffi::CString::new(key)?;
            let mut value = vec![0u8; 64 * 1024];
            let size = rustix::fs::lgetxattr(path, key.as_c_str(), &mut value[..])
                .with_context(|| format!("reading {key:?}"))?;
            value.truncate(size);
            xattrs.push((key, value));
        }
        Ok(XattrCopy(xattrs))
    }
}

/// A modification time of 0, as libostree gives objects and the directories it checks out.
pub(super) fn epoch() -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
        last_modification: Timespec { tv_sec: 0, tv_nsec: 0 },
    }
}

/// The name of an entry of a tree object, which must be one path component.
fn entry_name(entry: &glib::Variant) -> Result<String> {
    let name = entry.child_value(0);
    let name = name.str().context("a tree entry without a name")?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        bail!("the image tree has an invalid file name {name:?}");
    }
    Ok(name.to_owned())
}

fn checksum_text(bytes: &[u8]) -> Result<String> {
    if bytes.len() != 32 {
        bail!("the image tree has a checksum of {} bytes", bytes.len());
    }
    Ok(hex::encode(bytes))
}

fn checksum_hex(variant: &glib::Variant) -> Result<String> {
    checksum_text(&variant.get::<Vec<u8>>().context("reading a checksum of an OSTree commit")?)
}

/// `XX/YYYY…`, where a loose object of `checksum` lives under `objects/`.
pub(super) fn object_path(checksum: &[u8]) -> Result<String> {
    let text = checksum_text(checksum)?;
    Ok(format!("{}/{}", &text[..2], &text[2..]))
}

/// `AT_FDCWD`: paths are taken relative to the current directory (ours are absolute).
fn libc_at_fdcwd() -> i32 {
    nix::libc::AT_FDCWD
}
