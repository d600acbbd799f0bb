//! A directory handle beneath which every path is resolved by the kernel (openat2(2)), never by
//! joining strings: the one way sysctr touches a tree whose contents someone else chose, be it an
//! image's checkout, the host files an image stages, or a target root given with `--root`.
//!
//! Two ways to resolve, chosen when the handle is opened:
//! - [`Resolve::NoSymlinks`]: no symlink is followed anywhere in the path, and the path cannot
//!   leave the directory. For trees built from an image, where any symlink was planted by the
//!   image itself.
//! - [`Resolve::InRoot`]: the directory is `/` for the path, as a chroot would see it: absolute
//!   symlinks and `..` stay inside (`/var/run -> /run` in a target root means the target's `/run`).
//!   For a host root, whose own symlinks are legitimate.
//!
//! The final component of a path is never followed when the operation creates, removes or
//! inspects it; operations act on the parent directory's handle with the `*at` calls.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How paths are resolved beneath a [`RootedDir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// No symlinks at all, nothing outside the directory.
    NoSymlinks,
    /// Symlinks followed as if the directory were `/`.
    InRoot,
}

impl Resolve {
    fn flags(self) -> ResolveFlags {
        match self {
            Resolve::NoSymlinks => ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            Resolve::InRoot => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        }
    }
}

/// What is at a path, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// An open directory and the rule its paths are resolved by.
#[derive(Debug)]
pub struct RootedDir {
    fd: OwnedFd,
    /// For messages only.
    path: PathBuf,
    resolve: Resolve,
}

impl RootedDir {
    pub fn open(path: &Path, resolve: Resolve) -> Result<RootedDir> {
        let fd = rustix::fs::open(path, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("opening directory {}", path.display()))?;
        Ok(RootedDir { fd, path: path.to_path_buf(), resolve })
    }

    /// The directory `relative` beneath this one, as a handle of its own whose paths are resolved
    /// by `resolve`: a target's own directory (reached as the target sees it) in which sysctr
    /// owns every name, so that nothing below it is followed. `None` if it does not exist.
    pub fn open_dir(&self, relative: &Path, resolve: Resolve) -> Result<Option<RootedDir>> {
        match self.open_beneath(relative, OFlags::DIRECTORY | OFlags::RDONLY) {
            Ok(fd) => Ok(Some(RootedDir { fd, path: self.path.join(relative), resolve })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(resolve_error(e, &self.shown(relative))),
        }
    }

    /// Where `relative` is on this machine, as this handle resolves it: its deepest existing
    /// directory, resolved by the kernel and named by `/proc/self/fd`, with the missing rest
    /// appended; a symlink leading nowhere in that rest is refused, since the path would follow
    /// it. For the few tools that need a path (a target's storage directory).
    pub fn real_path(&self, relative: &Path) -> Result<PathBuf> {
        let parts = components(relative)?;
        let mut existing = parts.len();
        let fd = loop {
            let prefix: PathBuf = parts[..existing].iter().collect();
            match self.open_beneath(&prefix, OFlags::DIRECTORY | OFlags::PATH) {
                Ok(fd) => break fd,
                Err(Errno::NOENT) if existing > 0 => existing -= 1,
                Err(e) => return Err(resolve_error(e, &self.shown(&prefix))),
            }
        };
        if existing < parts.len() {
            let first_missing: PathBuf = parts[..=existing].iter().collect();
            if self.kind(&first_missing)?.is_some() {
                bail!("{} is a symlink to nothing in {}", self.shown(&first_missing), self.path.display());
            }
        }
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let mut path = std::fs::read_link(&proc_path).with_context(|| format!("reading {proc_path}"))?;
        path.extend(&parts[existing..]);
        Ok(path)
    }

    /// Whether `relative` is a regular file once every symlink on the way, its last component
    /// included, is followed as this handle resolves them.
    pub fn is_file(&self, relative: &Path) -> Result<bool> {
        let fd = match self.open_beneath(relative, OFlags::PATH) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(false),
            Err(e) => return Err(resolve_error(e, &self.shown(relative))),
        };
        let stat = rustix::fs::fstat(&fd).with_context(|| format!("inspecting {}", self.shown(relative)))?;
        Ok(FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile)
    }

