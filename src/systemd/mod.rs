//! The one seam between sysctr and systemd: what `deploy` needs from it, as a trait with one
//! implementation per kind of host. The CLI picks the implementation once:
//! - [`Bus`]: a running host, over D-Bus (reload, enable/disable, start/stop waiting for the
//!   job's result). No `systemctl` subprocess anywhere.
//! - [`Offline`]: an OS image tree (`--root`): units are enabled by their `[Install]` symlinks,
//!   as `systemctl --root` does, and nothing runs.
//! - `fake::Fake` (unit tests, and the tests in `tests/` with the cargo feature `test-support`):
//!   in memory, to test install, update, rollback, uninstall and recovery without a host.
//!
//! Changes a manager makes to files go through a [`ChangeLog`] first, so that `deploy`'s
//! transaction journal can undo them.

mod bus;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
mod offline;
mod ordering;

use std::future::Future;
use std::path::Path;

use anyhow::Result;

pub use bus::Bus;
pub use offline::{check_install_links, check_unit_name, install_links, Offline};
pub use ordering::{check_dependencies, check_dependencies_of_set, MissingUnit};

/// Where systemd loads system units from, relative to the root, in its order of precedence. The
/// first, `/etc/systemd/system`, is the administrator's, where sysctr installs units; a unit
/// there masks one of the same name in the others.
pub const UNIT_DIRS: [&str; 5] = [
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// The unit directories other than `/etc/systemd/system`: the runtime's, the local
/// administrator's and the system's packages'.
pub fn units_elsewhere() -> &'static [&'static str] {
    &UNIT_DIRS[1..]
}

/// A unit's ActiveState, as systemd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    /// Anything else systemd may report (`maintenance`, `refreshing`, ...).
    Other,
}

impl UnitState {
    pub fn from_active_state(state: &str) -> UnitState {
        match state {
            "active" => UnitState::Active,
            "reloading" => UnitState::Reloading,
            "inactive" => UnitState::Inactive,
            "failed" => UnitState::Failed,
            "activating" => UnitState::Activating,
            "deactivating" => UnitState::Deactivating,
            _ => UnitState::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Active => "active",
            UnitState::Reloading => "reloading",
            UnitState::Inactive => "inactive",
            UnitState::Failed => "failed",
            UnitState::Activating => "activating",
            UnitState::Deactivating => "deactivating",
            UnitState::Other => "other",
        }
    }
}

/// What to do with a tmpfiles.d file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tmpfiles {
    Create,
    Remove,
}

/// Where a manager records a change before it makes it (the transaction journal).
pub trait ChangeLog: Send {
    /// A file or symlink at `path` is about to be written or removed.
    fn saving(&mut self, path: &Path) -> Result<()>;
    /// The directory `path` is about to be created.
    fn creating_dir(&mut self, path: &Path) -> Result<()>;
    /// `unit` is about to be enabled through the bus (undone by disabling it).
    fn enabling(&mut self, unit: &str) -> Result<()>;
    /// `unit` is about to be disabled through the bus (undone by enabling it).
    fn disabling(&mut self, unit: &str) -> Result<()>;
}

/// What sysctr installs into. Decided once, with the manager, and asked by everything that
/// depends on it: whether units can start, and which facts of the host a container is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A booted host whose system manager runs the units.
    Booted,
    /// A root on disk, such as an OS image being composed: nothing runs there.
    Offline,
}

impl Target {
    pub fn runs_units(self) -> bool {
        self == Target::Booted
    }
}

