//! Where everything lives on a host, and the record kept in each deployment slot.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::rooted::{Resolve, RootedDir};

pub const DEFAULT_STORAGE: &str = "/var/lib/sysctr";
/// Where an OS image keeps the store and the deployments it provides, relative to its root:
/// under `/usr`, replaced as a whole with the image, read-only at run time.
pub const IMAGE_STORAGE: &str = "usr/lib/sysctr";
/// Where sysctr puts units on a host, relative to its root: the administrator's directory.
const UNIT_DIR: &str = "etc/systemd/system";
/// Where sysctr puts tmpfiles.d files on a host, relative to its root.
const TMPFILES_DIR: &str = "etc/tmpfiles.d";
/// Where the units of the containers an OS image provides go: vendor units, which the
/// administrator overrides in `/etc` as any other.
const IMAGE_UNIT_DIR: &str = "usr/lib/systemd/system";
const IMAGE_TMPFILES_DIR: &str = "usr/lib/tmpfiles.d";
/// The files of a deployment slot, beside `rootfs/`, `config.json` and `info`: the rendered unit,
/// sysctr's drop-in, the tmpfiles.d file and the host files as rendered for that slot.
pub(in crate::deploy) const UNIT_FILE: &str = "unit.service";
/// The socket unit, for a container started by its first connection (`deployment::socket`).
pub(in crate::deploy) const SOCKET_FILE: &str = "unit.socket";
pub(in crate::deploy) const DROPIN_FILE: &str = "sysctr.conf";
/// What the supervisor of the unit reads (`supervise::plan`).
pub(in crate::deploy) const READINESS_FILE: &str = "readiness.json";
pub(in crate::deploy) const TMPFILES_FILE: &str = "tmpfiles.conf";
pub(in crate::deploy) const HOSTFS_DIR: &str = "hostfs";
/// An empty file, bind-mounted in place of a shared host file the host lacks (`spec::fit_host_files`).
pub(in crate::deploy) const ABSENT_HOST_FILE: &str = "absent-host-file";
const INFO_FILE: &str = "info";

/// Where a container comes from: the host's own storage, or the OS image (`/usr/lib/sysctr`),
/// which only a new OS image changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Host,
    Image,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Host => "host",
            Origin::Image => "image",
        }
    }
}

/// Paths of the store, the deployments and the files sysctr writes on the host.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The host's root directory (`/` on a running host).
    pub root: PathBuf,
    /// The storage directory (the store and the deployments), already inside `root`.
    pub storage: PathBuf,
    /// What changes at run time: the lock, the journal, interrupted commands, mounts. The
    /// storage itself, except when composing an OS image, whose storage is under `/usr`.
    pub state: PathBuf,
    /// Composing the containers an OS image provides (`--os-image`): storage under
    /// `/usr/lib/sysctr`, vendor units and tmpfiles.d files.
    pub os_image: bool,
    /// The store of the OS image this host runs, read only (`ROOT/usr/lib/sysctr`); none when
    /// composing that store itself.
    image_storage: Option<PathBuf>,
}

impl Layout {
    /// A host's storage: `storage` for its own containers, beside those its OS image provides.
    pub fn new(root: &Path, storage: &Path) -> Layout {
        Layout::with_image_storage(root, storage, &root.join(IMAGE_STORAGE))
    }