    /// The directory as it was named when opened (for messages and for tools that need a path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self, relative: &Path) -> String {
        format!("{}/{}", self.path.display(), relative.display())
    }

    fn open_beneath(&self, relative: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        let relative = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
        rustix::fs::openat2(&self.fd, relative, flags | OFlags::CLOEXEC, Mode::empty(), self.resolve.flags())
    }

    /// Opens the parent of `relative` beneath this directory and returns it with the last
    /// component, which must be a plain name.
    fn parent_of<'p>(&self, relative: &'p Path) -> Result<(OwnedFd, &'p OsStr)> {
        let (parent, name) = split(relative)?;
        let fd = self
            .open_beneath(parent, OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(|e| resolve_error(e, &self.shown(parent)))?;
        Ok((fd, name))
    }

    /// What is at `relative`, without following a final symlink; `None` if nothing is.
    pub fn kind(&self, relative: &Path) -> Result<Option<EntryKind>> {
        let (parent, name) = match self.parent_of(relative) {
            Ok(found) => found,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(err),
        };
        match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => EntryKind::File,
                FileType::Directory => EntryKind::Dir,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Other,
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting {}", self.shown(relative))),
        }
    }

    /// Creates the directory `relative` with `mode`; its parent must exist.
    pub fn create_dir(&self, relative: &Path, mode: u32) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode))
            .with_context(|| format!("creating directory {}", self.shown(relative)))?;
        // mkdir applies the umask: set the exact mode on the directory itself.
        let dir = self
            .open_beneath(relative, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW)
            .with_context(|| format!("opening {}", self.shown(relative)))?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
            .with_context(|| format!("setting the mode of {}", self.shown(relative)))
    }

    /// Sets the mode of the directory `relative` (never through a symlink at its end).
    pub fn set_dir_mode(&self, relative: &Path, mode: u32) -> Result<()> {
        let dir = self
            .open_beneath(relative, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW)
            .map_err(|e| resolve_error(e, &self.shown(relative)))?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
            .with_context(|| format!("setting the mode of {}", self.shown(relative)))
    }

    /// The directories of `relative` (itself included) that do not exist yet, parents first;
    /// an error if one of them exists and is not a directory (as this handle resolves it).
    pub fn missing_dirs(&self, relative: &Path) -> Result<Vec<PathBuf>> {
        let mut missing = Vec::new();
        let mut current = PathBuf::new();
        for component in components(relative)? {
            current.push(component);
            if !missing.is_empty() {
                missing.push(current.clone());
                continue;
            }
            match self.kind(&current)? {
                Some(EntryKind::Dir) => {}
                // In a root, a symlink to a directory is a directory as the root sees it.
                Some(EntryKind::Symlink) if self.resolve == Resolve::InRoot => {
                    self.open_beneath(&current, OFlags::DIRECTORY | OFlags::PATH)
                        .map_err(|e| resolve_error(e, &self.shown(&current)))?;
                }
                Some(_) => bail!("{} exists and is not a directory", self.shown(&current)),
                None => missing.push(current.clone()),
            }
        }
        Ok(missing)
    }

    /// Creates `relative` and its missing parents (mode 0755); returns those it created, parents first.
    pub fn create_dir_all(&self, relative: &Path) -> Result<Vec<PathBuf>> {
        let missing = self.missing_dirs(relative)?;
        for dir in &missing {
            self.create_dir(dir, 0o755)?;
        }
        Ok(missing)
    }

    /// Writes a new regular file at `relative`, which must not exist, with `mode`.
    pub fn create_file(&self, relative: &Path, content: &[u8], mode: u32) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(mode & 0o777))
            .with_context(|| format!("creating {}", self.shown(relative)))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .with_context(|| format!("setting the mode of {}", self.shown(relative)))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(content).with_context(|| format!("writing {}", self.shown(relative)))?;
        file.sync_all().with_context(|| format!("syncing {}", self.shown(relative)))?;
        rustix::fs::fsync(&parent).with_context(|| format!("syncing the directory of {}", self.shown(relative)))
    }

    /// Replaces (or creates) the regular file `relative` so that a crash leaves either the old
    /// or the new content: a temporary file beside it, fsynced, renamed over it, then the
    /// directory fsynced. The temporary file has a name no one can guess, is created exclusively
    /// (never through a symlink, never over anything already there) with `mode` from the start,
    /// and is the only thing removed if the write fails: whatever else is in the directory,
    /// planted or not, is left alone.
    pub fn replace_file(&self, relative: &Path, content: &[u8], mode: u32) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        let (fd, temp_name) = create_temporary(&parent, name, mode)
            .with_context(|| format!("creating a temporary file beside {}", self.shown(relative)))?;
        let temp_name = temp_name.as_os_str();
        let written = (|| -> Result<()> {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            let mut file = std::fs::File::from(fd);
            file.write_all(content)?;
            file.sync_all()?;
            Ok(())
        })();
        let renamed = written.and_then(|()| Ok(rustix::fs::renameat(&parent, temp_name, &parent, name)?));
        if let Err(err) = renamed {
            let _ = rustix::fs::unlinkat(&parent, temp_name, AtFlags::empty());
            return Err(err).with_context(|| format!("writing {}", self.shown(relative)));
        }
        rustix::fs::fsync(&parent).with_context(|| format!("syncing the directory of {}", self.shown(relative)))
    }

    /// Creates the symlink `relative` pointing at `target` (kept as it is, never resolved here),
    /// durably: the directory is synced after.
    pub fn symlink(&self, relative: &Path, target: &Path) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        rustix::fs::symlinkat(target, &parent, name)
            .with_context(|| format!("creating symlink {}", self.shown(relative)))?;
        rustix::fs::fsync(&parent).with_context(|| format!("syncing the directory of {}", self.shown(relative)))
    }

    /// Points the symlink `relative` at `target` in one step: a new symlink beside it is renamed
    /// over it, so there is never a moment without one; then the directory is synced.
    pub fn replace_symlink(&self, relative: &Path, target: &Path) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        let ((), temp_name) = with_temporary_name(name, |temp_name| rustix::fs::symlinkat(target, &parent, temp_name))
            .with_context(|| format!("creating a symlink beside {}", self.shown(relative)))?;
        if let Err(e) = rustix::fs::renameat(&parent, &temp_name, &parent, name) {
            let _ = rustix::fs::unlinkat(&parent, &temp_name, AtFlags::empty());
            return Err(e).with_context(|| format!("switching {} to {}", self.shown(relative), target.display()));
        }
        rustix::fs::fsync(&parent).with_context(|| format!("syncing the directory of {}", self.shown(relative)))
    }

    /// Creates the FIFO `relative` with exactly `mode`, owned by `uid`:`gid`.
    pub fn create_fifo(&self, relative: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        rustix::fs::mknodat(&parent, name, FileType::Fifo, Mode::from_raw_mode(mode & 0o777), 0)
            .with_context(|| format!("creating FIFO {}", self.shown(relative)))?;
        // Opened without following anything, and without blocking for a writer, to set owner
        // and mode on the FIFO itself.
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening FIFO {}", self.shown(relative)))?;
        let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
        rustix::fs::fchown(&fd, Some(uid), Some(gid))
            .with_context(|| format!("setting the owner of {}", self.shown(relative)))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .with_context(|| format!("setting the mode of {}", self.shown(relative)))
    }

    /// The permission bits (with setuid, setgid, sticky) of `relative`, not following it.
    pub fn mode(&self, relative: &Path) -> Result<u32> {
        let (parent, name) = self.parent_of(relative)?;
        let stat = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("inspecting {}", self.shown(relative)))?;
        Ok(stat.st_mode & 0o7777)
    }

    /// Removes `relative` and, if it is a directory, everything in it; nothing if it is absent.
    /// No symlink inside is followed: each is removed as itself.
    pub fn remove_tree(&self, relative: &Path) -> Result<()> {
        // Directories in the order found; removed in reverse, once emptied of everything else.
        let mut dirs = Vec::new();
        let mut pending = vec![relative.to_path_buf()];
        while let Some(path) = pending.pop() {
            match self.kind(&path)? {
                None => {}
                Some(EntryKind::Dir) => {
                    pending.extend(self.list_dir(&path)?.into_iter().map(|name| path.join(name)));
                    dirs.push(path);
                }
                Some(_) => self.remove_file(&path)?,
            }
        }
        for dir in dirs.iter().rev() {
            self.remove_dir(dir)?;
        }
        Ok(())
    }

    /// Reads the target of the symlink `relative`.
    pub fn read_link(&self, relative: &Path) -> Result<PathBuf> {
        let (parent, name) = self.parent_of(relative)?;
        let target = rustix::fs::readlinkat(&parent, name, Vec::new())
            .with_context(|| format!("reading symlink {}", self.shown(relative)))?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Reads the regular file `relative` (not following it; a FIFO or device is refused without
    /// waiting), refusing one larger than `max` bytes.
    pub fn read_file(&self, relative: &Path, max: u64) -> Result<Vec<u8>> {
        self.read_regular(relative, max, OFlags::NOFOLLOW)?.ok_or_else(|| self.not_found(relative))
    }

    fn not_found(&self, relative: &Path) -> anyhow::Error {
        anyhow::Error::new(Errno::NOENT).context(format!("reading {}", self.shown(relative)))
    }

    fn read_bounded(&self, fd: OwnedFd, relative: &Path, max: u64) -> Result<Vec<u8>> {
        use std::io::Read as _;
        let mut content = Vec::new();
        std::fs::File::from(fd)
            .take(max + 1)
            .read_to_end(&mut content)
            .with_context(|| format!("reading {}", self.shown(relative)))?;
        if content.len() as u64 > max {
            bail!("{} is larger than {max} bytes", self.shown(relative));
        }
        Ok(content)
    }

    /// Reads `relative` as this handle resolves it, its last component included (a unit file
    /// may be a link to another), refusing anything but a regular file of at most `max` bytes:
    /// a FIFO or a device is never opened for reading.
    pub fn read_file_followed(&self, relative: &Path, max: u64) -> Result<Vec<u8>> {
        self.read_regular(relative, max, OFlags::empty())?.ok_or_else(|| self.not_found(relative))
    }

    /// Removes the file or symlink `relative` (never what a symlink points at).
    pub fn remove_file(&self, relative: &Path) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        rustix::fs::unlinkat(&parent, name, AtFlags::empty())
            .with_context(|| format!("removing {}", self.shown(relative)))
    }

    /// Removes what an interrupted [`replace_file`](Self::replace_file) or
    /// [`replace_symlink`](Self::replace_symlink) of `relative` left beside it: the entries named
    /// as their temporaries are (see `with_temporary_name`), and nothing else.
    pub fn remove_temporaries_of(&self, relative: &Path) -> Result<()> {
        let (parent, name) = split(relative)?;
        for entry in self.list_dir(parent)? {
            if is_temporary_name_of(&entry, name) {
                self.remove_file(&parent.join(&entry))?;
            }
        }
        Ok(())
    }

    /// Removes the empty directory `relative`.
    pub fn remove_dir(&self, relative: &Path) -> Result<()> {
        let (parent, name) = self.parent_of(relative)?;
        rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)
            .with_context(|| format!("removing directory {}", self.shown(relative)))
    }

    /// The names in the directory `relative`, sorted; empty when it does not exist.
    pub fn list_dir(&self, relative: &Path) -> Result<Vec<std::ffi::OsString>> {
        let fd = match self.open_beneath(relative, OFlags::DIRECTORY | OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(resolve_error(e, &self.shown(relative))),
        };
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd).with_context(|| format!("listing {}", self.shown(relative)))? {
            let entry = entry.with_context(|| format!("listing {}", self.shown(relative)))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Whether the directory `relative` is empty (false when it is not a directory).
    pub fn is_empty_dir(&self, relative: &Path) -> Result<bool> {
        let Ok(fd) = self.open_beneath(relative, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW) else {
            return Ok(false);
        };
        let dir = rustix::fs::Dir::read_from(&fd).with_context(|| format!("listing {}", self.shown(relative)))?;
        for entry in dir {
            let entry = entry.with_context(|| format!("listing {}", self.shown(relative)))?;
            if entry.file_name().to_bytes() != b"." && entry.file_name().to_bytes() != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The handle itself, for callers that need to pass it on.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Refuses a directory that someone other than the user running sysctr (or root) could
    /// change under sysctr's feet: one owned by another user, or one that its group or everyone
    /// may write to without the sticky bit (which would let them rename or remove what sysctr
    /// puts there). For the directories of files sysctr writes but does not own the place of,
    /// such as the auth file `--authfile` names.
    pub fn refuse_if_others_can_write(&self) -> Result<()> {
        let stat = rustix::fs::fstat(&self.fd).with_context(|| format!("inspecting {}", self.path.display()))?;
        let us = rustix::process::geteuid().as_raw();
        if stat.st_uid != us && stat.st_uid != 0 {
            bail!(
                "refusing to write into {}: it is owned by uid {}, not by the user running sysctr (uid {us}) or root, \
                 so its owner could replace what sysctr writes there",
                self.path.display(),
                stat.st_uid
            );
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            let who = if mode & 0o002 != 0 { "everyone" } else { "its group" };
            bail!(
                "refusing to write into {}: {who} may write to it (mode {mode:04o}) and it has no sticky bit, \
                 so others could replace what sysctr writes there; remove that write permission or use another directory",
                self.path.display()
            );
        }
        Ok(())
    }

    /// The content of the regular file `relative`, at most `max` bytes; `None` when nothing is
    /// there. Anything else at that name (a symlink above all, which is never followed here, a
    /// FIFO, a directory) is an error, and nothing waits on it.
    pub fn read_regular_file(&self, relative: &Path, max: u64) -> Result<Option<Vec<u8>>> {
        self.read_regular(relative, max, OFlags::NOFOLLOW)
    }

    /// Opens `relative` without blocking (a FIFO never waits for a writer) and reads it if it is
    /// a regular file of at most `max` bytes; `None` when nothing is there.
    fn read_regular(&self, relative: &Path, max: u64, follow: OFlags) -> Result<Option<Vec<u8>>> {
        let fd = match self.open_beneath(relative, OFlags::RDONLY | OFlags::NONBLOCK | follow) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) if follow.contains(OFlags::NOFOLLOW) => {
                bail!("{} is a symlink, which is not followed here", self.shown(relative))
            }
            Err(e) => return Err(resolve_error(e, &self.shown(relative))),
        };
        let stat = rustix::fs::fstat(&fd).with_context(|| format!("inspecting {}", self.shown(relative)))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            bail!("{} is not a regular file", self.shown(relative));
        }
        self.read_bounded(fd, relative, max).map(Some)
    }
}