/// What `deploy` needs from systemd.
pub trait ServiceManager: Sync {
    /// What this manager's host is.
    fn target(&self) -> Target;
    fn reload(&self) -> impl Future<Output = Result<()>> + Send;
    /// Enables `unit` (its unit file is in place), recording each change in `changes` first.
    fn enable(&self, unit: &str, changes: &mut dyn ChangeLog) -> impl Future<Output = Result<()>> + Send;
    /// Disables `unit`; `changes` is `None` where nothing will be undone (an uninstall).
    fn disable(&self, unit: &str, changes: Option<&mut dyn ChangeLog>) -> impl Future<Output = Result<()>> + Send;
    /// Starts `unit` and waits for the job's result.
    fn start(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// Asks for `unit` to be started and returns once the job is queued, not when it ends.
    fn queue_start(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stops `unit` and waits for the job's result.
    fn stop(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// After a start: fails unless `unit` is still active a moment later.
    fn ensure_stays_active(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// The unit's state; `Inactive` for a unit systemd has not loaded.
    fn state(&self, unit: &str) -> impl Future<Output = Result<UnitState>> + Send;
    /// The units that require `unit`: stopping it stops them.
    fn required_by(&self, unit: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Whether the unit file `unit` is enabled.
    fn is_enabled(&self, unit: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Applies or removes a tmpfiles.d file where units run; nothing elsewhere.
    fn tmpfiles(&self, action: Tmpfiles, file: &Path) -> Result<()>;
}

/// The manager of the host sysctr works on, chosen once by the CLI.
#[derive(Debug)]
pub enum HostManager {
    Bus(Bus),
    Offline(Offline),
}

/// Calls the same method on whichever manager it is.
macro_rules! delegate {
    ($self:ident, $m:ident ( $($arg:expr),* )) => {
        match $self {
            HostManager::Bus(bus) => bus.$m($($arg),*),
            HostManager::Offline(offline) => offline.$m($($arg),*),
        }
    };
}

impl ServiceManager for HostManager {
    fn target(&self) -> Target {
        delegate!(self, target())
    }
    async fn reload(&self) -> Result<()> {
        match self {
            HostManager::Bus(bus) => bus.reload().await,
            HostManager::Offline(offline) => offline.reload().await,
        }
    }
    async fn enable(&self, unit: &str, changes: &mut dyn ChangeLog) -> Result<()> {
        match self {
            HostManager::Bus(bus) => bus.enable(unit, changes).await,
            HostManager::Offline(offline) => offline.enable(unit, changes).await,
        }
    }
    async fn disable(&self, unit: &str, changes: Option<&mut dyn ChangeLog>) -> Result<()> {
        match self {
            HostManager::Bus(bus) => bus.disable(unit, changes).await,
            HostManager::Offline(offline) => offline.disable(unit, changes).await,
        }
    }
    async fn start(&self, unit: &str) -> Result<()> {
        match self {
            HostManager::Bus(bus) => bus.start(unit).await,
            HostManager::Offline(offline) => offline.start(unit).await,
        }
    }
    async fn queue_start(&self, unit: &str) -> Result<()> {
        match self {
            HostManager::Bus(bus) => bus.queue_start(unit).await,
            HostManager::Offline(offline) => offline.queue_start(unit).await,
        }
    }
    async fn stop(&self, unit: &str) -> Result<()> {
        match self {
            HostManager::Bus(bus) => bus.stop(unit).await,
            HostManager::Offline(offline) => offline.stop(unit).await,
        }
    }
    async fn ensure_stays_active(&self, unit: &str) -> Result<()> {
        match self {
            HostManager::Bus(bus) => bus.ensure_stays_active(unit).await,
            HostManager::Offline(offline) => offline.ensure_stays_active(unit).await,
        }
    }
    async fn state(&self, unit: &str) -> Result<UnitState> {
        match self {
            HostManager::Bus(bus) => bus.state(unit).await,
            HostManager::Offline(offline) => offline.state(unit).await,
        }
    }
    async fn required_by(&self, unit: &str) -> Result<Vec<String>> {
        match self {
            HostManager::Bus(bus) => bus.required_by(unit).await,
            HostManager::Offline(offline) => offline.required_by(unit).await,
        }
    }
    async fn is_enabled(&self, unit: &str) -> Result<bool> {
        match self {
            HostManager::Bus(bus) => bus.is_enabled(unit).await,
            HostManager::Offline(offline) => offline.is_enabled(unit).await,
        }
    }
    fn tmpfiles(&self, action: Tmpfiles, file: &Path) -> Result<()> {
        delegate!(self, tmpfiles(action, file))
    }
}
