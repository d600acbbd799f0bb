//! The only orchestrator: registry → store → spec/template → files under the host root →
//! systemd. Owns the deployment slots, the transaction journal and the on-disk records.
//!
//! On-disk layout (`STORAGE` defaults to `ROOT/var/lib/sysctr`):
//! - `STORAGE/repo`: the OSTree store (see [`crate::store`]);
//! - `STORAGE/deployments/NAME.0`, `NAME.1`: slots, each with `rootfs/` (read-only checkout),
//!   `config.json`, `info` (JSON, [`Deployment`]), the rendered unit, drop-in, tmpfiles.d file
//!   and host files;
//! - `STORAGE/deployments/NAME -> NAME.N`: the active slot, switched by rename(2) only;
//! - `STORAGE/.transaction/`: the journal of a command under way (see `journal`);
//! - `ROOT/etc/systemd/system/NAME.service` (+ `NAME.service.d/sysctr.conf`, and `NAME.socket`
//!   for a socket-activated container),
//!   `ROOT/etc/tmpfiles.d/NAME.conf`, and the host files from the image's `hostfs`.
//!
//! The containers an OS image provides (`--os-image`) have their storage at `ROOT/usr/lib/sysctr`
//! (read-only once the image runs), vendor units in `ROOT/usr/lib/systemd/system` and tmpfiles.d
//! files in `ROOT/usr/lib/tmpfiles.d`; the lock and the journal stay under `ROOT/var/lib/sysctr`.
//! A booted host lists them beside its own and refuses to change them; each start fits their
//! config into a bundle under `/run/sysctr/NAME` (`deployment::bundle`).
//!
//! Four layers, each calling only the ones below it:
//! - `verbs`: what the CLI asks for. `install`, `update` (and rollback), `uninstall`, `apply`
//!   (converge to a file, through the other verbs), `run` (once, also what `install` does with
//!   an image labelled `atomic.run=once`), `listing` (list, status, images), `images` (info,
//!   rmi, prune), `adhoc` (mount, umount), `pull` (registry → store), and `recovery` (the lock
//!   every mutating verb takes first, then undo or finish an interrupted command).
//! - `deployment`: one container's deployment. `slot` (build and render a slot, before the host
//!   is touched), `exports` (the image's templates), `hostfs` (its host files), `socket` (its
//!   socket unit, for socket activation), `activate` (make a slot the live one), `teardown`
//!   (take a container off the host).
//! - `host`: where everything lives. `layout` (paths, the host's root handle, records, the
//!   lock) and `facts` (the runtime, the names a container would mask, ids and capabilities).
//! - `journal`: the transaction log every change above is recorded in before it is made.

mod deployment;
mod host;
mod journal;
mod verbs;

pub use deployment::readiness::{HealthCommand, ReadySettings};
pub use deployment::slot::{fit_to_host, HostFit};
pub use deployment::socket::Listen;
pub use host::layout::{Deployment, FailedUpdate, InstalledFile, Layout, Origin, DEFAULT_STORAGE, IMAGE_STORAGE};
pub use host::reproducible::clamp_image_times;
pub use verbs::adhoc::{mount_readonly, unmount, MountSource};
pub use verbs::apply::{apply, plan, Action, ApplyOptions, Change, PlannedStep, Preview};
pub use verbs::images::{info, prune, rmi, ImageInfo, PruneReport};
pub use verbs::install::{install, InstallOutcome, InstallReport, InstallRequest};
pub use verbs::listing::{images, list, status, ContainerRow, ContainerStatus, ImageRow, SlotStatus};
pub use verbs::pull::{available_digest, first_available, pull, share_with_the_os_image, Pulled};
pub use verbs::recovery::{pending, recover, PendingTransaction};
pub use verbs::run::{run_once, RunRequest};
pub use verbs::uninstall::{uninstall, UninstallReport};
pub use verbs::update::{check_update, rollback, update, SourceDigests, SwitchReport, UpdateCheck, UpdateRequest};
#[cfg(test)]
mod tests;
#[cfg(feature = "fuzzing")]
pub(crate) use deployment::{
    exports::ExportsManifest,
    hostfs::{plan as plan_host_files, PlannedContent},
};