/// The normal components of a relative (or `/`-rooted) path; `..` is refused as a name.
fn components(path: &Path) -> Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => bail!("path {} must not contain '..'", path.display()),
        }
    }
    Ok(out)
}

/// Splits a path into its parent (relative) and a last component that is a plain name.
fn temporary_name(name: &OsStr, random: &str) -> Vec<u8> {
    [b".", name.as_bytes(), b".", random.as_bytes(), b".tmp"].concat()
}

/// Whether `candidate` is a name `with_temporary_name` gives a temporary of `name`.
fn is_temporary_name_of(candidate: &OsStr, name: &OsStr) -> bool {
    let candidate = candidate.as_bytes();
    let prefix = [b".", name.as_bytes(), b"."].concat();
    let Some(rest) = candidate.strip_prefix(prefix.as_slice()) else { return false };
    let Some(random) = rest.strip_suffix(b".tmp") else { return false };
    random.len() == 32 && random.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    let parts = components(path)?;
    let Some(name) = parts.last().copied() else { bail!("path '{}' names no file", path.display()) };
    let parent = path.parent().unwrap_or(Path::new(""));
    let parent = parent.strip_prefix("/").unwrap_or(parent);
    Ok((parent, name))
}

fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<Errno>() == Some(&Errno::NOENT)
            || cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    })
}

