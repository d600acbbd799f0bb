//! The only orchestrator: registry → store → spec/template → files under the host root →
//! systemd. Owns the deployment slots, the undo journal and the on-disk records.
//!
//! On-disk layout (`STORAGE` defaults to `/var/lib/sysctr`):
//! - `STORAGE/repo`: the OSTree store (see [`crate::store`]);
//! - `STORAGE/deployments/NAME.0`, `NAME.1`: slots, each with `rootfs/` (read-only checkout),
//!   `config.json`, `info` (JSON, [`Deployment`]) and copies of the rendered unit and tmpfiles;
//! - `STORAGE/deployments/NAME -> NAME.N`: the active slot, switched by rename(2) only;
//! - `/etc/systemd/system/NAME.service` (+ `NAME.service.d/sysctr.conf`), `/etc/tmpfiles.d/NAME.conf`.

mod activate;
mod apply;
mod adhoc;
mod exports;
mod hostfs;
mod images;
mod install;
mod journal;
mod layout;
mod listing;
mod pull;
mod recovery;
mod slot;
mod uninstall;
mod update;

pub use adhoc::{mount_readonly, run_once, unmount, MountSource, RunRequest};
pub use apply::{apply, Action};
pub use images::{info, prune, rmi, ImageInfo, PruneReport};
pub use install::{install, InstallReport, InstallRequest};
pub use layout::{Deployment, InstalledFile, Layout, DEFAULT_STORAGE};
pub use listing::{images, list, ContainerRow, ImageRow};
pub use pull::{pull, Pulled};
pub use recovery::recover;
pub use uninstall::{uninstall, UninstallReport};
pub use update::{rollback, update, SwitchReport, UpdateRequest};