    /// [`Layout::new`], the OS image's store found at `image_storage` (already inside `root`).
    pub fn with_image_storage(root: &Path, storage: &Path, image_storage: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            storage: storage.to_path_buf(),
            state: storage.to_path_buf(),
            os_image: false,
            image_storage: Some(image_storage.to_path_buf()),
        }
    }

    /// The layout of an OS image being composed at `root`: the store and deployments at
    /// `storage` (its `usr/lib/sysctr`), the lock and journal at `state` (its `var/lib/sysctr`).
    pub fn os_image(root: &Path, storage: &Path, state: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            storage: storage.to_path_buf(),
            state: state.to_path_buf(),
            os_image: true,
            image_storage: None,
        }
    }

    /// The OS image's own store as seen from this host (read only), if it provides containers.
    pub(in crate::deploy) fn image_layout(&self) -> Option<Layout> {
        let storage = self.image_storage.as_ref().filter(|s| s.join("deployments").is_dir())?;
        Some(Layout::os_image(&self.root, storage, storage))
    }

    /// Where the containers installed here come from.
    pub(in crate::deploy) fn origin(&self) -> Origin {
        if self.os_image {
            Origin::Image
        } else {
            Origin::Host
        }
    }

    /// The OS image's record of `name`, when the image provides a container of that name and
    /// the host has none of its own.
    pub(in crate::deploy) fn image_provided(&self, name: &str) -> Option<Deployment> {
        if std::fs::symlink_metadata(self.link(name)).is_ok() {
            return None;
        }
        self.image_layout()?.read_info(name).ok()
    }

    /// Names of the containers the OS image provides that the host has none of its own of, sorted.
    pub fn image_provided_names(&self) -> Result<Vec<String>> {
        let Some(image) = self.image_layout() else { return Ok(Vec::new()) };
        let own = self.installed_names()?;
        Ok(image.installed_names()?.into_iter().filter(|name| !own.contains(name)).collect())
    }

    /// Refuses to change `name` when the OS image provides it: it changes with the OS image.
    pub(in crate::deploy) fn refuse_image_owned(&self, name: &str, what: &str) -> Result<()> {
        if self.image_provided(name).is_some() {
            anyhow::bail!("{}", image_owned_message(name, what));
        }
        Ok(())
    }

    /// Where units go, relative to the root.
    pub fn unit_dir(&self) -> &'static str {
        if self.os_image {
            IMAGE_UNIT_DIR
        } else {
            UNIT_DIR
        }
    }

    /// Where tmpfiles.d files go, relative to the root.
    pub fn tmpfiles_dir(&self) -> &'static str {
        if self.os_image {
            IMAGE_TMPFILES_DIR
        } else {
            TMPFILES_DIR
        }
    }

    pub fn repo(&self) -> PathBuf {
        self.storage.join("repo")
    }

    /// Where the transaction of a running (or interrupted) command is kept.
    pub fn transaction_dir(&self) -> PathBuf {
        self.state.join(".transaction")
    }

    pub fn deployments(&self) -> PathBuf {
        self.storage.join("deployments")
    }

    /// `deployments/NAME`: the symlink to the active slot.
    pub fn link(&self, name: &str) -> PathBuf {
        self.deployments().join(name)
    }

    /// `deployments/NAME.N`: a slot, N in {0, 1}.
    pub fn slot(&self, name: &str, slot: u8) -> PathBuf {
        self.deployments().join(format!("{name}.{slot}"))
    }

    /// The slot directory of a deployment.
    pub fn slot_dir(&self, deployment: &Deployment) -> PathBuf {
        self.slot(&deployment.name, deployment.slot)
    }

    pub fn unit_name(name: &str) -> String {
        format!("{name}.service")
    }

    /// The socket unit of a socket-activated container, in `UNIT_DIR`.
    pub fn socket_name(name: &str) -> String {
        format!("{name}.socket")
    }

    /// The drop-in directory sysctr adds its own unit settings to, in `UNIT_DIR`.
    pub fn dropin_dir_name(name: &str) -> String {
        format!("{}.d", Self::unit_name(name))
    }

    /// The tmpfiles.d file of a container, in `TMPFILES_DIR`.
    pub fn tmpfiles_name(name: &str) -> String {
        format!("{name}.conf")
    }

    /// A path under the root as the host sees it (`ROOT/var/x` is `/var/x`); a path outside the
    /// root is kept as it is.
    pub fn as_host_sees(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.root) {
            Ok(rest) => Path::new("/").join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The host's root as a handle: every host path is resolved beneath it, symlinks as the
    /// host (or the OS image in `--root`) would see them, never on the machine running sysctr.
    /// The one way to the host's files, on a booted host as in an offline root.
    pub fn host_dir(&self) -> Result<RootedDir> {
        RootedDir::open(&self.root, Resolve::InRoot)
    }

    /// A directory of the host that sysctr puts its own files in (`unit_dir`, `tmpfiles_dir`),
    /// reached as the host sees it; `None` if it does not exist. Nothing beneath the handle is
    /// followed: every name sysctr touches there is one it writes itself, so a symlink in its
    /// place (planted by an image's host files, say) is refused rather than written through.
    pub fn host_subdir(&self, dir: &str) -> Result<Option<RootedDir>> {
        self.host_dir()?.open_dir(Path::new(dir), Resolve::NoSymlinks)
    }

    /// Creates the storage directory, or makes an existing one, 0700 and owned by the user
    /// running sysctr (its effective uid and gid: root's, as sysctr is normally run): it holds
    /// images' setuid files and file capabilities, which no other user may reach (whatever
    /// `--storage` names, and before systemd-tmpfiles has ever run). A storage owned by another
    /// user is taken over when sysctr runs as root, and refused otherwise.
    fn create_private_storage(&self) -> Result<()> {
        create_private_dir(&self.storage)?;
        if self.state != self.storage {
            create_private_dir(&self.state)?;
        }
        Ok(())
    }

    /// Takes the storage-wide lock that every mutating command holds while it runs. A command
    /// that finds it held says so once and waits, trying again every 100 ms, for at most
    /// `SYSCTR_LOCK_TIMEOUT` (seconds, or a duration such as `30m`; 10 minutes by default).
    pub fn lock(&self) -> Result<Flock<File>> {
        /// How long a command waits for another one to finish when `SYSCTR_LOCK_TIMEOUT` is unset.
        const DEFAULT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
        const LOCK_TIMEOUT_VAR: &str = "SYSCTR_LOCK_TIMEOUT";
        const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

        fn lock_timeout() -> Result<std::time::Duration> {
            let Some(value) = std::env::var_os(LOCK_TIMEOUT_VAR) else { return Ok(DEFAULT_LOCK_TIMEOUT) };
            let value = value.to_string_lossy();
            match value.trim().parse::<u64>() {
                Ok(seconds) => Ok(std::time::Duration::from_secs(seconds)),
                Err(_) => humantime::parse_duration(value.trim()).with_context(|| {
                    format!("{LOCK_TIMEOUT_VAR}={value}: expected a number of seconds or a duration such as 30m")
                }),
            }
        }

        // The storage is laid out at its first use, so that installs and uninstalls never leave
        // a directory behind that was not there before.
        self.create_private_storage()?;
        let deployments = self.deployments();
        std::fs::create_dir_all(&deployments).with_context(|| format!("creating {}", deployments.display()))?;
        let path = self.state.join("lock");
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut waiting: Option<(std::time::Instant, std::time::Duration)> = None;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((returned, nix::errno::Errno::EWOULDBLOCK)) => file = returned,
                Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
            let (since, timeout) = match waiting {
                Some(started) => started,
                None => {
                    let timeout = lock_timeout()?;
                    eprintln!("waiting for another sysctr command to finish (lock {})", path.display());
                    *waiting.insert((std::time::Instant::now(), timeout))
                }
            };
            if since.elapsed() >= timeout {
                anyhow::bail!(
                    "another sysctr command still holds the lock {} after {} ({LOCK_TIMEOUT_VAR} sets how long to wait)",
                    path.display(),
                    humantime::format_duration(timeout)
                );
            }
            std::thread::sleep(RETRY_EVERY.min(timeout.saturating_sub(since.elapsed())));
        }
    }

    /// Names of installed containers, sorted.
    pub fn installed_names(&self) -> Result<Vec<String>> {
        let dir = self.deployments();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            if entry.file_type()?.is_symlink() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The active slot's record of an installed container.
    pub fn read_info(&self, name: &str) -> Result<Deployment> {
        let path = self.link(name).join(INFO_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("'{name}' is not installed"))?;
        let record: Deployment = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        record.check(name, None, &path)?;
        Ok(record)
    }

    /// The record of a given slot, active or not.
    pub fn read_slot_info(&self, name: &str, slot: u8) -> Result<Deployment> {
        let path = self.slot(name, slot).join(INFO_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let record: Deployment = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        record.check(name, Some(slot), &path)?;
        Ok(record)
    }
}

/// Creates `storage`, or makes it, 0700 and owned by the user running sysctr (see
/// `Layout::create_private_storage`).
fn create_private_dir(storage: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = storage.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(storage) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating the storage {}", storage.display())),
    }
    let meta = std::fs::metadata(storage).with_context(|| format!("inspecting {}", storage.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("the storage {} is not a directory", storage.display());
    }
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    if meta.uid() != uid.as_raw() && !uid.is_root() {
        anyhow::bail!(
            "the storage {} belongs to uid {}, not to the user running sysctr (uid {uid}); \
                 run sysctr as that user or as root, or name another --storage",
            storage.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 || meta.uid() != uid.as_raw() {
        nix::unistd::chown(storage, Some(uid), Some(gid))
            .with_context(|| format!("making {} owned by uid {uid}", storage.display()))?;
        std::fs::set_permissions(storage, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", storage.display()))?;
    }
    Ok(())
}

/// The one-line refusal of a change to a container the OS image provides.
pub(in crate::deploy) fn image_owned_message(name: &str, what: &str) -> String {
    format!(
        "cannot {what} '{name}': the OS image owns it (/{IMAGE_STORAGE}); it changes with the OS image, \
         not by sysctr on this host"
    )
}

/// A host file installed from the image's `exports/hostfs`, with the checksum it was written with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstalledFile {
    pub path: String,
    pub sha256: String,
}

/// The `info` record of a deployment slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub name: String,
    pub image: String,
    /// The image config's digest, as container tools show it.
    pub image_id: String,
    pub manifest_digest: String,
    pub ostree_commit: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Only what the user set with `--set`; defaults are recomputed from the image on update.
    pub values: BTreeMap<String, String>,
    pub uuid: String,
    pub runtime: String,
    pub slot: u8,
    /// False for images with `noContainerService`: host files only.
    pub has_service: bool,
    pub installed_files: Vec<InstalledFile>,
    /// Directories created on the host for installed files, deepest first.
    pub created_dirs: Vec<String>,
    /// Set when the unit shadows one of the system's packages (`--replace-vendor-unit`):
    /// whether that unit was enabled before, so that uninstall leaves it as it found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadowed_vendor_unit_enabled: Option<bool>,
    /// Whether `update --all` updates it (`install --no-auto-update` says no).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub auto_update: bool,
    /// Legacy shapes of the image's `config.json` that were rewritten for this host's runc.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_rewrites: Vec<crate::spec::Rewrite>,
    /// The addresses given at install (`--listen`), kept by `update` as the values are.
    #[serde(default, skip_serializing_if = "crate::deploy::Listen::is_empty")]
    pub listen: crate::deploy::Listen,
    /// Whether the slot has a socket unit (`NAME.socket`): then the socket is enabled and
    /// started, and the service only by the first connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_socket: bool,
    /// What the user set about readiness at install (or in the apply file), kept by `update`.
    #[serde(default, skip_serializing_if = "crate::deploy::ReadySettings::is_empty")]
    pub ready_settings: crate::deploy::ReadySettings,
    /// When the unit counts as ready; `None` when the image's own unit decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<crate::supervise::plan::Readiness>,
    /// The last update away from this deployment that failed and was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_update: Option<FailedUpdate>,
}

/// An update that failed and was rolled back, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedUpdate {
    /// When it was rolled back (RFC 3339).
    pub at: String,
    /// The image it tried.
    pub image: String,
    /// Why, as the update said it.
    pub reason: String,
}

impl Deployment {
    /// The unit enabled for it: its socket for a socket-activated container (the first
    /// connection starts the service), its service otherwise; none for host files only.
    pub(in crate::deploy) fn enabled_unit(&self) -> Option<String> {
        if self.has_socket {
            Some(Layout::socket_name(&self.name))
        } else if self.has_service {
            Some(Layout::unit_name(&self.name))
        } else {
            None
        }
    }

    /// A record read back from disk must describe the container and slot it was found for:
    /// anything else (a slot 7, another name) is refused, never used to compute a path.
    fn check(&self, name: &str, slot: Option<u8>, path: &Path) -> Result<()> {
        if self.slot > 1 {
            anyhow::bail!("{}: slot {} is not 0 or 1; the record is damaged", path.display(), self.slot);
        }
        if slot.is_some_and(|s| s != self.slot) || self.name != name {
            anyhow::bail!(
                "{}: the record is of {} slot {}, not of {name}; it is damaged",
                path.display(),
                self.name,
                self.slot
            );
        }
        for file in &self.installed_files {
            if !file.path.starts_with('/') || file.path.split('/').any(|c| c == "..") {
                anyhow::bail!("{}: recorded host file '{}' is not a normal absolute path", path.display(), file.path);
            }
        }
        Ok(())
    }

    /// Writes the record into its slot durably (temporary file, fsync, rename, directory fsync).
    pub fn write(&self, slot_dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("serializing the deployment record")?;
        RootedDir::open(slot_dir, Resolve::NoSymlinks)?.replace_file(Path::new(INFO_FILE), text.as_bytes(), 0o644)
    }
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_true(value: &bool) -> bool {
    *value
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn the_storage_is_made_private_and_ours() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("var/lib/sysctr");
        std::fs::create_dir_all(&storage).unwrap();
        std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o755)).unwrap();
        let layout = Layout::new(dir.path(), &storage);
        drop(layout.lock().unwrap());
        let meta = std::fs::metadata(&storage).unwrap();
        let (uid, gid) = crate::test_owner::ours();
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o700, uid, gid));
    }
}