fn resolve_error(errno: Errno, shown: &str) -> anyhow::Error {
    match errno {
        Errno::XDEV => anyhow::anyhow!("{shown} resolves outside the directory it must stay in"),
        Errno::LOOP => anyhow::anyhow!("{shown} goes through a symlink, which is not followed here"),
        other => anyhow::Error::new(other).context(format!("resolving {shown}")),
    }
}

/// Creates a new regular file beside `name` in `parent`, named `.NAME.RANDOM.tmp`, exclusively
/// and without following anything, readable by no one beyond `mode` from its first byte. A name
/// that is taken (by anyone) is never reused, touched or removed: another is drawn.
fn create_temporary(parent: &OwnedFd, name: &OsStr, mode: u32) -> Result<(OwnedFd, std::ffi::OsString)> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    with_temporary_name(name, |temp_name| {
        rustix::fs::openat(parent, temp_name, flags, Mode::from_raw_mode(mode & 0o777))
    })
}

/// Runs `create` on fresh, unpredictable names beside `name` (`.NAME.<32 hex digits>.tmp`)
/// until one was free: whatever someone planted at a name is never opened, followed, truncated
/// or removed.
fn with_temporary_name<T>(
    name: &OsStr,
    mut create: impl FnMut(&OsStr) -> Result<T, Errno>,
) -> Result<(T, std::ffi::OsString)> {
    for _ in 0..16 {
        let temp_name = temporary_name(name, &uuid::Uuid::new_v4().simple().to_string());
        let temp_name = OsStr::from_bytes(&temp_name).to_os_string();
        match create(&temp_name) {
            Ok(created) => return Ok((created, temp_name)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    bail!("every temporary name tried was taken")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    /// A replace killed between writing its temporary and renaming it leaves the temporary; an
    /// undo removes it, and only such names.
    #[test]
    fn temporaries_left_by_an_interrupted_replace_are_removed_and_nothing_else() {
        let (_dir, root, _) = tree();
        let handle = RootedDir::open(&root, Resolve::InRoot).unwrap();
        let left = OsStr::from_bytes(&temporary_name(OsStr::new("x.conf"), &"0a".repeat(16))).to_os_string();
        let kept = [".x.conf.tmp", ".x.conf.0123.tmp", ".y.conf.0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a.tmp", "x.conf"];
        for name in kept.iter().map(OsStr::new).chain([left.as_os_str()]) {
            std::fs::write(root.join("etc").join(name), "").unwrap();
        }
        handle.remove_temporaries_of(Path::new("etc/x.conf")).unwrap();
        let mut expected: Vec<_> = kept.iter().map(std::ffi::OsString::from).collect();
        expected.sort();
        assert_eq!(handle.list_dir(Path::new("etc")).unwrap(), expected);
        handle.remove_temporaries_of(Path::new("nowhere/x.conf")).unwrap();
    }

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "precious").unwrap();
        (dir, root, outside)
    }

    #[test]
    fn nothing_is_written_through_a_planted_symlink() {
        let (_dir, root, outside) = tree();
        // Absolute and relative links to a directory outside, and a link to a file outside.
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("rel")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("file-link")).unwrap();
        let tree = RootedDir::open(&root, Resolve::NoSymlinks).unwrap();
        for through in ["abs/new", "rel/new", "abs/victim"] {
            assert!(tree.create_fifo(Path::new(through), 0o600, 0, 0).is_err(), "{through}");
            assert!(tree.create_file(Path::new(through), b"x", 0o644).is_err(), "{through}");
            assert!(tree.create_dir(Path::new(through), 0o755).is_err(), "{through}");
        }
        assert!(tree.create_file(Path::new("file-link"), b"x", 0o644).is_err());
        assert!(tree.replace_file(Path::new("file-link"), b"x", 0o644).is_ok(), "replacing the link itself is fine");
        assert!(tree.create_dir_all(Path::new("abs/a/b")).is_err());
        assert!(tree.create_file(Path::new("../outside/new"), b"x", 0o644).is_err());
        let names: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["victim"]);
        assert_eq!(std::fs::read_to_string(outside.join("victim")).unwrap(), "precious");
    }

    /// A FIFO or device where a file is read is refused at once, never waited on or read
    /// without end; a name planted where a symlink's temporary once was is left alone.
    #[test]
    fn reads_never_wait_and_replacing_a_symlink_leaves_planted_names_alone() {
        let (_dir, root, _) = tree();
        nix::unistd::mkfifo(&root.join("etc/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("etc/zero")).unwrap();
        let tree = RootedDir::open(&root, Resolve::InRoot).unwrap();
        let err = tree.read_file(Path::new("etc/fifo"), 10).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        assert!(tree.read_file_followed(Path::new("etc/fifo"), 10).is_err());
        // The root's /dev/zero, which it does not have; never this machine's.
        assert!(is_not_found(&tree.read_file_followed(Path::new("etc/zero"), 10).unwrap_err()));

        tree.symlink(Path::new("link"), Path::new("slot.0")).unwrap();
        std::fs::write(root.join(".link.new"), "someone's").unwrap();
        tree.replace_symlink(Path::new("link"), Path::new("slot.1")).unwrap();
        assert_eq!(std::fs::read_link(root.join("link")).unwrap(), Path::new("slot.1"));
        assert_eq!(std::fs::read_to_string(root.join(".link.new")).unwrap(), "someone's");
    }

    #[test]
    fn in_root_symlinks_resolve_inside_the_root() {
        let (_dir, root, outside) = tree();
        std::fs::create_dir(root.join("run")).unwrap();
        // As Debian's /var/run -> /run: absolute, meant for the root, not for this machine.
        std::fs::create_dir(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let target = RootedDir::open(&root, Resolve::InRoot).unwrap();
        target.create_file(Path::new("/var/run/x.pid"), b"1", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("run/x.pid")).unwrap(), "1");
        // A link naming this machine's path resolves inside the root, where it does not exist.
        assert!(target.create_file(Path::new("escape/new"), b"x", 0o644).is_err());
        assert!(!outside.join("new").exists());
        assert_eq!(
            target.create_dir_all(Path::new("var/run/sub/dir")).unwrap(),
            [PathBuf::from("var/run/sub"), PathBuf::from("var/run/sub/dir")]
        );
        assert!(root.join("run/sub/dir").is_dir());
    }

    #[test]
    fn modes_owners_and_kinds_are_exact() {
        let (_dir, root, _) = tree();
        let tree = RootedDir::open(&root, Resolve::NoSymlinks).unwrap();
        let (uid, gid) = crate::test_owner::another();
        tree.create_fifo(Path::new("etc/fifo"), 0o4640, uid, gid).unwrap();
        let meta = std::fs::symlink_metadata(root.join("etc/fifo")).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o4640, uid, gid));
        tree.create_dir(Path::new("tmp"), 0o1777).unwrap();
        assert_eq!(std::fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
        tree.replace_file(Path::new("etc/conf"), b"one", 0o600).unwrap();
        tree.replace_file(Path::new("etc/conf"), b"two", 0o640).unwrap();
        assert_eq!(tree.read_file(Path::new("etc/conf"), 10).unwrap(), b"two");
        assert!(tree.read_file(Path::new("etc/conf"), 2).is_err());
        tree.symlink(Path::new("link"), Path::new("/does/not/exist")).unwrap();
        assert_eq!(tree.kind(Path::new("link")).unwrap(), Some(EntryKind::Symlink));
        assert_eq!(tree.read_link(Path::new("link")).unwrap(), Path::new("/does/not/exist"));
        assert_eq!(tree.kind(Path::new("etc")).unwrap(), Some(EntryKind::Dir));
        assert_eq!(tree.kind(Path::new("nothing/here")).unwrap(), None);
        assert!(!tree.is_empty_dir(Path::new("etc")).unwrap());
        assert!(tree.is_empty_dir(Path::new("tmp")).unwrap());
        tree.remove_dir(Path::new("tmp")).unwrap();
        tree.remove_file(Path::new("link")).unwrap();
        assert_eq!(tree.kind(Path::new("link")).unwrap(), None);
    }
}
