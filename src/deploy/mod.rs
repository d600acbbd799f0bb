//! The only orchestrator: registry → store → spec/template → files under the host root →
//! systemd. Owns the deployment slots, the transaction journal and the on-disk records.
//!
//! On-disk layout (`STORAGE` defaults to `ROOT/var/lib/sysctr`):
//! - `STORAGE/repo`: the OSTree store (see [`crate::store`]);
//! - `STORAGE/deployments/NAME.0`, `NAME.1`: slots, each with `rootfs/` (read-only checkout),
//!   `config.json`, `info` (JSON, [`Deployment`]), the rendered unit, drop-in, tmpfiles.d file
//!   and host files (see `slot`);
//! - `STORAGE/deployments/NAME -> NAME.N`: the active slot, switched by rename(2) only;
//! - `STORAGE/.transaction/`: the journal of a command under way (see `journal`);
//! - `ROOT/etc/systemd/system/NAME.service` (+ `NAME.service.d/sysctr.conf`),
//!   `ROOT/etc/tmpfiles.d/NAME.conf`, and the host files from the image's `hostfs`.
//!
//! Where things happen: `pull` (registry → store), `slot` (build and render a slot),
//! `activate` (make a slot the live one), `install`, `update` (and rollback), `uninstall`,
//! `recovery` (lock, then undo or finish an interrupted command), `apply` (converge to a file),
//! `images` (info, rmi, prune), `listing` (list, images), `adhoc` (mount, umount), `run` (run
//! once, also what `install` does with an image labelled `atomic.run=once`).

mod activate;
mod adhoc;
mod apply;
mod exports;
mod hostfs;
mod images;
mod install;
mod journal;
mod layout;
mod listing;
mod pull;
mod recovery;
mod run;
mod slot;
mod uninstall;
mod update;

pub use adhoc::{mount_readonly, unmount, MountSource};
pub use apply::{apply, plan, Action, Change, PlannedStep};
pub use images::{info, prune, rmi, ImageInfo, PruneReport};
pub use install::{install, InstallOutcome, InstallReport, InstallRequest};
pub use layout::{Deployment, InstalledFile, Layout, DEFAULT_STORAGE};
pub use listing::{images, list, status, ContainerRow, ContainerStatus, ImageRow, SlotStatus};
pub use pull::{first_available, pull, Pulled};
pub use recovery::{pending, recover, PendingTransaction};
pub use run::{run_once, RunRequest};
pub use slot::fit_capabilities;
pub use uninstall::{uninstall, UninstallReport};
pub use update::{check_update, rollback, update, SwitchReport, UpdateCheck, UpdateRequest};
#[cfg(test)]
mod tests;
#[cfg(feature = "fuzzing")]
pub(crate) use {
    exports::ExportsManifest,
    hostfs::{plan as plan_host_files, PlannedContent},
};
